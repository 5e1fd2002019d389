"""NUTS on the zoo: every spec fits and parameters are recovered.

All slow (each NUTS run compiles for a minute or more on CPU): ``pytest -m slow``. The
simulation-based calibration of the OU model is in ``tests/test_sbc.py`` (its model is
``benchmarks/sbc.py``'s).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from kalmanad import simulate
from kalmanad.inference import fit_nuts
from kalmanad.spec import list_models, load_model

pytestmark = pytest.mark.slow


def _data_args(spec):
    """(times, y, inputs, kwargs) of the spec's bundled data, as the CLI passes them."""
    data = spec.default_data()
    if data.subject is None:
        return data.times, data.y, data.inputs, {}
    panel = data.to_panel()
    kwargs = {"covariates": panel.covariates} if spec.covariate_names else {}
    return panel.times, panel.y, panel.inputs, kwargs


def _fit(spec, warmup, draws, chains, seed=0):
    times, y, inputs, kwargs = _data_args(spec)
    return fit_nuts(
        spec,
        times,
        y,
        inputs,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        seed=seed,
        progress_bar=False,
        **kwargs,
    )


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_fits_briefly(name):
    spec = load_model(name)
    idata = _fit(spec, warmup=40, draws=40, chains=1)
    # Every parameter is a NumPyro sample site, so each must be in the posterior (a
    # missing one would otherwise skip its check) with finite draws.
    assert spec.parameters
    missing = [p for p in spec.parameters if p not in idata.posterior]
    assert not missing, f"parameters missing from the posterior: {missing}"
    for p in spec.parameters:
        assert np.all(np.isfinite(idata.posterior[p].values)), p
    ll = idata.log_likelihood["y"].values
    assert np.all(np.isfinite(ll))


# Truth for the zoo models whose bundled data are real (SHO: sunspots): a sunspot-like
# oscillator (11-year period, Q = 3), simulated at 250 irregular times.
SIMULATED_TRUTH = {
    "sho": {"omega": 0.57, "quality": 3.0, "sigma": 40.0, "mu": 50.0, "noise": 8.0},
}


def _family_wise_misses(idata, truth, level=0.95):
    """The true values outside their central posterior intervals, at family-wise level.

    Each scalar parameter checked gets the central ``1 − (1 − level)/K`` interval
    (Bonferroni over the K scalars), so a calibrated posterior misses any of them with
    probability at most ``1 − level``. With plain 95% intervals a calibrated posterior
    misses one of K = 16 parameters (the hierarchical model) with probability
    1 − 0.95¹⁶ = 56%. Entries whose draws are all equal (the unit diagonal of a
    correlation matrix) are fixed by construction, not estimated, and are skipped.
    Returns ``(misses, K)``.
    """
    checks = []
    for site, value in truth.items():
        if site not in idata.posterior:
            continue
        draws = idata.posterior[site].values
        draws = draws.reshape(-1, int(np.prod(draws.shape[2:], dtype=int)))
        value = np.broadcast_to(np.asarray(value, float), idata.posterior[site].shape[2:])
        for j, v in enumerate(value.ravel()):
            col = draws[:, j]
            if np.ptp(col) > 0:
                checks.append((f"{site}[{j}]" if value.ndim else site, col, v))
    k = len(checks)
    alpha = (1.0 - level) / k
    misses = []
    for name, col, v in checks:
        lo, hi = np.quantile(col, [alpha / 2, 1 - alpha / 2])
        if not lo < v < hi:
            misses.append((name, float(lo), float(hi), float(v), float(np.mean(col < v))))
    return misses, k


@pytest.mark.parametrize("name", ["ou", "sho", "ctvar", "panel_ctvar"])
def test_parameter_recovery_on_simulated_data(name):
    """Truth inside the family-wise 95% posterior intervals; no divergences (default
    priors).

    Models with simulated bundled data are fitted to them (their truth is recorded in
    the spec); the others to data simulated here from SIMULATED_TRUTH.
    """
    spec = load_model(name)
    if name in SIMULATED_TRUTH:
        truth = SIMULATED_TRUTH[name]
        rng = np.random.default_rng(7)
        times = np.concatenate([[0.0], np.cumsum(rng.exponential(1.2, 249))])
        sim = simulate(spec.build(truth), times, jax.random.PRNGKey(7))
        idata = fit_nuts(
            spec,
            times,
            np.asarray(sim.observations),
            num_warmup=400,
            num_samples=400,
            num_chains=2,
            seed=1,
            progress_bar=False,
        )
    else:
        truth = spec.data.truth
        assert truth, f"{name} has no recorded truth"
        idata = _fit(spec, warmup=400, draws=400, chains=2, seed=1)
    assert int(idata.sample_stats["diverging"].values.sum()) == 0
    misses, checked = _family_wise_misses(idata, truth)
    assert checked >= 2
    assert not misses, misses


def test_no_divergences_on_real_data():
    """The Nile (local level) with default priors: no divergent transitions."""
    idata = _fit(load_model("local_level"), warmup=400, draws=400, chains=2, seed=2)
    assert int(idata.sample_stats["diverging"].values.sum()) == 0
