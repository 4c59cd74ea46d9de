"""Latency: model export, on-host runtimes, the measurement protocol, cache, predictors."""

from __future__ import annotations

from latency.measurement import Measurement, MeasureSettings

__all__ = ["Measurement", "MeasureSettings"]
