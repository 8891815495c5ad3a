"""The empirical Pareto front of a threshold sweep (Fig. 1(b)): the non-dominated points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["pareto_front"]


def pareto_front(points: pd.DataFrame | np.ndarray | Sequence[Sequence[float]]) -> pd.DataFrame:
    """The non-dominated points of a 2-D set, both coordinates maximised, sorted along the front.

    Point p dominates q when ``p_x >= q_x`` and ``p_y >= q_y`` with at least one inequality strict. So:

    * ties: of two points with the same x, the one with smaller y is dominated (and likewise in y);
    * duplicates: exact copies do not dominate each other, so every copy of a non-dominated point is
      returned (adjacent, in input order); drop them with ``front[~front.duplicated()]``.

    Args:
        points: ``(n, 2)`` coordinates: a DataFrame with two numeric columns (e.g.
            ``runs[["safety", "helpfulness"]]``; its index labels identify the points) or an array.

    Returns:
        The non-dominated rows, indexed as in ``points`` (positions 0..n-1 for an array; columns ``x, y``),
        sorted by x ascending (so y descending), copies by input order.

    Raises:
        ValueError: If ``points`` is not (n, 2) or holds NaN or inf.
    """
    frame = points if isinstance(points, pd.DataFrame) else pd.DataFrame(np.asarray(points, dtype=np.float64))
    if frame.ndim != 2 or frame.shape[1] != 2:
        raise ValueError(f"points: expected (n, 2) coordinates, got shape {frame.shape}")
    if not isinstance(points, pd.DataFrame):
        frame.columns = ["x", "y"]
    try:
        xy = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"points: expected numeric coordinates ({err})") from None
    if not np.all(np.isfinite(xy)):
        raise ValueError("points: contains NaN or inf; drop those points first")
    x, y = xy.T
    # Sweep in order of decreasing x (then y): a point survives iff it has the largest y of its x-group
    # and a y above every point with a strictly larger x.
    order = np.lexsort((-y, -x))
    keep = np.zeros(len(xy), dtype=bool)
    best_y = -np.inf
    start = 0
    while start < len(order):
        stop = start
        while stop < len(order) and x[order[stop]] == x[order[start]]:
            stop += 1
        group = order[start:stop]
        top = y[group[0]]
        if top > best_y:
            keep[group[y[group] == top]] = True
            best_y = top
        start = stop
    kept = np.flatnonzero(keep)
    return frame.iloc[kept[np.lexsort((kept, x[kept]))]]
