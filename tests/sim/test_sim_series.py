import numpy as np
import pytest

from tiltstream.sim import TimingModel, golden_ratio_angles, make_phantom, project, simulate_series

SHAPE = (21, 17, 25)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("sintering", shape=SHAPE, duration_s=20.0)


def _noisy_series(phantom, seed):
    return simulate_series(
        phantom, n_frames=12, dose_e_per_A2=2.0, drift_px_per_s=0.1, jitter_px=0.3,
        axis_offset_px=0.4, rng=np.random.default_rng(seed),
    )


def test_noise_free_series_matches_forward_model(phantom):
    s = simulate_series(phantom, n_frames=9, timing=TimingModel(continuous=False))
    assert s.frames.shape == (9, 17, 25) and s.frames.dtype == np.float32
    assert len(s) == 9
    np.testing.assert_allclose(s.angles_deg, golden_ratio_angles(9))
    _, mid, _ = TimingModel(continuous=False).times(s.angles_deg)
    np.testing.assert_allclose(s.times_s, mid)
    np.testing.assert_allclose(s.frames, project(phantom, s.angles_deg, mid), atol=1e-6)
    assert s.dose_e_per_A2 is None and np.all(s.shifts_px == 0)
    assert s.pixel_nm == phantom.voxel_nm
    np.testing.assert_array_equal(s.truth(3.0), phantom.contrast(3.0, 1.8))
    assert s.metadata["scheme"] == "golden" and s.metadata["blur_substeps"] == 1


def test_continuous_series_is_blurred(phantom):
    s = simulate_series(phantom, n_frames=4, scheme="linear", lo=-30, hi=30)
    assert s.metadata["blur_substeps"] == 4  # 20 deg/s × 0.1 s = 2 degrees swept
    sharp = project(phantom, s.angles_deg, s.times_s)
    assert np.abs(s.frames - sharp).max() > 1e-3


def test_same_seed_same_series_different_seed_differs(phantom):
    a, b, c = _noisy_series(phantom, 7), _noisy_series(phantom, 7), _noisy_series(phantom, 8)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.shifts_px, b.shifts_px)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.shifts_px, c.shifts_px)
    np.testing.assert_allclose(a.dose_e_per_A2, 2.0 * np.arange(1, 13))
    assert a.axis_offset_px == 0.4


def test_rng_required_for_randomness(phantom):
    with pytest.raises(ValueError, match="rng"):
        simulate_series(phantom, n_frames=3, dose_e_per_A2=1.0)
