"""pytest plugin: latency budgets beside a team's unit tests.

Registered as the ``mnas_latency`` pytest11 entry point, so installing mnas is enough::

    @pytest.mark.latency_budget(ms=30, arch="mobilenetv2", space="mnasnet")
    def test_classifier_fits_the_frame_budget(): ...

    @pytest.mark.latency_budget(ms=2.5, model="models/detector.onnx",
                                device="local:onnxruntime", runs=50)
    def test_detector(): ...

After the test body passes, the model (a file relative to the test file, or an arch of a
search space built and exported at its deployment size) is measured on ``device`` with
the same protocol as ``mnas bench``, and the test fails when the measured median is
over ``ms``. Noise is judged, not ignored: the 95% confidence interval of the median
decides — entirely under the budget passes, entirely over fails, and an interval that
straddles the budget is *inconclusive*: it fails (``inconclusive="fail"``, the
default) or passes with a warning (``inconclusive="pass"``). The numbers go to the test's
``user_properties`` (so into JUnit XML) and to a "latency budgets" summary section.

Marker keywords: ``ms`` (required; also the first positional argument), ``device``
(default ``local:onnxruntime``), ``model`` or ``arch`` (+ ``space``, ``input_shape``,
``num_classes``), ``threads``, ``warmup``, ``runs``, ``max_runs``, ``rel_ci``,
``rounds``, ``clock``, ``inconclusive``. Disable with ``-p no:mnas_latency``.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

MARKER = "latency_budget"
_POLICIES = ("fail", "pass")
#: marker keywords besides ``inconclusive`` (the rest of a suite entry's fields)
KEYWORDS = ("ms", "device", "model", "arch", "space", "input_shape", "num_classes", "threads",
            "warmup", "runs", "max_runs", "rel_ci", "max_seconds", "rounds", "clock")
_RESULTS = pytest.StashKey[list[tuple[str, str, str]]]()
_MEMO = pytest.StashKey[dict[Any, Any]]()


class LatencyBudgetWarning(UserWarning):
    """A budget check passed only because ``inconclusive="pass"`` was asked for."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(ms, device=..., model=... | arch=..., space=..., runs=..., "
        "inconclusive='fail'): after the test passes, measure the model and fail when its "
        "median latency is over `ms` milliseconds (mnas)")
    config.stash[_RESULTS] = []
    config.stash[_MEMO] = {}


def budget_verdict(ci_low_ms: float, ci_high_ms: float, budget_ms: float) -> str:
    """``pass`` (CI entirely within budget), ``over`` (entirely over) or ``inconclusive``."""
    if ci_high_ms <= budget_ms:
        return "pass"
    if ci_low_ms > budget_ms:
        return "over"
    return "inconclusive"


def _entry(item: pytest.Item, marker: pytest.Mark) -> tuple[Any, str]:
    """The marker as a validated one-entry suite (same rules and messages as a suite file)."""
    from latency.suite import parse_suite

    kw = dict(marker.kwargs)
    if marker.args:
        if len(marker.args) > 1 or "ms" in kw:
            raise ValueError("give the budget once: latency_budget(ms) or latency_budget(ms=...)")
        kw["ms"] = marker.args[0]
    if "ms" not in kw:
        raise ValueError("missing the budget: latency_budget(ms=..., ...)")
    policy = kw.pop("inconclusive", "fail")
    if policy not in _POLICIES:
        raise ValueError(f"inconclusive must be one of {_POLICIES}, got {policy!r}")
    unknown = sorted(set(kw) - set(KEYWORDS))
    if unknown:
        raise ValueError(f"unknown keyword(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(KEYWORDS)}, inconclusive")
    kw["max_ms"] = kw.pop("ms")
    kw.setdefault("rounds", 1)
    kw["name"] = "budget"
    for key in ("input_shape",):      # TOML gives lists; accept tuples from Python too
        if isinstance(kw.get(key), tuple):
            kw[key] = list(kw[key])
    here = Path(str(item.path))
    suite = parse_suite({"entry": [kw]}, here)   # model paths relative to the test file
    return suite, policy


def _measure(config: pytest.Config, suite: Any) -> Any:
    from latency.suite import Suite, run_suite

    entry = suite.entries[0]
    key = dataclasses.replace(entry, max_ms=None)
    memo = config.stash[_MEMO]
    if key not in memo:   # several tests may budget the same model: measure it once
        memo[key] = run_suite(Suite(suite.path, (key,))).records[entry.name]
    return memo[key]


def _enforce(item: pytest.Item, marker: pytest.Mark) -> None:
    problem = ""
    try:
        suite, policy = _entry(item, marker)
        record = _measure(item.config, suite)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        problem = re.sub(r"^.*?: entry #1 'budget': |^entry 'budget': ", "", str(e))
        problem = problem.replace("'max_ms'", "'ms'")
    if problem:   # fail outside the except block: one clean message, no chained traceback
        pytest.fail(f"@pytest.mark.{MARKER} on {item.nodeid}: {problem}", pytrace=False)
    entry = suite.entries[0]
    budget = float(entry.max_ms)
    m = record.measurement
    verdict, msg = judge(m, budget, f"{entry.source} on {entry.device}", policy)
    item.user_properties += [("latency_median_ms", round(m.median_ms, 4)),
                             ("latency_ci_ms", f"{m.ci_low_ms:.4f}-{m.ci_high_ms:.4f}"),
                             ("latency_budget_ms", budget), ("latency_verdict", verdict)]
    item.config.stash[_RESULTS].append((item.nodeid, verdict, _numbers(m) + f" vs {budget:g} ms"))
    if verdict == "over" or (verdict == "inconclusive" and policy == "fail"):
        pytest.fail(msg, pytrace=False)
    if msg:
        warnings.warn(LatencyBudgetWarning(msg), stacklevel=1)


def _numbers(m: Any) -> str:
    return (f"median {m.median_ms:.3f} ms (95% CI {m.ci_low_ms:.3f}-{m.ci_high_ms:.3f} ms, "
            f"{m.runs} runs{', flagged noisy' if m.noisy else ''})")


def judge(m: Any, budget_ms: float, what: str = "the model", policy: str = "fail"
          ) -> tuple[str, str]:
    """``(verdict, message)`` for a Measurement against a budget; message is empty on a
    clean pass. ``policy`` only words the inconclusive message; the caller acts on it."""
    verdict = budget_verdict(m.ci_low_ms, m.ci_high_ms, budget_ms)
    if verdict == "over":
        return verdict, (f"latency budget exceeded: {_numbers(m)} > budget {budget_ms:g} ms "
                         f"for {what}")
    if verdict == "inconclusive":
        tail = ("accepted because inconclusive='pass'" if policy == "pass" else
                "too noisy to decide - raise runs/rounds, measure on a quieter machine, or "
                "accept with inconclusive='pass'")
        return verdict, (f"latency budget inconclusive: {_numbers(m)} straddles the budget "
                         f"{budget_ms:g} ms for {what}; {tail}")
    return verdict, ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    result = yield   # the test body first: a failing test is not measured
    marker = item.get_closest_marker(MARKER)
    if marker is not None:
        _enforce(item, marker)
    return result


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_RESULTS, [])
    if not rows:
        return
    terminalreporter.write_sep("-", "latency budgets (mnas)")
    for nodeid, verdict, text in rows:
        terminalreporter.write_line(f"{verdict.upper():12} {nodeid}: {text}")
