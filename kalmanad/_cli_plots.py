"""The figures of ``kalmanad fit``: smoothed states and discrete-time effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["dt_effects", "plot_dt_effects", "plot_fit"]


def plot_fit(spec, idata, times, y, inputs, kwargs, subjects, png: Path) -> None:
    """The smoothed signal (posterior mean and band) over the data, one panel per
    subject (at most a few), written to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kalmanad.inference import sde_draws, smoothed_states
    from kalmanad.plots import plot_states

    means, covs = smoothed_states(spec, idata, times, y, inputs, max_draws=100, **kwargs)
    samples = {
        k: np.asarray(v.values.reshape((-1, *v.values.shape[2:])))[:1]
        for k, v in idata.posterior.data_vars.items()
    }
    # The observation matrix of each subject (it can depend on subject parameters).
    d = sde_draws(spec, samples, times, y, inputs, **kwargs)["y"]
    h = np.asarray(d.model.observation)[0]
    offset = np.asarray(d.model.observation_intercept)[0]
    means, covs = np.asarray(means), np.asarray(covs)
    if subjects is None:
        panels = [(None, np.asarray(times), np.asarray(y), means, covs, h, offset)]
    else:
        k = min(4, len(subjects))
        hs = np.broadcast_to(h, (len(subjects), *h.shape[-2:]))
        os_ = np.broadcast_to(offset, (len(subjects), *offset.shape[-1:]))
        panels = [
            (
                subjects[i],
                np.asarray(times)[i],
                np.asarray(y)[i],
                means[:, i],
                covs[:, i],
                hs[i],
                os_[i],
            )
            for i in range(k)
        ]
    m = spec.m
    fig, axes = plt.subplots(
        m, len(panels), figsize=(4.5 * len(panels) + 2, 2.8 * m), squeeze=False, sharex="col"
    )
    for j, (label, t, yy, mu, cv, hh, off) in enumerate(panels):
        ok = np.isfinite(t)
        # Pad rows (repeated last time, all-NaN y) are dropped from the picture.
        keep = ok & ~(np.r_[False, np.diff(t) == 0] & np.all(np.isnan(yy), axis=1))
        plot_states(
            t[keep],
            mu[:, keep],
            cv[:, keep],
            y=yy[keep] - off,
            observation=hh,
            names=[f"{n} − offset" if np.any(off) else n for n in spec.manifest],
            ax=axes[:, j],
        )
        if label is not None:
            axes[0, j].set_title(f"subject {label}")
    fig.suptitle(f"{spec.name}: smoothed signal (posterior mean, 90% band) and data")
    fig.tight_layout()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)


def dt_effects(spec, idata, times, y, inputs, kwargs, subjects, *, max_draws=200, n_dts=60):
    """Posterior draws of the discrete-time effects e^{AΔt} over a grid of intervals.

    Up to ``max_draws`` draws (evenly thinned) of the drift A. For a panel whose drift
    differs between subjects, the first subject's. The grid runs from 0 to five times
    the slowest time scale 1/min|Re λ(A)| (posterior median), where the effects have
    decayed to e^-5 of their size; for a drift with an eigenvalue of zero real part
    (a random walk), to the span of the observation times.

    Returns:
        ``(dts (K,), effects (D, K, n, n), subject label or None)``.
    """
    from kalmanad.inference import discrete_time_effects, sde_draws

    flat = {
        k: np.asarray(v.values).reshape((-1, *v.values.shape[2:]))
        for k, v in idata.posterior.data_vars.items()
    }
    n_draws = len(next(iter(flat.values())))
    keep = np.unique(np.linspace(0, n_draws - 1, min(max_draws, n_draws)).round().astype(int))
    samples = {k: v[keep] for k, v in flat.items()}
    site = next(iter(sde_draws(spec, samples, times, y, inputs, **kwargs).values()))
    drift = np.asarray(site.model.drift, float)
    label = None
    if drift.ndim == 4:  # (draws, subjects, n, n)
        if not np.allclose(drift, drift[:, :1]):
            label = subjects[0] if subjects is not None else 0
        drift = drift[:, 0]
    rates = np.abs(np.linalg.eigvals(drift).real).min(axis=-1)
    slowest = float(np.median(rates))
    t = np.asarray(times, float)
    span = float(np.nanmax(t) - np.nanmin(t)) or 1.0
    dt_max = 5.0 / slowest if slowest > 0 and 5.0 / slowest < 1e3 * span else span
    dts = np.linspace(0.0, dt_max, n_dts)
    return dts, np.asarray(discrete_time_effects(drift, dts)), label


def plot_dt_effects(spec, idata, times, y, inputs, kwargs, subjects, png: Path) -> None:
    """The figure of :func:`dt_effects`, written to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kalmanad.plots import plot_discrete_effects

    dts, effects, label = dt_effects(spec, idata, times, y, inputs, kwargs, subjects)
    title = f"{spec.name}: discrete-time effects e^(AΔt), posterior median and 90% band"
    if label is not None:
        title += f" (subject {label})"
    fig = plot_discrete_effects(dts, effects, names=spec.latent, title=title)
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
