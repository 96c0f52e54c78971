"""Online DIP: growing data, binning, held-out frames never fitted, warm start across arrivals, time
span widening, bad frames, new series, and quality improving as a simulated series streams in."""

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from tiltstream.recon.dip import DipParams
from tiltstream.recon.binning import bin_frame
from tiltstream.recon.dip.online import GrowingSeriesData, OnlineDip, OnlineDipConfig
from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import operator
from tiltstream.sim import make_phantom, simulate_series

SMALL = DipParams(steps=10**9, eval_every=10**9, heldout_fraction=0.0, mlp_width=64, mlp_depth=2, decoder_width=32,
                  batch_frames=8, lr=3e-3, device="cpu", seed=0)


def nrmse(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def test_growing_data_holds_every_frame_and_spreads_the_heldout_ones():
    d = GrowingSeriesData((3, 5), vol_z=5, device=torch.device("cpu"), heldout_every=4, capacity=2)
    rng = np.random.default_rng(0)
    frames = rng.random((11, 3, 5), dtype=np.float32)
    for lo, hi in ((0, 1), (1, 6), (6, 11)):  # grows past its capacity twice
        d.append(frames[lo:hi], np.arange(lo, hi) * 10.0, np.arange(lo, hi) * 0.5)
    assert d.n == 11 and d.frames.shape == (11, 3, 5)
    np.testing.assert_array_equal(d.frames.numpy(), frames)
    np.testing.assert_allclose(d.angles.numpy(), np.arange(11) * 10.0)
    np.testing.assert_allclose(d.times_s, np.arange(11) * 0.5)
    np.testing.assert_array_equal(d.heldout_idx, [2, 6, 10])
    assert sorted(d.train_idx.tolist() + d.heldout_idx.tolist()) == list(range(11))
    assert d.frame_interval_s == pytest.approx(0.5)


def test_binned_frames_project_the_binned_volume():
    """A frame binned ×2 is (to discretisation) the projection of the volume block-averaged ×2."""
    size, f = 32, 2
    vol = make_phantom("nanorod", size=size, static=True).contrast(0.0, 1.0)
    angles = np.array([-50.0, 0.0, 35.0])
    full = operator(VolumeGeometry(vol.shape), ProjectionGeometry(angles, (size, size)), device="cpu")
    frames = full(torch.as_tensor(vol)).numpy()
    small_vol = vol.reshape(size // f, f, size // f, f, size // f, f).mean(axis=(1, 3, 5))
    small = operator(VolumeGeometry(small_vol.shape), ProjectionGeometry(angles, (size // f, size // f)), device="cpu")
    expected = small(torch.as_tensor(small_vol)).numpy()
    binned = np.stack([bin_frame(fr, f) for fr in frames])
    assert binned.shape == expected.shape
    assert nrmse(binned, expected) < 0.08
    assert bin_frame(frames[0], 1) is not None and bin_frame(frames[0], 1).shape == (size, size)


@pytest.fixture(scope="module")
def streamed_rod():
    n = 96
    probe = simulate_series(make_phantom("nanorod", size=24, static=True), n_frames=n, blur=False)
    ph = make_phantom("nanorod", size=24, duration_s=float(probe.times_s[-1]))
    return simulate_series(ph, n_frames=n, blur=False)


@pytest.mark.parametrize("batch_rows", [None, 4], ids=["whole-frames", "rows"])
def test_online_dip_warm_starts_and_improves_as_the_series_streams_in(streamed_rod, batch_rows):
    s = streamed_rod
    estimates = []
    cfg = OnlineDipConfig(params=replace(SMALL, batch_rows=batch_rows), max_edge=None, min_frames=12, heldout_every=8, publish_period_s=0.0,
                          n_times=4, device="cpu", nice=0)
    online = OnlineDip(cfg, on_estimate=estimates.append)
    online.start_series("s1", s.frames.shape[1:])
    trainer = None
    fitted = set()
    for k in range(0, len(s), 12):  # frames arrive in bursts of 12, training goes on in between
        for i in range(k, min(k + 12, len(s))):
            assert online.add_frame(s.frames[i], angle_deg=float(s.angles_deg[i]), t_s=float(s.times_s[i]),
                                    stream_id="s1")
        for _ in range(8):
            online.work(steps=0)
            if online.trainer is not None:
                picks, _ = online.trainer.sampler.next()
                fitted.update(picks.tolist())
            online.work(steps=5)
        if trainer is None:
            trainer = online.trainer
        assert online.trainer is trainer  # warm start: the same model throughout, never restarted
    for _ in range(40):
        online.work(steps=5)
    assert online.n_frames == len(s)
    held = set(online.data.heldout_idx.tolist())
    assert len(held) == len(s) // 8 and not held & fitted  # held-out frames are never fitted
    last = estimates[-1]
    assert last.n_frames == len(s) and last.volumes.shape == (4, 24, 24, 24)
    assert last.times_s[0] == pytest.approx(s.times_s[0]) and last.times_s[-1] == pytest.approx(s.times_s[-1])
    assert trainer.model.geom.t_range_s[1] >= s.times_s[-1]  # the time span widened to the whole series

    def err(est):
        return float(np.mean([nrmse(v, s.truth(float(t))) for v, t in zip(est.volumes, est.times_s)]))

    first_full = next(e for e in estimates if e.n_frames == len(s))
    assert err(last) < err(first_full)  # keeps improving after the last frame
    assert err(last) < 0.2  # (static SIRT of all frames: 0.41; best moving-window SIRT: 0.15)
    assert last.heldout_nrmse is not None and last.heldout_nrmse < 0.25
    m = last.metrics()
    assert m["dip_frames"] == len(s) and m["dip_steps"] == last.step and "dip_heldout_nrmse" in m


def test_online_batches_take_random_rows_of_new_and_old_frames():
    """With ``batch_rows`` each batch frame contributes that many distinct rows (ascending, all rows
    drawn over time); half the frames come from the newest ``recent_frames``."""
    cfg = OnlineDipConfig(params=replace(SMALL, batch_frames=8, batch_rows=4), max_edge=None, min_frames=3,
                          recent_frames=6, heldout_every=1000, device="cpu", nice=0)
    online = OnlineDip(cfg)
    online.start_series("a", (12, 10))
    rng = np.random.default_rng(2)
    for i in range(40):
        online.add_frame(rng.random((12, 10)), angle_deg=float(i), t_s=float(i))
    online.work(steps=0)
    sampler = online.trainer.sampler
    seen_rows, newest_share = set(), []
    for _ in range(50):
        picks, rows = sampler.next()
        assert picks.shape == (8,) and rows.shape == (8, 4)
        assert bool((rows.diff(dim=1) > 0).all()) and int(rows.min()) >= 0 and int(rows.max()) < 12
        seen_rows.update(rows.flatten().tolist())
        newest_share.append(float((picks[:4] >= 34).float().mean()))
    assert seen_rows == set(range(12)) and min(newest_share) == 1.0
    loss = online.trainer.train_step()
    assert math.isfinite(loss) and online.trainer.step == 1


def test_bad_frames_and_other_series_are_refused_and_counted():
    online = OnlineDip(OnlineDipConfig(params=SMALL, max_edge=None, device="cpu", nice=0))
    frame = np.ones((6, 8), dtype=np.float32)
    assert not online.add_frame(frame, angle_deg=0.0, t_s=0.0)  # no series yet
    online.start_series("a", (6, 8))
    assert online.add_frame(frame, angle_deg=0.0, t_s=0.0, stream_id="a")
    assert not online.add_frame(np.ones((6, 9)), angle_deg=1.0, t_s=1.0)
    assert not online.add_frame(np.full((6, 8), np.nan), angle_deg=1.0, t_s=1.0)
    assert not online.add_frame(frame, angle_deg=math.nan, t_s=1.0)
    assert not online.add_frame(frame, angle_deg=1.0, t_s=1.0, stream_id="b")
    assert online.rejected == 5
    online.work(steps=0)
    assert online.n_frames == 1
    online.start_series("b", (4, 4))  # a new series starts from nothing
    online.work(steps=0)
    assert online.n_frames == 0 and online.trainer is None


def test_frames_are_binned_to_the_working_size():
    cfg = OnlineDipConfig(params=SMALL, max_edge=16, min_frames=3, device="cpu", nice=0)
    online = OnlineDip(cfg)
    online.start_series("a", (40, 48), pixel_nm=0.5)
    assert online.factor == 3
    rng = np.random.default_rng(1)
    for i in range(4):
        online.add_frame(rng.random((40, 48)), angle_deg=10.0 * i, t_s=float(i))
    online.work(steps=0)
    assert online.data.frames.shape == (4, 14, 16) and online.trainer is not None  # 40 / 3 → 14 rows, edges kept
    est = online.publish()
    assert est.volumes.shape[1:] == (16, 14, 16) and est.pixel_nm == pytest.approx(1.5)
    assert online.trainer.params.axis_offset_px == 0.0  # 48 = 3 × 16: the binned centre stays put


def test_binned_frames_of_an_odd_width_keep_the_tilt_axis_in_place():
    """47 pixels binned by 3: the last block is completed with edge copies, which moves the binned
    detector's centre half a full pixel right; the DIP's axis offset must move it back."""
    cfg = OnlineDipConfig(params=replace(SMALL, axis_offset_px=2.0), max_edge=16, min_frames=3, device="cpu", nice=0)
    online = OnlineDip(cfg)
    online.start_series("a", (40, 47), pixel_nm=0.5)
    for i in range(4):
        online.add_frame(np.ones((40, 47)), angle_deg=10.0 * i, t_s=float(i))
    online.work(steps=0)
    assert online.trainer.params.axis_offset_px == pytest.approx((2.0 - 0.5) / 3)


def test_background_thread_trains_and_stops():
    s = simulate_series(make_phantom("nanorod", size=16, static=True), n_frames=30, blur=False)
    got = []
    online = OnlineDip(OnlineDipConfig(params=SMALL, max_edge=None, min_frames=10, publish_period_s=0.0,
                                       device="cpu"), on_estimate=got.append)
    online.start_series("t", s.frames.shape[1:])
    online.start()
    try:
        for i in range(len(s)):
            online.add_frame(s.frames[i], angle_deg=float(s.angles_deg[i]), t_s=float(s.times_s[i]))
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end and not (got and got[-1].n_frames == len(s)):
            time.sleep(0.05)
    finally:
        online.stop()
    assert online.error is None
    assert got and got[-1].n_frames == len(s) and got[-1].step > 0
