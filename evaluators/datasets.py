"""Users' images from disk: an image folder, an `.npz`, MNIST-style IDX files; scaled to [0, 1] NCHW.

Every reader checks what it reads and raises ValueError with one line naming the file (or class) and
what is wrong with it, before any work starts.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np

from .data import LabelledImages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# IDX element types: code -> (numpy big-endian dtype, bytes per element)
_IDX_TYPES = {0x08: (">u1", 1), 0x09: (">i1", 1), 0x0B: (">i2", 2), 0x0C: (">i4", 4), 0x0D: (">f4", 4),
              0x0E: (">f8", 8)}


def load_image_folder(root: Path, image_shape: tuple[int, int, int]) -> LabelledImages:
    """One subfolder per class (labels follow the sorted folder names, as torchvision's ImageFolder
    does); every image must have the model's size. `image_shape` is (channels, height, width): 1 channel
    reads images as greyscale, 3 as RGB.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class subfolders; put each class's images in a folder of its own")
    channels, height, width = image_shape
    if channels not in (1, 3):
        raise ValueError(f"image folders hold greyscale or RGB images, but the model takes {channels} channels")
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise ValueError(f"class folder {root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for path in files:
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert(mode), dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise ValueError(f"{path} is not a readable image: {e}") from None
            if pixels.shape[:2] != (height, width):
                raise ValueError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels but the model takes "
                                 f"{width}x{height} ([model] input_shape); resize the images")
            images.append(pixels.reshape(height, width, channels).transpose(2, 0, 1))
            labels.append(label)
    x = np.stack(images).astype(np.float32) / 255.0
    return LabelledImages(x, np.array(labels, dtype=np.int64), str(root), tuple(classes))


def load_npz(path: Path) -> LabelledImages:
    """An `.npz` holding `x` (N, H, W) or (N, C, H, W), integers 0-255 or floats, and `y` (N,) labels."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:  # not numpy's format, truncated, pickled
        raise ValueError(f"{path} is not a readable .npz file: {e}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds one array, not an .npz archive; save it with np.savez(path, x=..., y=...)")
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise ValueError(f"{path} has no array {' or '.join(repr(k) for k in missing)}; it holds "
                             f"{', '.join(archive.files) or 'nothing'} (save it with np.savez(path, x=..., y=...))")
        try:
            x, y = archive["x"], archive["y"]
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is corrupt: {e}") from None
    return LabelledImages(_images(x, path), _labels(y, len(x), path), str(path))


def load_idx(images: Path, labels: Path) -> LabelledImages:
    """MNIST-style IDX files (gzipped or not): images of N x H x W, labels of N."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3:
        raise ValueError(f"{images} holds an array of {x.ndim} dimensions; IDX images are N x height x width")
    return LabelledImages(_images(x, Path(images)), _labels(y, len(x), Path(labels)), str(images))


def read_idx(path: Path) -> np.ndarray:
    """The array in one IDX file; gzip is recognised by its magic bytes, not by the file name."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise ValueError(f"data file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable gzip file: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(f"{path} is not an IDX file (it does not start with an IDX magic number)")
    dtype, size = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header is cut short")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = int(np.prod(shape)) * size
    data = raw[4 + 4 * ndim:]
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: its header says {'x'.join(map(str, shape))} "
                         f"({expected} bytes of data), it holds {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _images(x: np.ndarray, source: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"{source}: images must be an array of N x H x W or N x C x H x W, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise ValueError(f"{source}: images must be uint8 (0-255) or floats, got {x.dtype}")


def _labels(y: np.ndarray, n: int, source: Path) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: labels must be a 1-D array of integers, got {y.dtype} of shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{source}: {len(y)} labels for {n} images")
    if y.min() < 0:
        raise ValueError(f"{source}: labels must be 0 or more (class indices of the model's outputs), "
                         f"found {int(y.min())}")
    return y.astype(np.int64)


def normalized(data: LabelledImages, mean: tuple[float, ...], std: tuple[float, ...]) -> LabelledImages:
    """(x - mean) / std per channel, as the model was trained to see its inputs."""
    channels = data.x.shape[1]
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"[data] {name} has {len(values)} values; the images have {channels} channels")
    if any(s <= 0 for s in std):
        raise ValueError(f"[data] std must be positive, got {list(std)}")
    shape = (1, -1, 1, 1)
    x = (data.x - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    return LabelledImages(x.astype(np.float32), data.y, data.name, data.classes)
