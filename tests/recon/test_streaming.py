import numpy as np
import pytest

from tiltstream.recon import operator, projection_geometry, volume_geometry
from tiltstream.recon.sirt import sirt
from tiltstream.recon.streaming import FrameRejected, StreamingParams, StreamingSirt
from tiltstream.sim import make_phantom, simulate_series


def nrmse(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def test_streaming_static_matches_batch_sirt():
    ph = make_phantom("nanostar", size=24, static=True)
    s = simulate_series(ph, n_frames=96, blur=False)
    truth = s.truth(0.0)
    est = StreamingSirt(truth.shape, StreamingParams(window_frames=48, subset_size=12, steps_per_update=2))
    errs = []
    for i, (f, a, t) in enumerate(zip(s.frames, s.angles_deg, s.times_s)):
        est.push(f, a, t)
        if i in (7, 95):
            errs.append(nrmse(est.volume(), truth))
    last = slice(96 - 48, 96)
    A = operator(volume_geometry(truth.shape),
                 projection_geometry(s.angles_deg[last], det_shape=s.frames.shape[1:]))
    batch = nrmse(sirt(A, s.frames[last], 100), truth)
    assert errs[1] < errs[0]
    assert errs[1] < 1.15 * batch, (errs, batch)


def test_streaming_follows_a_dynamic_particle():
    n = 180
    probe = simulate_series(make_phantom("nanorod", size=24, static=True), n_frames=n, blur=False)
    ph = make_phantom("nanorod", size=24, duration_s=float(probe.times_s[-1]))
    s = simulate_series(ph, n_frames=n, blur=False)
    early, late = s.truth(float(s.times_s[20])), s.truth(float(s.times_s[-1]))
    est = StreamingSirt(early.shape, StreamingParams(window_frames=30, subset_size=10, steps_per_update=3))
    mid_vol = None
    for i, (f, a, t) in enumerate(zip(s.frames, s.angles_deg, s.times_s)):
        est.push(f, a, t)
        if i == 20:
            mid_vol = est.volume()
    assert nrmse(mid_vol, early) < nrmse(mid_vol, late)
    assert nrmse(est.volume(), late) < 0.6 * nrmse(est.volume(), early)


def test_memory_is_bounded_by_the_window(rng):
    est = StreamingSirt((9, 5, 11), StreamingParams(window_frames=10, window_s=4.0, subset_size=3))
    for i in range(40):
        est.push(rng.random((5, 11), dtype=np.float32), float(rng.uniform(-70, 70)), 0.5 * i)
    assert est.window_size <= 9  # 4 s at 2 frames/s → 9 frames, under the frame cap
    t0, t1 = est.window_times
    assert t1 - t0 <= 4.0
    m1 = est.memory_bytes()
    for i in range(40, 80):
        est.push(rng.random((5, 11), dtype=np.float32), float(rng.uniform(-70, 70)), 0.5 * i)
    assert est.memory_bytes() <= 1.05 * m1  # taps that fall off the detector vary a little per angle


def test_forgetting_weights_new_frames_more(rng):
    est = StreamingSirt((9, 5, 11), StreamingParams(window_frames=10, half_life_s=1.0, subset_size=10))
    for i in range(10):
        est.add_frame(rng.random((5, 11), dtype=np.float32), 0.0, float(i))
    w = est._weights(list(est._window))
    assert w[-1] == 1.0 and w[0] == pytest.approx(0.5**9)


@pytest.mark.parametrize(
    "frame, angle, t, match",
    [
        (np.zeros((5, 10), np.float32), 0.0, 0.0, r"expected shape \(5, 11\).*got \(5, 10\)"),
        (np.full((5, 11), np.nan, np.float32), 0.0, 0.0, "NaN"),
        (np.zeros((5, 11), np.float32), float("nan"), 0.0, "angle_deg"),
        (np.zeros((5, 11), np.float32), 0.0, float("inf"), "t_s"),
        (np.zeros((5, 11), np.float32), 400.0, 0.0, "angle_deg"),
    ],
)
def test_bad_frames_rejected_without_changing_state(frame, angle, t, match, rng):
    est = StreamingSirt((9, 5, 11))
    est.push(rng.random((5, 11), dtype=np.float32), 10.0, 0.0)
    before, n = est.volume(), est.window_size
    with pytest.raises(FrameRejected, match=match):
        est.push(frame, angle, t)
    assert est.window_size == n
    np.testing.assert_array_equal(est.volume(), before)
