"""Shared fixtures for proxy-training tests."""

from __future__ import annotations

import sys
import textwrap

import pytest

MODULE_SRC = textwrap.dedent('''
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Good(L.LightningDataModule):
        num_classes = 4
        in_channels = 1

        def setup(self, stage=None):
            g = torch.Generator().manual_seed(0)
            self.ds = TensorDataset(torch.randn(16, 1, 8, 8, generator=g),
                                    torch.arange(16) % 4)

        def train_dataloader(self):
            return DataLoader(self.ds, batch_size=4)

        def val_dataloader(self):
            return DataLoader(self.ds, batch_size=4)

    class NoClasses(L.LightningDataModule):
        pass

    class NotADataModule:
        num_classes = 3
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_dm_mod.py").write_text(MODULE_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_dm_mod"
    sys.modules.pop("user_dm_mod", None)
