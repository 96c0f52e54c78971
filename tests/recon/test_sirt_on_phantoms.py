"""SIRT and windowed SIRT against ground truth from tiltstream.sim (its own finer projector)."""

import numpy as np
import pytest

from tiltstream.recon import operator, projection_geometry, volume_geometry
from tiltstream.recon.batch import BatchParams, default_times, reconstruct_4d, windowed_sirt
from tiltstream.recon.sirt import sirt
from tiltstream.recon.windowed import Window, window_indices
from tiltstream.sim import make_phantom, simulate_series


def nrmse(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def static_rod():
    ph = make_phantom("nanorod", size=24, static=True)
    return simulate_series(ph, n_frames=40, blur=False)


def test_sirt_converges_toward_truth(static_rod):
    s = static_rod
    truth = s.truth(0.0)
    A = operator(volume_geometry(truth.shape), projection_geometry(s.angles_deg, det_shape=s.frames.shape[1:]))
    errs = []
    sirt(A, s.frames, 150, callbacks=[lambda st: errs.append(nrmse(st.volume(), truth)) if st.iteration % 30 == 0
                                      else None])
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    # limited range (±70°) and 40 angles: the missing wedge keeps ~10 % error even without noise
    assert errs[-1] < 0.15


def test_sirt_with_noise_still_converges(rng):
    ph = make_phantom("nanostar", size=24, static=True)
    s = simulate_series(ph, n_frames=40, blur=False, dose_e_per_A2=2000.0, rng=rng)
    truth = s.truth(0.0)
    A = operator(volume_geometry(truth.shape), projection_geometry(s.angles_deg, det_shape=s.frames.shape[1:]))
    e10 = nrmse(sirt(A, s.frames, 10), truth)
    e60 = nrmse(sirt(A, s.frames, 60), truth)
    assert e60 < e10 and e60 < 0.35


def test_axis_offset_convention_matches_the_simulator(static_rod):
    ph = static_rod.phantom
    s = simulate_series(ph, n_frames=40, blur=False, axis_offset_px=2.0)
    truth = s.truth(0.0)

    def err(offset):
        geom = projection_geometry(s.angles_deg, det_shape=s.frames.shape[1:], axis_offset_px=offset)
        return nrmse(sirt(operator(volume_geometry(truth.shape), geom), s.frames, 60), truth)

    assert err(2.0) < 0.2 < err(-2.0)


@pytest.fixture(scope="module")
def dynamic_rod():
    n = 160
    probe = simulate_series(make_phantom("nanorod", size=32, static=True), n_frames=n, blur=False)
    ph = make_phantom("nanorod", size=32, duration_s=float(probe.times_s[-1]))
    return simulate_series(ph, n_frames=n, blur=True)


def test_windowed_sirt_tracks_the_shape_change(dynamic_rod):
    s = dynamic_rod
    t_early, t_late = float(s.times_s[15]), float(s.times_s[-15])
    early, late = s.truth(t_early), s.truth(t_late)
    assert nrmse(early, late) > 0.5  # the particle really changes
    v_early, v_late = windowed_sirt(s.frames, s.angles_deg, s.times_s, [t_early, t_late],
                                    window=Window(frames=30), num_iterations=80)
    assert nrmse(v_late, late) < 0.5 * nrmse(v_late, early)
    assert nrmse(v_early, early) < 0.5 * nrmse(v_early, late)
    # a static reconstruction from all frames matches neither end well
    static = reconstruct_4d(s.frames, s.angles_deg, s.times_s, [t_late], BatchParams(iterations=80))[0]
    assert nrmse(v_late, late) < nrmse(static, late)


def test_window_selection():
    times = np.arange(20, dtype=float)
    np.testing.assert_array_equal(window_indices(times, 10.2, Window(frames=4)), [9, 10, 11, 12])
    np.testing.assert_array_equal(window_indices(times, 10.0, Window(seconds=4.0, min_frames=1)), [8, 9, 10, 11, 12])
    # too few frames in a seconds-window: widened to min_frames nearest
    assert window_indices(times, 10.0, Window(seconds=0.5, min_frames=3)).size == 3
    assert Window.parse("12.5s") == Window(seconds=12.5) and Window.parse("40") == Window(frames=40)
    with pytest.raises(ValueError, match="expected a frame count"):
        Window.parse("abc")


def test_default_times_stay_inside_the_series():
    times = np.linspace(0, 100, 101)
    t = default_times(times, Window(frames=20))
    assert 2 <= t.size <= 12 and t.min() >= 9 and t.max() <= 91
    assert default_times(times, None).tolist() == [50.0]
    t = default_times(times, Window(seconds=30.0))
    assert t.min() >= 15 and t.max() <= 85
