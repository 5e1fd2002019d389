"""Plots of fitted continuous-time models (matplotlib).

Each function draws on a matplotlib ``Axes`` (a new figure when none is given) and
returns the figure, so it works in notebooks, scripts and the command line alike.
Traces and pair plots are ArviZ's job (``arviz.plot_trace``, ``arviz.plot_pair``).

Credible bands over posterior draws: each draw contributes a Gaussian (mean, sd) for
the plotted quantity; the band is the pointwise central interval of their equally
weighted mixture (the posterior predictive distribution), computed exactly by
:func:`mixture_band`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "mixture_band",
    "plot_discrete_effects",
    "plot_forecast",
    "plot_posterior_predictive",
    "plot_states",
]


def _axes(ax, nrows: int = 1, figsize=None):
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = np.atleast_1d(ax).ravel()
        return axes[0].figure, axes
    fig, axes = plt.subplots(
        nrows, 1, figsize=figsize or (8, 2.6 * nrows), squeeze=False, sharex=True
    )
    return fig, axes[:, 0]


def mixture_band(means, sds, level: float = 0.9, *, iterations: int = 40):
    """Pointwise mean and central ``level`` band of an equally weighted Gaussian mixture.

    At each time point the D components N(means[d, t], sds[d, t]²) (one per posterior
    draw) form a mixture; its quantiles are found by bisection on the mixture's
    distribution function, so the band is exact (to about ``range / 2**iterations``)
    and smooth in t, with no Monte Carlo noise.

    Args:
        means: (D, T) component means (one row per posterior draw), or (T,).
        sds: (D, T) component standard deviations (same shape as ``means``; zero is
            allowed: a point mass).
        level: probability mass of the band, in (0, 1).
        iterations: bisection steps.

    Returns:
        ``(center, lower, upper)``, each (T,): the mixture mean and the band.

    Raises:
        ValueError: ``level`` outside (0, 1), or shapes that do not match.
    """
    from scipy.special import ndtr

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    means = np.atleast_2d(np.asarray(means, float))
    sds = np.atleast_2d(np.asarray(sds, float))
    if means.shape != sds.shape:
        raise ValueError(f"means {means.shape} and sds {sds.shape} must have the same shape")
    sds = np.abs(sds)
    point = sds == 0
    inv = 1.0 / np.where(point, 1.0, sds)

    def cdf(x):  # (T,) -> (T,): mixture P(X <= x) at each time point
        c = ndtr((x - means) * inv)
        if point.any():
            c = np.where(point, (x >= means).astype(float), c)
        return c.mean(axis=0)

    bounds = []
    for p in ((1 - level) / 2, (1 + level) / 2):
        lo = np.min(means - 9.0 * sds, axis=0)
        hi = np.max(means + 9.0 * sds, axis=0)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = cdf(mid) < p
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        bounds.append(0.5 * (lo + hi))
    return means.mean(axis=0), bounds[0], bounds[1]


def plot_states(
    times,
    means,
    covs,
    *,
    y=None,
    observation=None,
    intercept=None,
    noise=None,
    names: Sequence[str] | None = None,
    level: float = 0.9,
    ax=None,
    title: str | None = None,
):
    """Filtered or smoothed trajectories with credible bands, over the data.

    Args:
        times: (T,) times.
        means: (T, n) or (D, T, n) state means (D posterior draws).
        covs: (T, n, n) or (D, T, n, n) state covariances.
        y: optional (T, m) observations to overlay (NaN = missing, not drawn).
        observation: optional (m, n) matrix H (or (D, m, n)): plot H x (the signal in
            observation space, one panel per channel) instead of the raw states.
        intercept: optional (m,) or (D, m) observation intercept d: plot H x + d
            (needs ``observation``).
        noise: optional (m, m) or (D, m, m) measurement-noise covariance R added to the
            band (needs ``observation``): the band is then predictive for new
            observations, H P Hᵀ + R, rather than for the signal.
        names: panel labels (states, or channels when ``observation`` is given).
        level: band probability.

    Returns:
        The matplotlib figure.
    """
    times = np.asarray(times, float)
    means = np.asarray(means, float)
    covs = np.asarray(covs, float)
    if means.ndim == 2:
        means, covs = means[None], covs[None]
    if observation is None and (intercept is not None or noise is not None):
        raise ValueError("intercept and noise are in observation space: pass observation too")
    if observation is not None:
        h = np.asarray(observation, float)
        h = np.broadcast_to(h, (means.shape[0], *h.shape[-2:]))
        means = np.einsum("dmn,dtn->dtm", h, means)
        covs = np.einsum("dmn,dtnk,dlk->dtml", h, covs, h)
        if intercept is not None:
            d = np.asarray(intercept, float)
            means = means + np.broadcast_to(d, (means.shape[0], means.shape[-1]))[:, None, :]
        if noise is not None:
            r = np.asarray(noise, float)
            covs = covs + np.broadcast_to(r, (covs.shape[0], *covs.shape[-2:]))[:, None]
    k = means.shape[-1]
    sds = np.sqrt(np.clip(np.diagonal(covs, axis1=-2, axis2=-1), 0.0, None))
    fig, axes = _axes(ax, k)
    for i in range(k):
        a = axes[min(i, len(axes) - 1)]
        c, lo, hi = mixture_band(means[..., i], sds[..., i], level)
        a.fill_between(
            times, lo, hi, color="C0", alpha=0.25, lw=0, label=f"{int(level * 100)}% band"
        )
        a.plot(times, c, color="C0", lw=1.5, label="mean")
        if y is not None and observation is not None:
            yi = np.asarray(y, float)[:, i]
            ok = np.isfinite(yi)
            a.plot(times[ok], yi[ok], "o", ms=3, color="k", alpha=0.7, label="data")
        a.set_ylabel(names[i] if names is not None and i < len(names) else f"[{i}]")
    axes[0].legend(loc="best", fontsize="small", frameon=False)
    axes[-1].set_xlabel("time")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    return fig


def plot_forecast(
    times,
    y,
    new_times,
    mean,
    cov,
    *,
    names: Sequence[str] | None = None,
    level: float = 0.9,
    ax=None,
    title: str | None = None,
):
    """Observed data followed by forecast means and predictive bands.

    Args:
        times: (T,) observation times; y: (T, m) data.
        new_times: (K,) forecast times.
        mean: (K, m) or (D, K, m) predictive observation means (D posterior draws).
        cov: (K, m, m) or (D, K, m, m) predictive observation covariances.

    Returns:
        The matplotlib figure.
    """
    y = np.asarray(y, float)
    mean = np.asarray(mean, float)
    cov = np.asarray(cov, float)
    if mean.ndim == 2:
        mean, cov = mean[None], cov[None]
    sds = np.sqrt(np.clip(np.diagonal(cov, axis1=-2, axis2=-1), 0.0, None))
    m = y.shape[1]
    fig, axes = _axes(ax, m)
    new_times = np.asarray(new_times, float)
    for i in range(m):
        a = axes[min(i, len(axes) - 1)]
        ok = np.isfinite(y[:, i])
        a.plot(np.asarray(times)[ok], y[ok, i], "o-", ms=3, lw=0.8, color="k", label="data")
        c, lo, hi = mixture_band(mean[..., i], sds[..., i], level)
        a.fill_between(
            new_times, lo, hi, color="C1", alpha=0.3, lw=0, label=f"{int(level * 100)}% predictive"
        )
        a.plot(new_times, c, color="C1", lw=1.5, label="forecast mean")
        a.set_ylabel(names[i] if names is not None and i < len(names) else f"y[{i}]")
    axes[0].legend(loc="best", fontsize="small", frameon=False)
    axes[-1].set_xlabel("time")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    return fig


def plot_discrete_effects(
    dts,
    effects,
    *,
    names: Sequence[str] | None = None,
    level: float = 0.9,
    ax=None,
    title: str | None = "Discrete-time effects over the time interval",
):
    """ctsem-style plot of the auto- and cross-effects e^{AΔt} against Δt.

    Args:
        dts: (K,) time intervals.
        effects: (K, n, n) or (D, K, n, n) from
            :func:`kalmanad.inference.discrete_time_effects` (D posterior draws).
        names: state names; line ``i ← j`` is the effect of state j on state i.
        level: band probability (quantiles over draws).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    effects = np.asarray(effects, float)
    if effects.ndim == 3:
        effects = effects[None]
    n = effects.shape[-1]
    names = list(names) if names is not None else [f"x{i}" for i in range(n)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    else:
        fig = ax.figure
    dts = np.asarray(dts, float)
    q = np.quantile(effects, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
    for idx, (i, j) in enumerate((i, j) for i in range(n) for j in range(n)):
        color = f"C{idx % 10}"
        style = "-" if i == j else "--"
        ax.fill_between(dts, q[0, :, i, j], q[2, :, i, j], color=color, alpha=0.15, lw=0)
        ax.plot(dts, q[1, :, i, j], style, color=color, lw=1.5, label=f"{names[i]} ← {names[j]}")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("time interval Δt")
    ax.set_ylabel("effect")
    ax.legend(fontsize="small", frameon=False, ncol=2 if n > 2 else 1)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_posterior_predictive(
    times,
    y,
    draws,
    *,
    kind: str = "series",
    names: Sequence[str] | None = None,
    level: float = 0.9,
    n_lines: int | None = None,
    seed: int = 0,
    ax=None,
    title: str | None = None,
):
    """Posterior predictive check: the observed series against replicated data sets.

    Replicated data are draws of the whole observation vector from the model at
    posterior draws of the parameters (e.g. ``numpyro.infer.Predictive`` on the model's
    ``"y"`` site, or :func:`kalmanad.simulate` at each draw). A model that fits
    produces replicates that look like the data.

    Args:
        times: (T,) observation times.
        y: (T, m) observations (NaN = missing; missing entries are not drawn and do
            not count), or (T,) for one channel.
        draws: (D, T, m) replicated observations (or (D, T) for one channel).
        kind: ``"series"``: per channel, the pointwise central ``level`` band of the
            replicates, ``n_lines`` replicates as thin lines and the data as points;
            the legend gives the fraction of observed points inside the band.
            ``"density"``: per channel, kernel density estimates of the marginal
            distribution of ``n_lines`` replicates (thin) and of the data (bold), as
            in ``arviz.plot_ppc``.
        names: channel labels.
        level: band probability (``kind="series"``).
        n_lines: number of replicates drawn individually (chosen at random); default
            3 for ``"series"`` (more hide the data) and 30 for ``"density"``.
        seed: seed of that choice.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: an unknown ``kind``, or ``draws`` whose shape does not match ``y``.
    """
    if kind not in ("series", "density"):
        raise ValueError(f"kind must be 'series' or 'density', got {kind!r}")
    times = np.asarray(times, float)
    y = np.asarray(y, float)
    draws = np.asarray(draws, float)
    if y.ndim == 1:
        y = y[:, None]
    if draws.ndim == 2 and y.shape[1] == 1:
        draws = draws[..., None]
    if draws.ndim != 3 or draws.shape[1:] != y.shape or times.shape != (y.shape[0],):
        raise ValueError(
            f"expected times (T,), y (T, m) and draws (D, T, m); got times {times.shape}, "
            f"y {y.shape} and draws {draws.shape}"
        )
    m = y.shape[1]
    if n_lines is None:
        n_lines = 3 if kind == "series" else 30
    lines = np.random.default_rng(seed).permutation(draws.shape[0])[: max(0, n_lines)]
    fig, axes = _axes(ax, m)
    if kind == "density":
        import matplotlib.pyplot as plt

        if ax is None:  # the panels do not share an x axis: a fresh grid
            plt.close(fig)
            fig, grid = plt.subplots(1, m, figsize=(4.2 * m, 3.2), squeeze=False)
            axes = grid[0]
    for i in range(m):
        a = axes[min(i, len(axes) - 1)]
        label = names[i] if names is not None and i < len(names) else f"y[{i}]"
        panel = _ppc_series_panel if kind == "series" else _ppc_density_panel
        panel(a, times, y[:, i], draws[:, :, i], lines, level, label)
    if kind == "series":
        # Above the panel: a legend inside would hide data.
        axes[0].legend(
            loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize="small", frameon=False
        )
        axes[-1].set_xlabel("time")
    else:
        axes[0].legend(loc="best", fontsize="small", frameon=False)
    if title:
        (fig.suptitle if kind == "series" or m > 1 else axes[0].set_title)(title)
    fig.tight_layout()
    return fig


def _ppc_series_panel(a, times, y, draws, lines, level, label):
    """One channel of the ``"series"`` check: y (T,), draws (D, T)."""
    ok = np.isfinite(y)
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    inside = np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok])) if ok.any() else np.nan
    band = f"{int(level * 100)}% of replicates"
    a.fill_between(times, lo, hi, color="C0", alpha=0.25, lw=0, label=band)
    for j, d in enumerate(lines):
        label_j = "replicates" if j == 0 else None
        a.plot(times, draws[d], color="C0", lw=0.7, alpha=0.6, label=label_j)
    a.plot(times[ok], y[ok], "o", ms=3, color="k", label=f"data ({inside:.0%} inside the band)")
    a.set_ylabel(label)


def _ppc_density_panel(a, times, y, draws, lines, level, label):
    """One channel of the ``"density"`` check: y (T,), draws (D, T)."""
    from scipy.stats import gaussian_kde

    ok = np.isfinite(y)
    obs = y[ok]
    rep = draws[:, ok]
    finite = rep[np.isfinite(rep)]
    lo, hi = np.quantile(np.concatenate([obs, finite]), [0.001, 0.999])
    pad = 0.1 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, 200)
    for j, d in enumerate(lines):
        r = rep[d][np.isfinite(rep[d])]
        if r.size > 1 and np.ptp(r) > 0:
            label_j = "replicates" if j == 0 else None
            a.plot(grid, gaussian_kde(r)(grid), color="C0", lw=0.6, alpha=0.4, label=label_j)
    if obs.size > 1 and np.ptp(obs) > 0:
        a.plot(grid, gaussian_kde(obs)(grid), color="k", lw=2.0, label="data")
    a.set_xlabel(label)
    a.set_ylabel("density")
