"""User data modules that break the contract in ways a search or training must survive
(``--data module:tests.train.bad_datamodules:NAME``)."""

from __future__ import annotations

import threading

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Small(L.LightningDataModule):
    """64 random 3×16×16 images of 3 classes."""

    num_classes = 3

    def labels(self, n: int) -> torch.Tensor:
        return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(1))

    def setup(self, stage: str | None = None) -> None:
        x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        self.ds = TensorDataset(x, self.labels(64))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.ds, batch_size=16)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.ds, batch_size=16)


class LabelsTooBig(Small):
    """Labels up to 9 for 3 classes: the loss raises IndexError."""

    def labels(self, n: int) -> torch.Tensor:
        return torch.full((n,), 9)


class HoldsLock(Small):
    """Holds a lock, which cannot be pickled for Ray's workers."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.lock = threading.Lock()
