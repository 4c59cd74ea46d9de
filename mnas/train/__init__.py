"""Proxy training: the classification LightningModule and the data modules.

The names below load on first use (PEP 562): importing Lightning takes seconds, and a
search that trains nothing (a table's accuracy) should not pay for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DATA_SPECS", "ClassifierModule", "data_specs", "make_datamodule", "register_data"]


def __getattr__(name: str) -> Any:
    if name == "ClassifierModule":
        from mnas.train.module import ClassifierModule

        return ClassifierModule
    if name in __all__:
        from mnas.train import data

        return getattr(data, name)
    raise AttributeError(f"module 'mnas.train' has no attribute {name!r}")
