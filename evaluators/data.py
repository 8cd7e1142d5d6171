"""Labelled image arrays, the embedded digits data, and the written-down few-shot split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Disjoint index sets into one labelled array.

    `train` trains the default model; `few_shot` (K per class, drawn from `train`) is all the
    compression may use; `validation` (disjoint from both) scores every candidate.
    """

    train: np.ndarray
    few_shot: np.ndarray
    validation: np.ndarray
    seed: int
    shots: int

    def describe(self) -> dict:
        """The split as plain data, stored with every run so a result can be reproduced."""
        return {"seed": self.seed, "shots_per_class": self.shots, "train": self.train.tolist(),
                "few_shot": self.few_shot.tolist(), "validation": self.validation.tolist()}


@dataclass(frozen=True)
class LabelledImages:
    """Images as float32 NCHW with integer labels 0..n_classes-1."""

    x: np.ndarray
    y: np.ndarray
    name: str

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1

    def subset(self, idx: np.ndarray) -> "LabelledImages":
        return LabelledImages(self.x[idx], self.y[idx], self.name)


def load_digits() -> LabelledImages:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), scaled to [0, 1]; no download."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return LabelledImages(x, bunch.target.astype(np.int64), "sklearn-digits")


def make_split(y: np.ndarray, *, shots: int, validation_fraction: float, seed: int) -> Split:
    """A stratified validation split, the rest for training, and `shots` per class from training."""
    rng = np.random.default_rng(seed)
    train, validation, few_shot = [], [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = int(round(validation_fraction * len(idx)))
        if len(idx) - n_val < shots:
            raise ValueError(f"class {label} has {len(idx) - n_val} training images, fewer than {shots} shots")
        validation.extend(idx[:n_val])
        train.extend(idx[n_val:])
        few_shot.extend(idx[n_val:n_val + shots])
    return Split(np.sort(train), np.sort(few_shot), np.sort(validation), seed, shots)
