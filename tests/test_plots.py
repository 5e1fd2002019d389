"""kalmanad.plots: what each plot draws (Agg backend), the exact mixture bands, and the
errors for inputs that cannot be plotted."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from scipy.stats import norm

from kalmanad.plots import (
    mixture_band,
    plot_discrete_effects,
    plot_forecast,
    plot_posterior_predictive,
    plot_states,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _band_limits(ax):
    """(x, lower, upper) of the first fill_between band of an axes."""
    verts = _bands(ax)[0].get_paths()[0].vertices
    # fill_between's polygon: a start point, the lower edge forward, the last upper
    # point, the upper edge backward, a closing point (2n + 3 vertices).
    n = (len(verts) - 3) // 2
    x = verts[1 : n + 1, 0]
    lower = verts[1 : n + 1, 1]
    upper = verts[n + 2 : 2 * n + 2, 1][::-1]
    return x, lower, upper


# ----------------------------------------------------------------------- mixture_band


def test_mixture_band_single_gaussian_is_exact():
    center, lo, hi = mixture_band(np.full(4, 1.5), np.full(4, 2.0), level=0.8)
    np.testing.assert_allclose(center, 1.5)
    np.testing.assert_allclose(lo, norm.ppf(0.1, 1.5, 2.0), rtol=1e-10)
    np.testing.assert_allclose(hi, norm.ppf(0.9, 1.5, 2.0), rtol=1e-10)


def test_mixture_band_matches_monte_carlo_of_the_mixture():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(30, 5)) * np.array([0.1, 1, 3, 0, 10])
    sds = rng.uniform(0.2, 2.0, size=(30, 5))
    _, lo, hi = mixture_band(means, sds, level=0.9)
    x = means + sds * rng.standard_normal((20_000, 30, 5))
    frac_below = np.mean(x < lo, axis=(0, 1))
    frac_above = np.mean(x > hi, axis=(0, 1))
    np.testing.assert_allclose(frac_below, 0.05, atol=0.005)
    np.testing.assert_allclose(frac_above, 0.05, atol=0.005)


def test_mixture_band_point_masses_and_errors():
    center, lo, hi = mixture_band(np.array([[0.0, 1.0]]), np.zeros((1, 2)))
    np.testing.assert_allclose([center, lo, hi], [[0, 1]] * 3, atol=1e-9)
    with pytest.raises(ValueError, match="level"):
        mixture_band(np.zeros(3), np.ones(3), level=1.0)
    with pytest.raises(ValueError, match="same shape"):
        mixture_band(np.zeros((2, 3)), np.ones((2, 4)))


# ------------------------------------------------------------------------- plot_states


def _states(draws=7, T=25, n=2, seed=0):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0, T))
    means = rng.normal(size=(draws, T, n)).cumsum(axis=1) * 0.1
    l = rng.normal(size=(draws, T, n, n)) * 0.3
    covs = l @ np.swapaxes(l, -1, -2) + 0.05 * np.eye(n)
    return times, means, covs


def test_plot_states_one_panel_per_state_with_band_around_mean():
    times, means, covs = _states()
    fig = plot_states(times, means, covs, names=["a", "b"], title="states")
    assert len(fig.axes) == 2
    for i, ax in enumerate(fig.axes):
        assert ax.get_ylabel() == "ab"[i]
        assert len(_bands(ax)) == 1
        (mean_line,) = ax.lines
        x, lower, upper = _band_limits(ax)
        np.testing.assert_allclose(x, times)
        np.testing.assert_allclose(mean_line.get_ydata(), means[..., i].mean(axis=0))
        assert np.all(lower <= mean_line.get_ydata()) and np.all(mean_line.get_ydata() <= upper)
    assert fig.axes[-1].get_xlabel() == "time"
    assert fig.axes[0].get_title() == "states"


def test_plot_states_observation_space_with_intercept_noise_and_data():
    times, means, covs = _states(draws=1, n=2)
    h = np.array([[1.0, 0.5]])
    y = np.where(np.arange(len(times))[:, None] % 4 == 0, np.nan, 1.0)
    fig = plot_states(times, means[0], covs[0], y=y, observation=h, names=["y"])
    (ax,) = fig.axes
    mean_line, data = ax.lines
    np.testing.assert_allclose(mean_line.get_ydata(), means[0] @ h[0])
    assert len(data.get_xdata()) == np.isfinite(y).sum()  # missing values are not drawn
    _, lo0, hi0 = _band_limits(ax)

    fig2 = plot_states(
        times, means[0], covs[0], observation=h, intercept=[10.0], noise=[[4.0]], names=["y"]
    )
    ax2 = fig2.axes[0]
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), means[0] @ h[0] + 10.0)
    _, lo, hi = _band_limits(ax2)
    sd = np.sqrt(np.einsum("i,tij,j->t", h[0], covs[0], h[0]))
    np.testing.assert_allclose(hi0 - lo0, 2 * norm.ppf(0.95) * sd, rtol=1e-8)
    np.testing.assert_allclose(hi - lo, 2 * norm.ppf(0.95) * np.sqrt(sd**2 + 4.0), rtol=1e-8)
    with pytest.raises(ValueError, match="observation"):
        plot_states(times, means[0], covs[0], intercept=[1.0])


def test_plot_states_on_given_axes():
    times, means, covs = _states(n=1)
    fig, ax = plt.subplots()
    out = plot_states(times, means, covs, ax=ax)
    assert out is fig and len(fig.axes) == 1 and len(_bands(ax)) == 1


# ----------------------------------------------------------------------- plot_forecast


def test_plot_forecast_data_then_band():
    rng = np.random.default_rng(1)
    times = np.arange(20.0)
    y = rng.normal(size=(20, 2))
    y[3, 1] = np.nan
    new = 20 + np.arange(1.0, 6.0)
    mean = rng.normal(size=(9, 5, 2))
    cov = np.broadcast_to(np.diag([0.5, 2.0]), (9, 5, 2, 2)) * np.arange(1, 6)[None, :, None, None]
    fig = plot_forecast(times, y, new, mean, cov, names=["u", "v"])
    assert [a.get_ylabel() for a in fig.axes] == ["u", "v"]
    for i, ax in enumerate(fig.axes):
        data, fmean = ax.lines
        assert len(data.get_xdata()) == np.isfinite(y[:, i]).sum()
        x, lower, upper = _band_limits(ax)
        np.testing.assert_allclose(x, new)
        assert np.all(lower < fmean.get_ydata()) and np.all(fmean.get_ydata() < upper)
        assert np.all(np.diff(upper - lower) > 0)  # the variance grows with the horizon


# ------------------------------------------------------------ plot_posterior_predictive


def _ppc(T=40, D=50, m=1, seed=2):
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, 10, T))
    y = rng.normal(size=(T, m))
    draws = rng.normal(size=(D, T, m))
    return times, y, draws


def test_ppc_series_band_lines_and_coverage():
    times, y, draws = _ppc()
    y[5, 0] = np.nan
    fig = plot_posterior_predictive(times, y, draws, n_lines=4, names=["y"], level=0.8)
    (ax,) = fig.axes
    assert len(_bands(ax)) == 1
    assert len(ax.lines) == 4 + 1  # replicates + data
    assert len(ax.lines[-1].get_xdata()) == np.isfinite(y).sum()
    _, lower, upper = _band_limits(ax)
    np.testing.assert_allclose(lower, np.quantile(draws[:, :, 0], 0.1, axis=0))
    np.testing.assert_allclose(upper, np.quantile(draws[:, :, 0], 0.9, axis=0))
    ok = np.isfinite(y[:, 0])
    inside = np.mean((y[ok, 0] >= lower[ok]) & (y[ok, 0] <= upper[ok]))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"data ({inside:.0%} inside the band)" in labels
    assert ax.get_ylabel() == "y" and ax.get_xlabel() == "time"


def test_ppc_density_one_panel_per_channel():
    times, y, draws = _ppc(m=2)
    fig = plot_posterior_predictive(times, y, draws, kind="density", n_lines=6, names=["a", "b"])
    assert len(fig.axes) == 2
    for ax, name in zip(fig.axes, ["a", "b"], strict=True):
        assert len(ax.lines) == 6 + 1
        assert ax.get_xlabel() == name and ax.get_ylabel() == "density"
        data_line = ax.lines[-1]
        dens = data_line.get_ydata()
        grid = data_line.get_xdata()
        assert np.all(dens >= 0)
        assert abs(np.trapezoid(dens, grid) - 1.0) < 0.05  # a density over the data's range


def test_ppc_accepts_one_channel_without_trailing_axis():
    times, y, draws = _ppc()
    fig = plot_posterior_predictive(times, y[:, 0], draws[..., 0], n_lines=0)
    assert len(fig.axes[0].lines) == 1


def test_ppc_bad_input_raises():
    times, y, draws = _ppc()
    with pytest.raises(ValueError, match="kind"):
        plot_posterior_predictive(times, y, draws, kind="histogram")
    with pytest.raises(ValueError, match="draws"):
        plot_posterior_predictive(times, y, draws[:, :-1])
    with pytest.raises(ValueError, match="draws"):
        plot_posterior_predictive(times[:-1], y, draws)


# ----------------------------------------------------------------- plot_discrete_effects


def test_plot_discrete_effects_lines_bands_and_labels():
    from scipy.linalg import expm

    rng = np.random.default_rng(3)
    dts = np.linspace(0.0, 5.0, 30)
    drifts = np.array([[-0.8, 0.2], [-0.3, -0.5]]) + 0.05 * rng.normal(size=(40, 2, 2))
    effects = expm(drifts[:, None] * dts[None, :, None, None])  # batched: (40, 30, 2, 2)
    fig = plot_discrete_effects(dts, effects, names=["PA", "NA"])
    (ax,) = fig.axes
    assert len(_bands(ax)) == 4
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert labels == ["PA ← PA", "PA ← NA", "NA ← PA", "NA ← NA"]
    median = np.median(effects, axis=0)
    medians = ax.lines[:4]  # then the zero line
    for line, (i, j) in zip(medians, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        np.testing.assert_allclose(line.get_ydata(), median[:, i, j])
    assert ax.get_xlabel() == "time interval Δt"
