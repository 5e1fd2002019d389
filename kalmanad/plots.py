"""Plots of fitted continuous-time models (matplotlib).

Each function draws on a matplotlib ``Axes`` (a new figure when none is given) and
returns the figure, so it works in notebooks, scripts and the command line alike.
Traces and pair plots are ArviZ's job (``arviz.plot_trace``, ``arviz.plot_pair``).

Credible bands over posterior draws: each draw contributes a Gaussian (mean, sd) for
the plotted quantity; the band is the pooled quantiles of one normal draw per posterior
draw and per time point, i.e. of the posterior mixture.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "mixture_band",
    "plot_discrete_effects",
    "plot_forecast",
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


def mixture_band(means, sds, level: float = 0.9, *, seed: int = 0, draws_per: int = 20):
    """Pointwise mean and central ``level`` band of a mixture of Gaussians.

    Args:
        means: (D, T) component means (one row per posterior draw), or (T,).
        sds: (D, T) component standard deviations (same shape as ``means``).
        level: probability mass of the band.
        seed: seed of the Monte Carlo draws that pool the components.
        draws_per: normal draws per component.

    Returns:
        ``(center, lower, upper)``, each (T,): the mixture mean and the band.
    """
    means = np.atleast_2d(np.asarray(means, float))
    sds = np.atleast_2d(np.asarray(sds, float))
    z = np.random.default_rng(seed).standard_normal((draws_per, *means.shape))
    pooled = (means + sds * z).reshape(-1, means.shape[-1])
    lo, hi = np.quantile(pooled, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return means.mean(axis=0), lo, hi


def plot_states(
    times,
    means,
    covs,
    *,
    y=None,
    observation=None,
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
    if observation is not None:
        h = np.asarray(observation, float)
        h = np.broadcast_to(h, (means.shape[0], *h.shape[-2:]))
        means = np.einsum("dmn,dtn->dtm", h, means)
        covs = np.einsum("dmn,dtnk,dlk->dtml", h, covs, h)
    k = means.shape[-1]
    sds = np.sqrt(np.clip(np.diagonal(covs, axis1=-2, axis2=-1), 0.0, None))
    fig, axes = _axes(ax, k)
    for i in range(k):
        a = axes[min(i, len(axes) - 1)]
        c, lo, hi = mixture_band(means[..., i], sds[..., i], level, seed=i)
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
        c, lo, hi = mixture_band(mean[..., i], sds[..., i], level, seed=i)
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
