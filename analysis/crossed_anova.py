"""Means of (seed x prompt) values with few seeds and clustered prompts: intervals with honest degrees of freedom.

The studies measure a statistic per training seed s and held-out prompt x (an error e = achieved - b, a
paired difference of two methods, ...). Prompts share templates (the review prompts are 16 openers x 24
subjects, :mod:`llm.prompts.reviews`; the next-token lab's are 8 frames x 64 subjects), so they are grouped into
clusters g(x). With per-seed splits a prompt may be held out at one seed and not another: missing units are NaN.

Model (crossed random effects on the cell means): with ``m[s, g]`` the mean of the units of cluster g present at
seed s,

    m[s, g] = theta + a_s + c_g + eps[s, g],   Var a = s2_seed, Var c = s2_cluster, Var eps = s2_cell.

The estimate is the mean of the R x G cell means; its variance is ``s2_seed / R + s2_cluster / G + s2_cell /
(R G)``. The two-way analysis of variance without replication gives the mean squares

    MS_S = G sum_s (m[s, .] - m)^2 / (R - 1),       E MS_S = G s2_seed + s2_cell,
    MS_G = R sum_g (m[., g] - m)^2 / (G - 1),       E MS_G = R s2_cluster + s2_cell,
    MS_E = sum (m[s, g] - m[s, .] - m[., g] + m)^2 / ((R - 1)(G - 1)),   E MS_E = s2_cell,

so each component is estimated by moments and clipped at zero, and the variance of the mean by
``sum_i c_i MS_i / (R G)`` (``c = (1, 1, -1)`` when no component is clipped). Its degrees of freedom are
Satterthwaite's, ``(sum_i c_i MS_i)^2 / sum_i (c_i MS_i)^2 / df_i``, less one when the seed component is
present (never below R - 1): with 3 seeds and a seed component that dominates, 2; with a negligible one, many.
With one seed only the cluster term is left (``MS_G / G``, G - 1 degrees of freedom); with one cluster only the
seed term (``MS_S / R``).

Several statistics of the same units (e.g. the two arms of a paired comparison) get component *matrices* from
the mean cross-products (:func:`joint_components`), which :func:`simulate_cells` draws from: the sizes, powers
and coverages of :mod:`analysis.decisions` are simulated at the measured components this way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

__all__ = [
    "Components", "LinearEstimate", "UnitModel", "batch_estimates", "cell_means", "estimate", "estimate_cells",
    "joint_components", "simulate_cells",
]  # fmt: skip


def cell_means(values: np.ndarray, clusters: np.ndarray | None, field: str = "values") -> np.ndarray:
    """``(R, G)`` means of the units of each cluster present at each seed.

    A cluster with no unit at some seed (few held-out prompts per seed) is merged with the next cluster in label
    order until every cell holds a unit, so G can be smaller than the number of labels.

    Args:
        values: ``(R, U)`` (or ``(U,)``: one seed) values; NaN marks a unit absent at that seed.
        clusters: ``(U,)`` cluster labels (any sortable labels); None: every unit is its own cluster (then no
            unit may be absent).
        field: The argument's name in error messages.

    Raises:
        ValueError: Naming ``field``, for a bad shape, infinite values, labels of another length, a unit absent
            at some seed without cluster labels, or fewer than two units at some seed.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] < 2 or np.isinf(a).any():
        raise ValueError(f"{field}: expected finite (n_units,) or (n_seeds, n_units) values (NaN: absent unit), "
                         f"got shape {np.shape(values)}")
    present = np.isfinite(a)
    if clusters is None and not present.all():
        raise ValueError(f"{field}: some units are absent at some seeds; pass cluster labels (e.g. prompt templates)")
    if (present.sum(axis=1) < 2).any():
        raise ValueError(f"{field}: every seed needs at least two units")
    labels = np.arange(a.shape[1]) if clusters is None else np.asarray(clusters)
    if labels.shape != (a.shape[1],):
        raise ValueError(f"{field}: {a.shape[1]} units but {labels.shape} cluster labels")
    index = np.searchsorted(np.unique(labels), labels)
    while True:
        n = index.max() + 1
        counts = np.stack([np.bincount(index, weights=p.astype(float), minlength=n) for p in present])
        empty = np.flatnonzero((counts == 0).any(axis=0))
        if not len(empty):
            break
        g = empty[0]
        index = np.where(index == g, g + 1 if g + 1 < n else g - 1, index)  # merge into a neighbour
        index = np.searchsorted(np.unique(index), index)
    sums = np.stack([np.bincount(index, weights=np.where(p, row, 0.0), minlength=n)
                     for p, row in zip(present, a, strict=True)])
    return sums / counts


def _mean_squares(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MS_S, MS_G, MS_E of ``(..., R, G)`` cells (NaN where a factor has one level)."""
    r, g = cells.shape[-2:]
    grand = cells.mean(axis=(-2, -1), keepdims=True)
    rows = cells.mean(axis=-1, keepdims=True)
    cols = cells.mean(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ms_s = g * ((rows - grand) ** 2).sum(axis=(-2, -1)) / (r - 1) if r > 1 else np.full(cells.shape[:-2], np.nan)
        ms_g = r * ((cols - grand) ** 2).sum(axis=(-2, -1)) / (g - 1) if g > 1 else np.full(cells.shape[:-2], np.nan)
        resid = cells - rows - cols + grand
        df_e = (r - 1) * (g - 1)
        ms_e = (resid**2).sum(axis=(-2, -1)) / df_e if df_e > 0 else np.full(cells.shape[:-2], np.nan)
    return ms_s, ms_g, ms_e


def _variance_and_df(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(variance of the grand mean, Satterthwaite df, components (..., 3))`` of ``(..., R, G)`` cells."""
    r, g = cells.shape[-2:]
    ms_s, ms_g, ms_e = _mean_squares(cells)
    if r > 1 and g > 1:
        seed_on, cluster_on = ms_s > ms_e, ms_g > ms_e
        # Coefficients of MS_S, MS_G, MS_E in R G Var: each clipped component drops its MS and the MS_E it subtracts.
        c_s, c_g = seed_on.astype(float), cluster_on.astype(float)
        c_e = 1.0 - c_s - c_g
        total = c_s * ms_s + c_g * ms_g + c_e * ms_e
        with np.errstate(invalid="ignore", divide="ignore"):
            denom = (c_s * ms_s) ** 2 / (r - 1) + (c_g * ms_g) ** 2 / (g - 1) + (c_e * ms_e) ** 2 / ((r - 1) * (g - 1))
            df = np.where(denom > 0, total**2 / denom, np.inf)
        # Satterthwaite's df is too large exactly when MS_S comes out small (its df estimate and the SE are
        # correlated): one-sided misses of 0.052-0.056 at R = 3 where the seed term dominates (simulated). One
        # df less, never below the seeds' R - 1, keeps them <= 0.05 down to R = 3 (tests/analysis/test_decisions.py).
        df = np.where(seed_on, np.maximum(df - 1.0, r - 1.0), df)
        parts = np.stack([np.maximum(ms_s - ms_e, 0) / g, np.maximum(ms_g - ms_e, 0) / r, ms_e], axis=-1)
        return total / (r * g), df, parts
    if r > 1:  # one cluster: the seed means are the units
        zeros = np.zeros_like(ms_s)
        return ms_s / r, np.full_like(ms_s, r - 1.0), np.stack([ms_s, zeros, zeros], axis=-1)
    if g > 1:  # one seed: the cluster means are the units
        zeros = np.zeros_like(ms_g)
        return ms_g / g, np.full_like(ms_g, g - 1.0), np.stack([zeros, ms_g, zeros], axis=-1)
    raise ValueError("values: need at least two seeds or two clusters for an interval")


@dataclasses.dataclass(frozen=True)
class Components:
    """Variance components of cell means (``s2_seed, s2_cluster, s2_cell``) for ``n_seeds x n_clusters`` cells.

    Scalars for one statistic, ``(k, k)`` matrices for k statistics of the same units (:func:`joint_components`).
    """

    seed: np.ndarray
    cluster: np.ndarray
    cell: np.ndarray
    n_seeds: int
    n_clusters: int

    @property
    def variance(self) -> np.ndarray:
        """Variance of the grand mean of the cells: ``seed / R + cluster / G + cell / (R G)``."""
        r, g = self.n_seeds, self.n_clusters
        return self.seed / r + self.cluster / g + self.cell / (r * g)


@dataclasses.dataclass(frozen=True)
class LinearEstimate:
    """The grand mean of one statistic's cells with its variance, degrees of freedom and components.

    Attributes:
        value: The mean of the R x G cell means.
        se: Its standard error (the square root of the clipped moment estimate).
        df: Satterthwaite's degrees of freedom of ``se``.
        components: The clipped moment estimates (scalars).
        cells: ``(R, G)`` cell means.
    """

    value: float
    se: float
    df: float
    components: Components
    cells: np.ndarray

    def bounds(self, alpha: float) -> tuple[float, float]:
        """The lower and upper one-sided ``1 - alpha`` bounds (together a two-sided ``1 - 2 alpha`` interval)."""
        half = float(stats.t.ppf(1 - alpha, self.df)) * self.se if self.se > 0 else 0.0
        return self.value - half, self.value + half

    def shifted(self, offset: float) -> LinearEstimate:
        """The same estimate of ``statistic + offset``."""
        return dataclasses.replace(self, value=self.value + offset, cells=self.cells + offset)


def estimate(values: np.ndarray, clusters: np.ndarray | None = None, field: str = "values") -> LinearEstimate:
    """The mean of ``(R, U)`` values over seeds and clustered units, with its SE and degrees of freedom.

    Args:
        values: ``(R, U)`` (or ``(U,)``) per-seed, per-unit values; NaN marks an absent unit.
        clusters: ``(U,)`` cluster labels of the units (None: each unit its own cluster).
        field: The argument's name in error messages.
    """
    cells = cell_means(values, clusters, field)
    return estimate_cells(cells)


def estimate_cells(cells: np.ndarray) -> LinearEstimate:
    """:func:`estimate` from ``(R, G)`` cell means."""
    cells = np.asarray(cells, dtype=np.float64)
    var, df, parts = _variance_and_df(cells)
    comps = Components(float(parts[0]), float(parts[1]), float(parts[2]), *cells.shape)
    return LinearEstimate(float(cells.mean()), float(np.sqrt(max(float(var), 0.0))), float(df), comps, cells)


def batch_estimates(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(value, se, df)`` of each ``(R, G)`` table of ``(..., R, G)`` cells (vectorised :func:`estimate_cells`)."""
    var, df, _ = _variance_and_df(cells)
    return cells.mean(axis=(-2, -1)), np.sqrt(np.maximum(var, 0.0)), df


def _psd(matrix: np.ndarray) -> np.ndarray:
    """The nearest positive semi-definite matrix (negative eigenvalues set to zero)."""
    sym = (matrix + matrix.T) / 2
    w, v = np.linalg.eigh(sym)
    return (v * np.maximum(w, 0.0)) @ v.T


def joint_components(cells: np.ndarray) -> Components:
    """``(k, k)`` component matrices of k statistics' ``(k, R, G)`` cells, from the mean cross-products.

    Each matrix is the moment estimate projected onto the positive semi-definite cone (its diagonal can
    therefore differ slightly from the univariate clipped estimates).
    """
    k, r, g = cells.shape
    grand = cells.mean(axis=(1, 2), keepdims=True)
    rows = cells.mean(axis=2, keepdims=True) - grand
    cols = cells.mean(axis=1, keepdims=True) - grand
    resid = cells - rows - cols - grand
    zero = np.zeros((k, k))
    mp_s = g * np.einsum("ir,jr->ij", rows[:, :, 0], rows[:, :, 0]) / (r - 1) if r > 1 else zero
    mp_g = r * np.einsum("ig,jg->ij", cols[:, 0], cols[:, 0]) / (g - 1) if g > 1 else zero
    if r > 1 and g > 1:
        mp_e = np.einsum("irg,jrg->ij", resid, resid) / ((r - 1) * (g - 1))
        return Components(_psd((mp_s - mp_e) / g), _psd((mp_g - mp_e) / r), _psd(mp_e), r, g)
    if r > 1:
        return Components(_psd(mp_s), zero, zero, r, g)
    return Components(zero, _psd(mp_g), zero, r, g)


def simulate_cells(mean: np.ndarray | float, components: Components, draws: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``(draws, k, R, G)`` (or ``(draws, R, G)`` for scalar components) normal cells with these components.

    Args:
        mean: ``(k,)`` true means (or a scalar).
        components: Scalars or ``(k, k)`` matrices.
        draws: Simulated studies.
        rng: Random generator.
    """
    scalar = np.ndim(components.seed) == 0
    seed, cluster, cell = (np.atleast_2d(np.asarray(m, dtype=np.float64))
                           for m in (components.seed, components.cluster, components.cell))  # fmt: skip
    k, r, g = seed.shape[0], components.n_seeds, components.n_clusters

    def draw(cov: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        w, v = np.linalg.eigh((cov + cov.T) / 2)
        root = v * np.sqrt(np.maximum(w, 0.0))
        return np.einsum("ij,...j->...i", root, rng.standard_normal((*shape, k)))

    out = (draw(seed, (draws, r))[:, :, None, :] + draw(cluster, (draws, g))[:, None, :, :]
           + draw(cell, (draws, r, g)))  # (draws, R, G, k)
    out = np.moveaxis(out, -1, 1) + np.reshape(np.asarray(mean, dtype=np.float64), (1, -1, 1, 1))
    return out[:, 0] if scalar else out


@dataclasses.dataclass(frozen=True)
class UnitModel:
    """Per-unit variance components of ``(seed, prompt)`` values on an openers x subjects prompt grid.

    The value of prompt (o, u) at seed s is ``a_s + c_o + d_u + p_(o,u) + eps_(s,o,u)``: a seed effect, an opener
    (cluster) effect, a subject effect shared across openers (which the cell analysis does not model: its
    simulated coverage says what that costs), a prompt effect shared by the seeds, and a per-seed residual (one
    policy sample's noise and, with a reference pool per seed, the pool mean's).
    """

    seed: float
    opener: float
    subject: float
    prompt: float
    residual: float

    def simulate(self, mean: float, seeds: int, openers: int, subjects: int, held_out: int, draws: int,
                 rng: np.random.Generator, per_seed_split: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``((draws, seeds, openers * subjects) values, NaN where not held out; (units,) opener labels)``.

        Args:
            mean: The true mean.
            seeds: R.
            openers: Prompt templates (clusters).
            subjects: Subjects per template.
            held_out: Prompts held out per seed (drawn without replacement; the same for every seed unless
                ``per_seed_split``).
            draws: Simulated studies.
            rng: Random generator.
            per_seed_split: Each seed holds out its own prompts.
        """
        units = openers * subjects
        sd = np.sqrt([self.seed, self.opener, self.subject, self.prompt, self.residual])
        values = (mean + sd[0] * rng.standard_normal((draws, seeds, 1))
                  + np.repeat(sd[1] * rng.standard_normal((draws, 1, openers)), subjects, axis=2)
                  + np.tile(sd[2] * rng.standard_normal((draws, 1, subjects)), (1, 1, openers))
                  + sd[3] * rng.standard_normal((draws, 1, units))
                  + sd[4] * rng.standard_normal((draws, seeds, units)))  # fmt: skip
        keys = rng.random((draws, seeds if per_seed_split else 1, units))
        ranks = np.argsort(np.argsort(keys, axis=2), axis=2)
        mask = np.broadcast_to(ranks < held_out, values.shape)
        return np.where(mask, values, np.nan), np.repeat(np.arange(openers), subjects)
