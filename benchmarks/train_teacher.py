"""A user's model and data for the end-to-end test on real data: a residual CNN trained on part of MNIST.

    python -m benchmarks.train_teacher mnist [--data ../shared/data] [--out DIR]

trains `mnist_resnet()` on the first 5,000 images of MNIST's t10k set (`../shared/data/mnist-t10k`,
see its README) and writes to DIR (default: `VERSION` in the user cache directory,
$HILAS_CACHE_DIR overrides it), as a user would bring them to hilas:

- `mnist-resnet.pt`: the trained weights (a state dict);
- `heldout-images-idx3-ubyte.gz`, `heldout-labels-idx1-ubyte.gz`: the other 5,000 images, never
  seen in training, from which hilas draws its few-shot and validation images;
- `hilas.toml`: a run config that searches the model on them (`hilas search run DIR/hilas.toml`, with
  the repository on PYTHONPATH so that `benchmarks.train_teacher:mnist_resnet` imports);
- `teacher.json`: the training time and the accuracy on the held-out images.

A second call finds them there and returns at once.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from evaluators import load_idx, top1
from evaluators.default import ResNet, cache_dir, train

WIDTHS = (48, 96)
TRAIN_IMAGES = 5000
EPOCHS = 8
SEED = 0
# The cache directory names the recipe, so a changed recipe never reuses weights trained by another.
VERSION = f"mnist-resnet-{WIDTHS[0]}x{WIDTHS[1]}-{TRAIN_IMAGES}img-{EPOCHS}ep-seed{SEED}"
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


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte array as an IDX file (MNIST's format)."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        np.ascontiguousarray(array, dtype=np.uint8).tobytes()


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

[search]
budget = 64
population = 16
devices = ["local-cpu"]

[measurement]
warmup_seconds = 0.1
min_seconds = 0.1
cooldown_seconds = 0.0
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["mnist"])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="the benchmark data folder (default: ../shared/data beside the repository)")
    parser.add_argument("--out", type=Path, default=None, help=f"where to write (default: the cache's {VERSION})")
    args = parser.parse_args()
    started = time.perf_counter()
    out = mnist_teacher(args.data, args.out, progress=lambda e, n: print(f"epoch {e}/{n}", flush=True))
    meta = json.loads((out / "teacher.json").read_text())
    print(f"{out}: trained in {meta['train_seconds']:.0f} s, top-1 {100 * meta['heldout_accuracy']:.2f} % on the "
          f"{10000 - TRAIN_IMAGES} held-out images ({time.perf_counter() - started:.0f} s in all)")
    print(f"search it: PYTHONPATH=. hilas search run {out / 'hilas.toml'}")


if __name__ == "__main__":
    main()
