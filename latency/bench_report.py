"""Renderings of ``mnas bench compare`` verdicts: console table, Markdown for a pull-request
comment, JUnit XML for CI test reports, and a PNG of baseline vs current medians."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from latency.regression import Comparison, exit_code

_MARK = {"ok": "✅", "improvement": "🚀", "regression": "❌", "inconclusive": "⚠️",
         "new": "🆕", "missing": "➖"}


def _ms(v: float | None) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.3f}"


def _change(c: Comparison) -> tuple[str, str]:
    if math.isnan(c.ratio):
        return "—", "—"
    return f"{c.ratio - 1:+.1%}", f"{c.ci_low - 1:+.1%} .. {c.ci_high - 1:+.1%}"


def _summary(cs: Sequence[Comparison], inconclusive: str) -> str:
    counts: dict[str, int] = {}
    for c in cs:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    over = sum(c.over_budget for c in cs)
    parts = [f"{n} {v}" for v, n in counts.items()]
    if over:
        parts.append(f"{over} over max_ms")
    rc = exit_code(cs, inconclusive)
    word = {0: "pass", 1: "FAIL (regression)", 2: "FAIL (inconclusive, policy=fail)"}[rc]
    return f"{', '.join(parts)} -> {word}, exit {rc}"


def text_table(cs: Sequence[Comparison], inconclusive: str = "fail") -> str:
    """Aligned table for the CI log, one row per entry, then the explanation lines."""
    rows = [("entry", "baseline ms", "current ms", "change", "95% CI", "tol", "verdict")]
    for c in cs:
        ch, ci = _change(c)
        rows.append((c.name, _ms(c.baseline.median_ms if c.baseline else None),
                     _ms(c.current.median_ms if c.current else None), ch, ci,
                     f"{c.tolerance:.0%}", c.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.append("")
    lines += [f"{c.name}: {c.explain()}" for c in cs]
    lines.append(f"bench: {_summary(cs, inconclusive)}")
    return "\n".join(lines)


def markdown(cs: Sequence[Comparison], inconclusive: str = "fail", title: str = "Latency "
             "benchmarks") -> str:
    """A GitHub/GitLab-flavoured Markdown table for a pull-request comment."""
    rc = exit_code(cs, inconclusive)
    head = {0: "✅ no latency regression", 1: "❌ latency regression",
            2: "⚠️ inconclusive (too noisy to decide)"}[rc]
    out = [f"### {title}: {head}", "",
           "| | entry | device | baseline (ms) | current (ms) | change | 95% CI | tolerance "
           "| max_ms | verdict |",
           "|---|---|---|---:|---:|---:|---|---:|---:|---|"]
    for c in cs:
        ch, ci = _change(c)
        m = c.current or c.baseline
        device = m.device if m is not None else "—"
        budget = "—" if c.max_ms is None else f"{c.max_ms:g}" + (" ❌" if c.over_budget else "")
        mark = "❌" if c.over_budget else _MARK.get(c.verdict, "")
        out.append(f"| {mark} | `{_cell(c.name)}` | `{_cell(device)}` | "
                   f"{_ms(c.baseline.median_ms if c.baseline else None)} | "
                   f"{_ms(c.current.median_ms if c.current else None)} | {ch} | {ci} | "
                   f"±{c.tolerance:.0%} | {budget} | {_cell(c.status)} |")
    notes = [f"- **{_cell(c.name)}**: {_cell(c.explain())}" for c in cs
             if c.verdict != "ok" or c.over_budget or c.noisy or c.model_changed]
    if notes:
        out += ["", *notes]
    out += ["", f"<sub>Ratio of medians current/baseline; 95% CI from a two-level bootstrap, "
                f"plus the baseline's run-to-run spread when it has 3+ runs (`mnas bench`). "
                f"Inconclusive policy: {inconclusive}. {_summary(cs, inconclusive)}.</sub>", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def junit_xml(cs: Sequence[Comparison], inconclusive: str = "fail",
              suite_name: str = "mnas-bench") -> str:
    """JUnit XML (the subset Jenkins, GitLab and GitHub test reporters read): one
    ``testcase`` per entry; a regression or an entry over max_ms is a ``failure``, an
    inconclusive entry under the ``fail`` policy an ``error``, a missing one ``skipped``."""
    failures = sum(1 for c in cs if c.verdict == "regression" or c.over_budget)
    errors = sum(1 for c in cs if c.verdict == "inconclusive" and not c.over_budget
                 and inconclusive == "fail")
    skipped = sum(1 for c in cs if c.verdict == "missing")
    total_s = sum(_seconds(c) for c in cs)
    root = ET.Element("testsuites", name=suite_name, tests=str(len(cs)),
                      failures=str(failures), errors=str(errors), time=f"{total_s:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(cs)),
                       failures=str(failures), errors=str(errors), skipped=str(skipped),
                       time=f"{total_s:.3f}")
    for c in cs:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite_name}.latency", name=c.name,
                           time=f"{_seconds(c):.3f}")
        msg = c.explain()
        if c.verdict == "regression" or c.over_budget:
            f = ET.SubElement(tc, "failure", message=msg,
                              type="over_max_ms" if c.verdict != "regression" else "regression")
            f.text = _detail(c)
        elif c.verdict == "inconclusive" and inconclusive == "fail":
            e = ET.SubElement(tc, "error", message=msg, type="inconclusive")
            e.text = _detail(c)
        elif c.verdict == "missing":
            ET.SubElement(tc, "skipped", message=msg)
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = _detail(c)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"


def _seconds(c: Comparison) -> float:
    m = c.current
    return 0.0 if m is None else sum(m.samples_ms) / 1000.0


def _detail(c: Comparison) -> str:
    lines = [c.explain()]
    for label, m in (("baseline", c.baseline), ("current", c.current)):
        if m is not None:
            lines.append(f"{label}: median {m.median_ms:.3f} ms, 95% CI [{m.ci_low_ms:.3f}, "
                         f"{m.ci_high_ms:.3f}], {m.runs} runs, {m.device}, "
                         f"model sha256 {m.model_sha256[:12]}")
    return "\n".join(lines)


def plot(cs: Sequence[Comparison], path: str | Path, title: str = "mnas bench") -> Path:
    """Two panels per entry: medians with 95% CIs (baseline vs current, log scale so
    models of different sizes share an axis) and the ratio with its CI against the
    tolerance band, coloured by verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ok": "#2e7d32", "improvement": "#1565c0", "regression": "#c62828",
              "inconclusive": "#ef6c00", "new": "#6a1b9a", "missing": "#757575"}
    n = len(cs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 2.2 + 0.6 * n), sharey=True,
                                   gridspec_kw={"width_ratios": [1.15, 1]})
    ys = list(range(n))[::-1]
    for y, c in zip(ys, cs, strict=True):
        for m, dy, col in ((c.baseline, 0.15, "#757575"), (c.current, -0.15, colors[c.verdict])):
            if m is None:
                continue
            ax1.errorbar(m.median_ms, y + dy, xerr=[[m.median_ms - m.ci_low_ms],
                                                    [m.ci_high_ms - m.median_ms]],
                         fmt="o" if m is c.baseline else "D", color=col, capsize=3, ms=6,
                         mfc="white" if m is c.baseline else col)
            ax1.annotate(f"{m.median_ms:.3g}", (m.ci_high_ms, y + dy), xytext=(5, 0),
                         textcoords="offset points", va="center", fontsize=8, color=col)
        if c.max_ms is not None:
            ax1.plot([c.max_ms, c.max_ms], [y - 0.38, y + 0.38], color="#c62828", lw=2, ls="--")
        if not math.isnan(c.ratio):
            tol = c.tolerance
            ax2.fill_betweenx([y - 0.4, y + 0.4], 1 - tol, 1 + tol, color="#e0e0e0", lw=0)
            ax2.errorbar(c.ratio, y, xerr=[[c.ratio - c.ci_low], [c.ci_high - c.ratio]],
                         fmt="s", color=colors[c.verdict], capsize=4, ms=7)
            ax2.annotate(f"{c.ratio - 1:+.1%}  {c.status}", (c.ci_high, y), xytext=(6, 0),
                         textcoords="offset points", va="center", fontsize=9,
                         color=colors[c.verdict])
        else:
            ax2.annotate(c.verdict, (1.0, y), ha="center", va="center", fontsize=9,
                         color=colors[c.verdict])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", color="#757575", mfc="white", ls="", label="baseline"),
               Line2D([], [], marker="D", color="#424242", ls="", label="current (colour = "
                      "verdict)")]
    if any(c.max_ms is not None for c in cs):
        handles.append(Line2D([], [], color="#c62828", ls="--", lw=2, label="max_ms"))
    fig.legend(handles=handles, loc="lower left", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.01, 0.0))
    xs = [v for c in cs for m in (c.baseline, c.current) if m is not None
          for v in (m.ci_low_ms, m.ci_high_ms)] + [c.max_ms for c in cs if c.max_ms]
    if xs:   # log axis: leave room on the right for the value labels
        ax1.set_xlim(min(xs) / 1.4, max(xs) * 2.2)
    ax1.set_yticks(ys, [c.name for c in cs])
    ax1.set_xscale("log")
    ax1.set_xlabel("median latency, ms (95% CI), log scale")
    ax1.grid(axis="x", which="both", alpha=0.3)
    ax1.set_title("baseline vs current")
    ax2.axvline(1.0, color="#424242", lw=1)
    ax2.set_xlabel("current / baseline median (95% CI); grey = tolerance band")
    finite = [v for c in cs for v in (c.ci_low, c.ci_high) if not math.isnan(v)]
    tols = [c.tolerance for c in cs]
    lo = min([*finite, 1 - max(tols)]) if finite else 0.9
    hi = max([*finite, 1 + max(tols)]) if finite else 1.1
    if hi / lo > 1.6:   # one very noisy entry must not squash the others: log axis
        from matplotlib.ticker import FuncFormatter

        ax2.set_xscale("log")
        x0, x1 = lo / 1.1, hi * (hi / lo) ** 0.35           # room for the verdict labels
        ax2.set_xlim(x0, x1)
        ax2.set_xticks([v for v in (0.1, 0.25, 0.5, 0.67, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5,
                                    10, 20, 50) if x0 <= v <= x1])
        ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax2.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        span = hi - lo
        ax2.set_xlim(lo - 0.08 * span, hi + 0.55 * span)   # room for the verdict labels
    ax2.grid(axis="x", alpha=0.3)
    ax2.set_title("change")
    ax1.set_ylim(-0.7, n - 0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
