"""Labelled image arrays, the embedded digits data, and the written-down few-shot split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Disjoint index sets into one labelled array.

    `few_shot` (K per class) is all the compression may use; `validation` (disjoint from it) scores
    every candidate; `train` holds the other images (the embedded default model is trained on them and
    its few-shot images are drawn from them; a user's data leaves them unused).
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
    classes: tuple[str, ...] = ()  # class names by label, where the source has them (folder names)

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.y.max()) + 1

    def class_name(self, label: int) -> str:
        return f"class '{self.classes[label]}'" if self.classes else f"class {label}"

    def subset(self, idx: np.ndarray) -> "LabelledImages":
        return LabelledImages(self.x[idx], self.y[idx], self.name, self.classes)


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


def class_orders(y: np.ndarray, n_classes: int, seed: int) -> list[np.ndarray]:
    """Each class's image indices in a seeded random order (one generator per class, so the order of a
    class does not depend on the others)."""
    return [np.random.default_rng([seed, label]).permutation(np.flatnonzero(y == label))
            for label in range(n_classes)]


def few_shot_split(data: LabelledImages, *, shots: int, seed: int, validation: int | None = None) -> Split:
    """`shots` images per class for compression and, disjoint from them, `validation` images per class
    (default: all the others; 0 where candidates are scored on other images) to score candidates.

    The few-shot images are the first of each class's seeded order and the validation images the last,
    so a smaller or larger `shots` with an explicit `validation` keeps the same validation images.
    """
    few_shot, validation_idx, unused = [], [], []
    for label, order in enumerate(class_orders(data.y, data.n_classes, seed)):
        name = data.class_name(label)
        if len(order) == 0:
            raise ValueError(f"{data.name}: {name} has no images")
        if len(order) < shots:
            raise ValueError(f"{data.name}: {name} has {len(order)} images, fewer than the {shots} shots per "
                             "class ([data] shots)")
        n_val = len(order) - shots if validation is None else validation
        if (n_val < 1 and validation != 0) or shots + n_val > len(order):
            raise ValueError(f"{data.name}: {name} has {len(order)} images: {shots} shots leave "
                             f"{len(order) - shots} for validation, and at least "
                             f"{max(1, validation or 1)} are needed ([data] validation)")
        few_shot.extend(order[:shots])
        validation_idx.extend(order[len(order) - n_val:])
        unused.extend(order[shots:len(order) - n_val])
    return Split(np.sort(np.array(unused, dtype=np.int64)), np.sort(np.array(few_shot, dtype=np.int64)),
                 np.sort(np.array(validation_idx, dtype=np.int64)), seed, shots)
