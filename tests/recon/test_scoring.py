"""recon.scoring: NRMSE against a ground truth."""

import numpy as np
import pytest

from tiltstream.recon.scoring import nrmse, nrmse_over_time


def test_nrmse_is_the_relative_error_and_checks_shapes(rng):
    ref = rng.random((5, 7, 3)) + 0.5
    assert nrmse(ref, ref) == 0.0
    assert nrmse(1.1 * ref, ref) == pytest.approx(0.1)
    assert nrmse(np.zeros_like(ref), ref) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"expected the reference's shape \(5, 7, 3\), got \(5, 3, 7\)"):
        nrmse(ref.transpose(0, 2, 1), ref)


def test_nrmse_over_time_asks_the_truth_at_each_volume_time(rng):
    truth = lambda t: np.full((3, 4, 5), 1.0 + t)  # noqa: E731
    times = np.array([0.0, 2.5])
    volumes = np.stack([truth(t) for t in times])
    volumes[1] *= 1.2
    assert nrmse_over_time(volumes, times, truth) == pytest.approx([0.0, 0.2])
    with pytest.raises(ValueError, match="expected one time per volume"):
        nrmse_over_time(volumes, times[:1], truth)
