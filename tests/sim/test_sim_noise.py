import numpy as np
import pytest

from tiltstream.sim import drift_shifts, poisson_noise


def _noisy(clean, dose, rng):
    return poisson_noise(clean, dose_e_per_A2=dose, pixel_nm=1.0, voxel_nm=1.0, scatter_per_nm=0.02, rng=rng)


def test_poisson_noise_is_unbiased_with_variance_over_dose(rng):
    clean = np.full((4, 50, 60), 2.0, dtype=np.float32)  # 12 000 pixels
    low, high = _noisy(clean, 10.0, rng), _noisy(clean, 40.0, rng)
    assert low.dtype == np.float32 and low.shape == clean.shape
    # Expected variance: clean / (dose·100·scatter·voxel) = 2 / 20 = 0.1 at dose 10.
    var_low, var_high = low.var(), high.var()
    assert var_low == pytest.approx(0.1, rel=0.05)
    assert var_low / var_high == pytest.approx(4.0, rel=0.08)
    for noisy, var in ((low, 0.1), (high, 0.025)):
        assert abs(noisy.mean() - 2.0) < 4 * np.sqrt(var / clean.size)


def test_poisson_noise_per_frame_dose_and_zero_signal(rng):
    clean = np.zeros((3, 7, 9), dtype=np.float32)
    clean[:, 3, 4] = 1.0
    out = _noisy(clean, np.array([1.0, 2.0, 3.0]), rng)
    assert out.shape == clean.shape
    assert np.all(out[:, :3] == 0)  # no signal, no counts
    with pytest.raises(ValueError, match="dose per frame"):
        _noisy(clean, np.array([1.0, 2.0]), rng)
    with pytest.raises(TypeError, match="Generator"):
        poisson_noise(clean, dose_e_per_A2=1.0, pixel_nm=1.0, voxel_nm=1.0, rng=42)


def test_drift_moves_at_constant_speed(rng):
    times = np.cumsum(rng.uniform(0.1, 0.5, 200))
    shifts = drift_shifts(times, drift_px_per_s=0.4, jitter_px=0.0, rng=rng)
    assert shifts.shape == (200, 2)
    np.testing.assert_allclose(shifts[0], 0.0)
    steps = np.linalg.norm(np.diff(shifts, axis=0), axis=1)
    np.testing.assert_allclose(steps, 0.4 * np.diff(times), rtol=1e-9)
    assert np.linalg.norm(shifts[-1]) > 1.0  # it really drifts away


def test_jitter_is_white(rng):
    times = np.arange(4000) * 0.1
    shifts = drift_shifts(times, drift_px_per_s=0.0, jitter_px=0.3, rng=rng)
    assert shifts.std(axis=0) == pytest.approx([0.3, 0.3], rel=0.05)
    assert abs(np.corrcoef(shifts[:-1, 0], shifts[1:, 0])[0, 1]) < 0.05
    np.testing.assert_array_equal(drift_shifts(times[:5], drift_px_per_s=0, jitter_px=0, rng=rng), 0.0)


def test_drift_rejects_decreasing_times(rng):
    with pytest.raises(ValueError, match="non-decreasing"):
        drift_shifts(np.array([0.0, 2.0, 1.0]), drift_px_per_s=1.0, jitter_px=0.0, rng=rng)
