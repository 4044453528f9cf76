"""Shuffled, augmented training batches for Model.fit on any Keras backend."""

from __future__ import annotations

import os

import keras
import numpy as np

from training import augment


class AugmentedBatches(keras.utils.PyDataset):
    """Batches of (faces 0..1, target rows, sample weights), freshly augmented each epoch.

    Targets are one row of class probabilities per face: one-hot labels, or labels blended
    with teachers' answers when distilling.

    Each batch draws from its own generator seeded by (seed, epoch, batch), so a run is
    reproducible however many threads prepare the batches.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        sample_weight: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        erasing: float = 0.0,
        mixup_alpha: float = 0.0,
    ) -> None:
        # Threads suffice (numpy releases the GIL in its array work); one on a 2-core machine,
        # where a second would only take time from the training step.
        super().__init__(workers=max(1, min(8, (os.cpu_count() or 1) // 2)))
        self.images = images
        self.targets = targets.astype(np.float32)
        self.sample_weight = sample_weight.astype(np.float32)
        self.batch_size = batch_size
        self.seed = seed
        self.erasing = erasing
        self.mixup_alpha = mixup_alpha
        self.epoch = 0
        self.order = self._shuffled()

    def _shuffled(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        members = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        faces = augment.geometric_jitter(self.images[members].astype(np.float32) / 255.0, rng)
        if self.erasing:
            faces = augment.random_erasing(faces, self.erasing, rng)
        targets, weights = self.targets[members], self.sample_weight[members]
        if self.mixup_alpha:
            return augment.mixup(faces, targets, weights, self.mixup_alpha, rng)
        return faces, targets, weights

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._shuffled()
