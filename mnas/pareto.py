"""Pareto maths for (accuracy ↑, latency ↓): non-dominated set and exact 2-D hypervolume."""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` dominates ``b``: at least as accurate and as fast, strictly better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points of ``(accuracy, latency)`` pairs, fastest first.

    Duplicates of a front point are all kept out except the first (ties on both
    objectives are not domination, but one copy is enough on a front). O(n log n).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0], i))
    front: list[int] = []
    best_acc = float("-inf")
    for i in order:
        acc = points[i][0]
        if acc > best_acc:
            front.append(i)
            best_acc = acc
    return front


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Exact area dominated by ``points`` and bounded by ``ref = (acc_min, lat_max)``.

    Points that do not improve on the reference point in both objectives contribute
    nothing.
    """
    ref_acc, ref_lat = ref
    pts = [(a, lat) for a, lat in points if a > ref_acc and lat < ref_lat]
    if not pts:
        return 0.0
    front = [pts[i] for i in pareto_front(pts)]  # latency ascending, accuracy ascending
    area = 0.0
    for k, (acc, lat) in enumerate(front):
        next_lat = front[k + 1][1] if k + 1 < len(front) else ref_lat
        area += (acc - ref_acc) * (next_lat - lat)
    return area
