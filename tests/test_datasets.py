"""Users' data: each format read from small files, each bad input one clear line, the few-shot split."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from hilas.evaluators import LabelledImages, few_shot_split, load_idx, load_image_folder, load_npz, normalized


def image_folder(root, sizes: dict[str, int], shape=(8, 8), mode="L"):
    rng = np.random.default_rng(0)
    for name, count in sizes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=shape if mode == "L" else (*shape, 3), dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i:03d}.png")
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def test_image_folder_labels_follow_sorted_class_folders(tmp_path):
    root = image_folder(tmp_path / "images", {"cat": 3, "ant": 2})
    (root / "ant" / "notes.txt").write_text("not an image: ignored")
    data = load_image_folder(root, (1, 8, 8))
    assert data.classes == ("ant", "cat") and data.y.tolist() == [0, 0, 1, 1, 1]
    assert data.x.shape == (5, 1, 8, 8) and data.x.dtype == np.float32 and 0 <= data.x.min() <= data.x.max() <= 1
    expected = np.asarray(Image.open(root / "cat" / "000.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(data.x[2, 0], expected)


def test_image_folder_reads_rgb_for_three_channels(tmp_path):
    root = image_folder(tmp_path / "images", {"a": 1, "b": 1}, mode="RGB")
    data = load_image_folder(root, (3, 8, 8))
    expected = np.asarray(Image.open(root / "a" / "000.png"), dtype=np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(data.x[0], expected)


def test_npz_with_uint8_or_float_images(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "u8.npz", x=x, y=y)
    np.savez(tmp_path / "f32.npz", x=(x / 255.0).astype(np.float32)[:, None], y=y)
    a, b = load_npz(tmp_path / "u8.npz"), load_npz(tmp_path / "f32.npz")
    assert a.x.shape == b.x.shape == (6, 1, 8, 8) and a.n_classes == 3
    np.testing.assert_allclose(a.x, b.x, atol=1e-6)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_gzipped_or_not(tmp_path, compress):
    x = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6), dtype=np.uint8)
    y = np.array([1, 0, 1, 0], dtype=np.uint8)
    write = gzip.compress if compress else (lambda b: b)
    (tmp_path / "images").write_bytes(write(idx_bytes(x)))
    (tmp_path / "labels").write_bytes(write(idx_bytes(y)))
    data = load_idx(tmp_path / "images", tmp_path / "labels")
    assert data.x.shape == (4, 1, 5, 6) and data.y.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(data.x[:, 0] * 255, x)


def test_normalized_per_channel():
    data = LabelledImages(np.ones((2, 3, 2, 2), np.float32), np.array([0, 1]), "x")
    out = normalized(data, (0.5, 1.0, 0.0), (0.5, 1.0, 2.0))
    assert out.x[0, :, 0, 0].tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="mean has 2 values; the images have 3 channels"):
        normalized(data, (0.5, 0.5), (1.0,))


def _corrupt_image(root):
    image_folder(root, {"a": 2, "b": 2})
    (root / "b" / "001.png").write_bytes(b"\x89PNG not really")
    return root / "b" / "001.png"


@pytest.mark.parametrize("make, message", [
    (lambda root: _corrupt_image(root), "001.png is not a readable image"),
    (lambda root: (image_folder(root, {"a": 2}), (root / "empty").mkdir()), "class folder .*empty holds no images"),
    (lambda root: image_folder(root, {"a": 2, "b": 1}, shape=(9, 8)), "is 8x9 pixels but the model takes 8x8"),
    (lambda root: root.mkdir(), "has no class subfolders"),
])
def test_bad_image_folders_are_one_line(tmp_path, make, message):
    root = tmp_path / "images"
    make(root)
    with pytest.raises(ValueError, match=message) as e:
        load_image_folder(root, (1, 8, 8))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content, message", [
    (lambda p: np.savez(p, images=np.zeros((2, 4, 4))), "has no array 'x' or 'y'; it holds images"),
    (lambda p: p.write_bytes(b"PK\x03\x04 broken zip"), "not a readable .npz"),
    (lambda p: np.save(p, np.zeros(3)), "holds one array, not an .npz archive"),
    (lambda p: np.savez(p, x=np.zeros((2, 4, 4)), y=np.array([0.5, 1.0])), "labels must be a 1-D array of integers"),
    (lambda p: np.savez(p, x=np.zeros((2, 4, 4)), y=np.array([0, 1, 1])), "3 labels for 2 images"),
    (lambda p: np.savez(p, x=np.zeros(4), y=np.array([0])), "images must be an array of N x H x W"),
])
def test_bad_npz_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "data.npz"
    content(path)
    if not path.exists():  # np.save appends .npy
        (tmp_path / "data.npz.npy").rename(path)
    with pytest.raises(ValueError, match=message) as e:
        load_npz(path)
    assert "\n" not in str(e.value)


def test_bad_idx_files_are_one_line(tmp_path):
    x = np.zeros((4, 5, 6), dtype=np.uint8)
    labels = tmp_path / "labels"
    labels.write_bytes(idx_bytes(np.zeros(4)))
    (tmp_path / "truncated").write_bytes(idx_bytes(x)[:-7])
    (tmp_path / "text").write_bytes(b"hello world")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08 not gzip")
    (tmp_path / "three").write_bytes(idx_bytes(np.zeros(3)))
    (tmp_path / "images").write_bytes(idx_bytes(x))
    for name, message in [("truncated", "truncated or corrupt: its header says 4x5x6 .120 bytes of data., it holds "
                                        "113"),
                          ("text", "is not an IDX file"), ("bad.gz", "not a readable gzip file"),
                          ("missing", "data file not found")]:
        with pytest.raises(ValueError, match=message):
            load_idx(tmp_path / name, labels)
    with pytest.raises(ValueError, match="4 labels for 3 images|3 labels for 4 images"):
        load_idx(tmp_path / "images", tmp_path / "three")


def labelled(counts: list[int]) -> LabelledImages:
    y = np.concatenate([np.full(n, label) for label, n in enumerate(counts)])
    return LabelledImages(np.zeros((len(y), 1, 2, 2), np.float32), y, "toy")


def test_few_shot_split_is_seeded_stratified_and_disjoint():
    data = labelled([30, 25, 40])
    split = few_shot_split(data, shots=5, seed=3, validation=10)
    again = few_shot_split(data, shots=5, seed=3, validation=10)
    other = few_shot_split(data, shots=5, seed=4, validation=10)
    assert split.describe() == again.describe() and split.few_shot.tolist() != other.few_shot.tolist()
    assert np.bincount(data.y[split.few_shot]).tolist() == [5, 5, 5]
    assert np.bincount(data.y[split.validation]).tolist() == [10, 10, 10]
    parts = [set(split.few_shot), set(split.validation), set(split.train)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(data.y)))


def test_more_shots_keep_the_validation_split_and_grow_the_few_shot_set():
    data = labelled([30, 30])
    small = few_shot_split(data, shots=5, seed=0, validation=10)
    large = few_shot_split(data, shots=12, seed=0, validation=10)
    assert small.validation.tolist() == large.validation.tolist()
    assert set(small.few_shot) < set(large.few_shot)


def test_by_default_every_image_outside_the_few_shot_set_validates():
    split = few_shot_split(labelled([12, 9]), shots=4, seed=0)
    assert len(split.validation) == 8 + 5 and len(split.train) == 0


@pytest.mark.parametrize("counts, shots, validation, message", [
    ([10, 3], 5, None, "class 1 has 3 images, fewer than the 5 shots per class"),
    ([10, 5], 5, None, "class 1 has 5 images: 5 shots leave 0 for validation"),
    ([10, 8], 5, 4, "class 1 has 8 images: 5 shots leave 3 for validation, and at least 4 are needed"),
    ([10, 0, 10], 2, None, "class 1 has no images"),
])
def test_classes_too_small_for_the_split_are_one_line(counts, shots, validation, message):
    with pytest.raises(ValueError, match=message):
        few_shot_split(labelled(counts), shots=shots, seed=0, validation=validation)


def test_class_names_appear_in_split_errors(tmp_path):
    data = load_image_folder(image_folder(tmp_path / "images", {"ant": 5, "bee": 2}), (1, 8, 8))
    with pytest.raises(ValueError, match="class 'bee' has 2 images, fewer than the 3 shots"):
        few_shot_split(data, shots=3, seed=0)
