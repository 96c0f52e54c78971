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


def test_window_of_every_frame_without_forgetting_is_batch_os_sirt(rng):
    vol_shape, n, k = (9, 5, 11), 12, 4
    truth = rng.random(vol_shape, dtype=np.float32)
    angles = rng.uniform(-70, 70, n)
    A = operator(volume_geometry(vol_shape), projection_geometry(angles, det_shape=(5, 13), axis_offset_px=0.4))
    frames = A(truth) + 0.05 * rng.standard_normal(A.range_shape).astype(np.float32)
    est = StreamingSirt(vol_shape, StreamingParams(window_frames=n, subset_size=k, relaxation=1.5), det_cols=13,
                        axis_offset_px=0.4)
    for i in range(n):
        est.add_frame(frames[i], angles[i], float(i))
    est.update(steps=3 * n // k)
    # new frames first (newest first), then the least recently used: subsets of the newest k frames
    subsets = [np.arange(n - k * (m + 1), n - k * m) for m in range(n // k)]
    batch = sirt(A, frames, 3, subsets=subsets, relaxation=1.5)
    np.testing.assert_allclose(est.volume(), batch, rtol=1e-4, atol=1e-5)
    assert not np.allclose(sirt(A, frames, 3, subsets=subsets[::-1], relaxation=1.5), batch, atol=1e-3)  # order
    assert not np.allclose(sirt(A, frames, 3, subsets=subsets), batch, atol=1e-3)  # and λ


def test_forgetting_pulls_the_estimate_to_the_newest_frames(rng):
    vol_shape = (9, 5, 11)
    old, new = rng.random(vol_shape, dtype=np.float32), rng.random(vol_shape, dtype=np.float32)
    angles = np.linspace(-60, 60, 10)
    A = operator(volume_geometry(vol_shape), projection_geometry(angles, det_shape=(5, 11)))
    errors = {}
    for half_life in (None, 1.0):
        est = StreamingSirt(vol_shape, StreamingParams(window_frames=20, half_life_s=half_life, subset_size=20))
        for t, truth in enumerate((old, new)):  # the same angles twice: the particle changed in between
            for i, frame in enumerate(A(truth)):
                est.add_frame(frame, angles[i], 10.0 * t + 0.1 * i)
        est.update(steps=30)
        errors[half_life] = nrmse(est.volume(), new) / nrmse(est.volume(), old)
    assert errors[1.0] < 0.5 * errors[None], errors  # the old frames weigh 2^-10 of the new


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


def test_a_frame_stamped_ahead_of_the_newest_weighs_one_under_forgetting():
    """half-life forgetting weighs a frame 2^-(age / half-life); a clock glitch that stamps a frame
    far ahead of the frames after it must not weigh it 2^(lead / half-life) (OverflowError)."""
    s = simulate_series(make_phantom("nanorod", size=12, static=True), n_frames=8, blur=False)
    est = StreamingSirt((12, 12, 12), StreamingParams(window_frames=8, subset_size=4, half_life_s=1.0), device="cpu")
    for i in range(8):
        est.add_frame(s.frames[i], float(s.angles_deg[i]), 1e6 if i == 3 else 0.1 * i)
    assert np.isfinite(est.update(steps=4)) and np.isfinite(est.volume()).all()
