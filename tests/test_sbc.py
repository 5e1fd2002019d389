"""benchmarks/sbc.py: rank binning and the power of the SBC design (no sampling here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import sbc


def test_rank_bins_cover_every_rank_equally():
    counts = sbc.rank_bins(np.arange(100), 99, 5)
    np.testing.assert_array_equal(counts, [20] * 5)
    with pytest.raises(ValueError, match="multiple of bins"):
        sbc.rank_bins([0], 98, 5)


def test_power_is_the_level_when_calibrated_and_grows_with_replicates():
    """A calibrated posterior is rejected at about the test's level; a 10% scale error
    is detected more often with more replicates (2000: most of the time)."""
    calibrated = sbc.power(1.0, 500, 99, 5, 0.05, sims=400, seed=1)
    assert abs(calibrated - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 400)
    few = sbc.power(1.1, 200, 99, 5, 0.01, sims=200, seed=2)
    many = sbc.power(1.1, 2000, 99, 5, 0.01, sims=200, seed=2)
    assert few < 0.2 < 0.6 < many
