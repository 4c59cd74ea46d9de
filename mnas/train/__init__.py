"""Proxy training: the classification LightningModule and the data modules."""

from __future__ import annotations

from mnas.train.data import DATA_SPECS, data_specs, make_datamodule, register_data
from mnas.train.module import ClassifierModule

__all__ = ["DATA_SPECS", "ClassifierModule", "data_specs", "make_datamodule", "register_data"]
