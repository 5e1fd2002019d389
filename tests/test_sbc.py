"""benchmarks/sbc.py: rank statistics, the power of the SBC design, the prior draws and
the batched NUTS sampler (checked against an exact Gaussian posterior).

The SBC runs themselves (hundreds of NUTS fits) are slow-marked; ``benchmarks/sbc.py``
at its defaults is the full-power run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.linalg

from kalmanad import LinearSDE
from kalmanad.distributions import LinearSDEDistribution

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import sbc

# ------------------------------------------------------------------ rank statistics


def test_rank_bins_cover_every_rank_equally():
    counts = sbc.rank_bins(np.arange(100), 99, 5)
    np.testing.assert_array_equal(counts, [20] * 5)
    with pytest.raises(ValueError, match="multiple of bins"):
        sbc.rank_bins([0], 98, 5)
    with pytest.raises(ValueError, match=r"ranks must lie in 0\.\.99"):
        sbc.rank_bins([100], 99, 5)


def test_ranks_count_the_draws_below_the_truth():
    draws = np.array([[0.1, 0.5, 0.9], [3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(sbc.ranks_of([0.6, 0.5], draws), [2, 0])


def test_power_is_the_level_when_calibrated_and_grows_with_replicates():
    """A calibrated posterior is rejected at about the test's level; a 10% scale error
    is detected more often with more replicates (2000: most of the time)."""
    calibrated = sbc.power(1.0, 500, 99, 5, 0.05, sims=400, seed=1)
    assert abs(calibrated - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 400)
    few = sbc.power(1.1, 200, 99, 5, 0.01, sims=200, seed=2)
    many = sbc.power(1.1, 2000, 99, 5, 0.01, sims=200, seed=2)
    assert few < 0.2 < 0.6 < many


def test_ess_separates_independent_from_autocorrelated_draws():
    rng = np.random.default_rng(3)
    independent = rng.standard_normal((20, 99))
    walk = np.cumsum(rng.standard_normal((20, 99)), axis=1)
    assert np.median(sbc.bulk_ess(independent)) > 60
    assert np.max(sbc.bulk_ess(walk)) < 20


# ------------------------------------------- a conjugate model: exact Gaussian posterior

THETA, SIGMA, NOISE, PRIOR_SD = 0.8, 1.0, 0.5, 1.0


def _level_model(times, y=None):
    """OU measured with noise around an unknown level μ ~ N(0, PRIOR_SD²); the rest
    known, so the posterior of μ is Gaussian (see ``_exact_posterior``)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    m = LinearSDE(
        drift=-THETA * jnp.eye(1),
        diffusion=2 * THETA * SIGMA**2 * jnp.eye(1),
        observation=jnp.eye(1),
        observation_noise=NOISE**2 * jnp.eye(1),
        observation_intercept=mu[None],
    )
    return numpyro.sample("y", LinearSDEDistribution(m, times), obs=y)


def _exact_posterior(times, y):
    """Mean and sd of μ | y: y ~ N(μ 1, Σ), Σ_ij = σ² exp(-θ |t_i - t_j|) + ν² δ_ij
    (stationary start), μ ~ N(0, s²): precision 1/s² + 1ᵀΣ⁻¹1, mean 1ᵀΣ⁻¹y / precision."""
    cov = SIGMA**2 * np.exp(-THETA * np.abs(times[:, None] - times[None])) + NOISE**2 * np.eye(
        len(times)
    )
    cho = scipy.linalg.cho_factor(cov)
    ones = np.ones(len(times))
    prec = 1 / PRIOR_SD**2 + ones @ scipy.linalg.cho_solve(cho, ones)
    return (ones @ scipy.linalg.cho_solve(cho, y[:, 0])) / prec, prec**-0.5


def test_batched_nuts_matches_the_exact_posterior():
    """Four data sets in one compiled NUTS run: each replicate's posterior mean and sd of
    μ agree with the exact Gaussian posterior within Monte Carlo error, the ranks lie in
    0..L and the diagnostics are clean."""
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(0.5, 20))
    sims = numpyro.infer.Predictive(_level_model, num_samples=4)(jax.random.PRNGKey(4), times)
    ys = np.asarray(sims["y"])
    draws = 99
    run = sbc.batched_nuts(_level_model, times, ys[0], ("mu",), warmup=150, draws=draws, thin=2)
    out, _, _ = sbc.run_batched(run, ys, seed=5, batch=4)
    assert out["mu"].shape == (4, draws)
    assert np.all(out["valid_start"]) and np.all(out["divergences"] == 0)
    ess = sbc.bulk_ess(out["mu"])
    for r in range(4):
        mean, sd = _exact_posterior(times, ys[r])
        se = sd / np.sqrt(ess[r])
        assert abs(out["mu"][r].mean() - mean) < 4 * se, (r, out["mu"][r].mean(), mean, se)
        assert 0.7 < out["mu"][r].std() / sd < 1.3, (r, out["mu"][r].std(), sd)
    ranks = sbc.ranks_of(np.asarray(sims["mu"]), out["mu"])
    assert np.all((ranks >= 0) & (ranks <= draws))


def test_the_uniformity_test_rejects_a_posterior_20_percent_too_wide():
    """Ranks of the truth among draws from the exact posterior of the conjugate model
    pass the chi-square test; among draws 20% too wide they fail it (2000 replicates,
    fixed seed; exact posteriors, no sampling)."""
    rng = np.random.default_rng(6)
    times = np.cumsum(rng.exponential(0.5, 20))
    n = 2000
    sims = numpyro.infer.Predictive(_level_model, num_samples=n)(jax.random.PRNGKey(7), times)
    mu, ys = np.asarray(sims["mu"]), np.asarray(sims["y"])
    post = np.array([_exact_posterior(times, y) for y in ys])
    z = rng.standard_normal((n, 99))
    pvalues = {}
    for scale in (1.0, 1.2):
        draws = post[:, :1] + scale * post[:, 1:] * z
        pvalues[scale] = sbc.chisquare_pvalue(sbc.rank_bins(sbc.ranks_of(mu, draws), 99, 5))
    assert pvalues[1.0] > 0.01 and pvalues[1.2] < 1e-4, pvalues


def test_ctvar3_prior_draws_have_stable_drifts_and_finite_data():
    fn, names = sbc.models()["ctvar3"]
    times = sbc.times_for("ctvar3", np.random.default_rng(0))
    sims = sbc.prior_draws("ctvar3", fn, times[:10], 50, seed=1)
    assert sims["y"].shape == (50, 10, 3)
    assert np.all(np.isfinite(sims["y"]))
    assert np.all(sbc._stable(sims))
    assert set(names) <= set(sims)


# ---------------------------------------------------------------------- slow: SBC


@pytest.mark.slow
def test_batched_results_do_not_depend_on_the_batch_size():
    """A replicate's draws depend on its key and data only, not on its batch mates."""
    fn, names = sbc.models()["ou"]
    times = sbc.times_for("ou", np.random.default_rng(0))
    sims = sbc.prior_draws("ou", fn, times, 4, seed=2)
    run = sbc.batched_nuts(fn, times, sims["y"][0], names, warmup=100, draws=19, thin=2)
    two, _, _ = sbc.run_batched(run, sims["y"], seed=3, batch=2)
    four, _, _ = sbc.run_batched(run, sims["y"], seed=3, batch=4)
    for k in names:
        np.testing.assert_allclose(two[k], four[k], rtol=1e-8)


@pytest.mark.slow
def test_simulation_based_calibration_ou():
    """Talts et al. (2018) on the OU SBC model of benchmarks/sbc.py: 400 replicates,
    ranks among 19 thinned draws in 5 bins, chi-square per parameter (a calibrated
    sampler fails one of the three at the 0.1% level with probability 0.3%)."""
    res = sbc.run_sbc("ou", 400, batch=200, draws=19, thin=5, warmup=200, seed=0)
    assert len(res["ranks"]) == 400
    for j, k in enumerate(res["names"]):
        counts = sbc.rank_bins(res["ranks"][:, j], 19, 5)
        assert sbc.chisquare_pvalue(counts) > 1e-3, (k, counts)
    assert np.median(res["ess"]) > 10


def test_cli_rejects_a_design_it_cannot_bin(capsys):
    with pytest.raises(SystemExit) as e:
        sbc.main(["--models", "ou", "--draws", "98", "--bins", "5"])
    assert e.value.code == 2
    assert "--draws + 1 must be a multiple of --bins" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sbc.main(["--models", "ou", "--batch", "0"])
    assert "--batch must be at least 1" in capsys.readouterr().err


def test_a_cut_run_is_reported_with_the_command_that_reproduces_it():
    row = {"parameter": "theta", "counts": [1, 1, 1, 1, 1], "p": 1.0}
    row.update(ess_min=50.0, ess_q01=60.0, ess_median=90.0)
    payload = {
        "model": "ou",
        "replicates": 40,
        "replicates_requested": 2000,
        "time_limit_s": 600.0,
        "batch": 8,
        "draws": 99,
        "thin": 5,
        "warmup": 300,
        "bins": 5,
        "alpha": 0.01,
        "seed": 0,
        "divergences": 0,
        "replicates_with_divergences": 0,
        "max_tree_depth_hits": 0,
        "compile_s": 10.0,
        "wall_s": 100.0,
        "s_per_replicate": 2.0,
        "load_average": 3.0,
        "versions": {"jax": "x", "numpyro": "y"},
        "parameters": [row],
        "power_sims": 10,
        "power_scale_error": {"0.9": 0.1, "1.0": 0.01, "1.1": 0.1},
    }
    text = "\n".join(sbc.markdown(payload))
    assert "--replicates 2000 --first 40 --batch 8" in text
    assert "the first 40 of the 2000 drawn" in text and "--time-limit 600" in text
    assert "| theta | 1 1 1 1 1 | 1 | 50 | 60 | 90 |" in text
