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
    """Labels 9 for 3 classes (the loss would raise IndexError)."""

    def labels(self, n: int) -> torch.Tensor:
        return torch.full((n,), 9)


class HoldsLock(Small):
    """Holds a lock, which cannot be pickled for Ray's workers."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.lock = threading.Lock()


class OneChannel(Small):
    """Grey images without saying ``in_channels = 1``."""

    def setup(self, stage: str | None = None) -> None:
        x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        self.ds = TensorDataset(x, self.labels(64))


class FloatLabels(Small):
    def labels(self, n: int) -> torch.Tensor:
        return torch.zeros(n)


class NoValBatch(Small):
    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(0, 3, 16, 16),
                                        torch.zeros(0, dtype=torch.long)), batch_size=4)


class _FailsLater(torch.utils.data.Dataset):
    """Good first batch; from item 16 on its reads fail (a file gone mid-training)."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i >= 16:
            raise KeyError(f"image {i} is gone")
        return self.base[i]


class FailsLater(Small):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_FailsLater(self.ds), batch_size=16)
