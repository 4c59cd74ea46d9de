"""Evaluator protocols and their registries (``--accuracy`` / ``--latency`` specs).

An evaluator is *how to score*; it never knows which strategy asked. Specs are
``scheme`` or ``scheme:argument`` (``proxy``, ``table:PATH#COLUMN``, ``measured``,
``lut:PATH``); each scheme registers a factory ``factory(argument, **context)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from latency.measurement import Measurement


class AccuracyEvaluator(Protocol):
    def __call__(self, space: Any, arch: Any) -> float:
        """Validation accuracy in [0, 1]; raises on failure (the trial fails)."""


class LatencyEstimator(Protocol):
    def __call__(self, space: Any, arch: Any) -> Measurement:
        """The child's latency at deployment size; raises on failure."""


ACCURACY: dict[str, tuple[Callable[..., AccuracyEvaluator], str]] = {}
LATENCY: dict[str, tuple[Callable[..., LatencyEstimator], str]] = {}


def register_accuracy(scheme: str, example: str) -> Callable:
    def deco(factory: Callable[..., AccuracyEvaluator]) -> Callable[..., AccuracyEvaluator]:
        ACCURACY[scheme] = (factory, example)
        return factory
    return deco


def register_latency(scheme: str, example: str) -> Callable:
    def deco(factory: Callable[..., LatencyEstimator]) -> Callable[..., LatencyEstimator]:
        LATENCY[scheme] = (factory, example)
        return factory
    return deco


def _load_builtin() -> None:
    from mnas import evaluators  # noqa: F401


def check_spec(kind: str, spec: str) -> None:
    """ValueError naming the valid forms unless ``spec``'s scheme is a registered
    ``kind`` ("accuracy" or "latency") evaluator."""
    _load_builtin()
    reg = ACCURACY if kind == "accuracy" else LATENCY
    if spec.partition(":")[0] not in reg:
        valid = ", ".join(ex for _, ex in reg.values())
        raise ValueError(f"unknown {kind} evaluator {spec!r}; valid: {valid}")


def _make(reg: dict, kind: str, spec: str, context: dict[str, Any]) -> Any:
    check_spec(kind, spec)
    scheme, _, arg = spec.partition(":")
    return reg[scheme][0](arg, **context)


def make_accuracy(spec: str, **context: Any) -> AccuracyEvaluator:
    return _make(ACCURACY, "accuracy", spec, context)


def make_latency(spec: str, **context: Any) -> LatencyEstimator:
    return _make(LATENCY, "latency", spec, context)
