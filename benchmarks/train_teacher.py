"""The users' models and data of the real-data test and the benchmarks: residual CNNs trained on part of a
real test set, with the rest held out, written as a user would bring them to hilas.

    python -m benchmarks.train_teacher mnist|cifar10 [--data ../shared/data] [--out DIR]

- `mnist`: `mnist_resnet()` trained on the first 5,000 images of MNIST's t10k set
  (`../shared/data/mnist-t10k`, see its README). The other 5,000, never seen in training, are written
  as IDX files; hilas draws its few-shot images (20 per class) and validation images (200 per class,
  disjoint) from them.
- `cifar10`: `cifar_resnet()`, ResNet-20 (three stages of three blocks, 16/32/64 channels), trained on
  5,000 images of CIFAR-10's test set (`cifar10-test-jpg.tar.gz`: the first 500 of each class by file
  name) with random shifts and flips. hilas draws 100 few-shot images per class from those 5,000 and
  validates on the other 5,000 (`[data] validation_path`).

Each writes to DIR (default: the recipe's name in the user cache directory; $HILAS_CACHE_DIR overrides
it) the weights (a state dict), the data, `hilas.toml` (a run config that searches the model on them:
`hilas search run DIR/hilas.toml`, with the repository on PYTHONPATH so that the factory imports) and
`teacher.json` (training time and held-out accuracy). A second call finds them there and returns at once.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import struct
import tarfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from hilas.evaluators import LabelledImages, load_idx, normalized, top1
from hilas.evaluators.default import ResNet, cache_dir, train

WIDTHS = (48, 96)
TRAIN_IMAGES = 5000
EPOCHS = 8
SEED = 0
# The cache directory names the recipe, so a changed recipe never reuses weights trained by another.
VERSION = f"mnist-resnet-{WIDTHS[0]}x{WIDTHS[1]}-{TRAIN_IMAGES}img-{EPOCHS}ep-seed{SEED}"
CIFAR_WIDTHS, CIFAR_BLOCKS, CIFAR_EPOCHS, CIFAR_PER_CLASS = (16, 32, 64), 3, 24, 500
CIFAR_VERSION = f"cifar-resnet20-{CIFAR_PER_CLASS * 10}img-{CIFAR_EPOCHS}ep-seed{SEED}"
CIFAR_TARBALL = "cifar10-test-jpg.tar.gz"
CIFAR_MEAN, CIFAR_STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
HELDOUT_IMAGES, HELDOUT_LABELS = "heldout-images-idx3-ubyte.gz", "heldout-labels-idx1-ubyte.gz"


def mnist_resnet() -> nn.Module:
    """The factory a run config names: `factory = "benchmarks.train_teacher:mnist_resnet"`. A strided stem to
    14x14, two stages of two residual blocks (48 channels at 14x14, 96 at 7x7), pooling and a classifier:
    62 MFLOPs, wide enough that pruning it pays on a CPU."""
    return ResNet(WIDTHS, stem_stride=2)


def mnist_teacher(data_dir: Path, out_dir: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Train (or find, already trained) the teacher and write its files; returns their directory."""
    out_dir = Path(out_dir) if out_dir else cache_dir() / VERSION
    meta = out_dir / "teacher.json"
    if meta.is_file():
        return out_dir
    source = Path(data_dir) / "mnist-t10k"
    data = load_idx(source / IMAGES, source / LABELS)
    model = mnist_resnet()
    start = time.perf_counter()
    train(model, data.x[:TRAIN_IMAGES], data.y[:TRAIN_IMAGES], epochs=EPOCHS, seed=SEED, progress=progress)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "mnist-resnet.pt")
    heldout = np.round(data.x[TRAIN_IMAGES:, 0] * 255).astype(np.uint8)
    (out_dir / HELDOUT_IMAGES).write_bytes(gzip.compress(idx_bytes(heldout)))
    (out_dir / HELDOUT_LABELS).write_bytes(gzip.compress(idx_bytes(data.y[TRAIN_IMAGES:].astype(np.uint8))))
    (out_dir / "hilas.toml").write_text(RUN_CONFIG)
    meta.write_text(json.dumps({"train_seconds": seconds, "epochs": EPOCHS, "train_images": TRAIN_IMAGES,
                                "heldout_accuracy": top1(model, data.x[TRAIN_IMAGES:], data.y[TRAIN_IMAGES:])},
                               indent=2) + "\n")
    return out_dir


def cifar_resnet() -> nn.Module:
    """ResNet-20 for 32x32 RGB images (He et al., 2016): 41 MFLOPs, 0.27 M parameters."""
    return ResNet(CIFAR_WIDTHS, blocks=CIFAR_BLOCKS, in_channels=3)


def cifar_teacher(data_dir: Path, out_dir: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Train (or find, already trained) the CIFAR-10 teacher and write its files; returns their directory."""
    out_dir = Path(out_dir) if out_dir else cache_dir() / CIFAR_VERSION
    meta = out_dir / "teacher.json"
    if meta.is_file():
        return out_dir
    x, y, names = read_cifar_jpegs(Path(data_dir) / CIFAR_TARBALL)
    rank = np.zeros(len(y), dtype=np.int64)  # each image's place in its class, by file name
    for label in range(10):
        members = np.flatnonzero(y == label)
        rank[members[np.argsort([names[i] for i in members])]] = np.arange(len(members))
    train_mask = rank < CIFAR_PER_CLASS
    normal = normalized(LabelledImages(x.astype(np.float32) / 255.0, y, "cifar10"), CIFAR_MEAN, CIFAR_STD)
    model = cifar_resnet()
    start = time.perf_counter()
    train(model, normal.x[train_mask], y[train_mask], epochs=CIFAR_EPOCHS, seed=SEED, progress=progress, shift=4,
          flip=True)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "cifar-resnet20.pt")
    np.savez(out_dir / "train.npz", x=x[train_mask], y=y[train_mask])
    np.savez(out_dir / "heldout.npz", x=x[~train_mask], y=y[~train_mask])
    (out_dir / "hilas.toml").write_text(CIFAR_RUN_CONFIG)
    meta.write_text(json.dumps({"train_seconds": seconds, "epochs": CIFAR_EPOCHS, "train_images": int(train_mask.sum()),
                                "heldout_accuracy": top1(model, normal.x[~train_mask], y[~train_mask])},
                               indent=2) + "\n")
    return out_dir


def read_cifar_jpegs(tarball: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The test set's images (N x 3 x 32 x 32 uint8), labels (classes in sorted name order) and file names."""
    from PIL import Image

    if not tarball.is_file():
        raise SystemExit(f"{tarball} is missing (see ../shared/data/README.md)")
    images, classes, names = [], [], []
    with tarfile.open(tarball) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[2].endswith(".jpg"):
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                    images.append(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
                classes.append(parts[1])
                names.append(parts[2])
    labels = {name: i for i, name in enumerate(sorted(set(classes)))}
    return np.stack(images), np.array([labels[c] for c in classes], dtype=np.int64), names


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte array as an IDX file (MNIST's format)."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        np.ascontiguousarray(array, dtype=np.uint8).tobytes()


# What the teachers' run configs search with: on this machine's CPU, with short measurement rounds.
SEARCH_TABLES = """
[search]
budget = {budget}
population = 16
devices = ["local-cpu"]

[measurement]
warmup_seconds = 0.1
min_seconds = 0.1
cooldown_seconds = 0.0
"""

RUN_CONFIG = """\
# Search the MNIST teacher with 20 images per class; validate on 200 others per class.
[model]
factory = "benchmarks.train_teacher:mnist_resnet"
weights = "mnist-resnet.pt"
input_shape = [1, 1, 28, 28]

[data]
format = "idx"
path = "heldout-images-idx3-ubyte.gz"
labels = "heldout-labels-idx1-ubyte.gz"
shots = 20
validation = 200
""" + SEARCH_TABLES.format(budget=64)


CIFAR_RUN_CONFIG = f"""\
# Search ResNet-20 with 100 of its training images per class; validate on the 5,000 held-out images.
[model]
factory = "benchmarks.train_teacher:cifar_resnet"
weights = "cifar-resnet20.pt"
input_shape = [1, 3, 32, 32]

[data]
format = "npz"
path = "train.npz"
validation_path = "heldout.npz"
shots = 100
mean = {list(CIFAR_MEAN)}
std = {list(CIFAR_STD)}
""" + SEARCH_TABLES.format(budget=48)
TEACHERS = {"mnist": mnist_teacher, "cifar10": cifar_teacher}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=list(TEACHERS))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="the benchmark data folder (default: ../shared/data beside the repository)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the user cache's)")
    args = parser.parse_args()
    started = time.perf_counter()
    out = TEACHERS[args.dataset](args.data, args.out, progress=lambda e, n: print(f"epoch {e}/{n}", flush=True))
    meta = json.loads((out / "teacher.json").read_text())
    print(f"{out}: trained in {meta['train_seconds']:.0f} s, top-1 {100 * meta['heldout_accuracy']:.2f} % on the "
          f"{10000 - meta['train_images']} held-out images ({time.perf_counter() - started:.0f} s in all)")
    print(f"search it: PYTHONPATH=. hilas search run {out / 'hilas.toml'}")


if __name__ == "__main__":
    main()
