import numpy as np
import pytest

from tiltstream.recon.binning import block_mean
from tiltstream.recon.engine import EngineConfig, ReconEngine
from tiltstream.recon.streaming import StreamingParams
from tiltstream.sim import make_phantom, simulate_series
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg, pack, unpack


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def series():
    return simulate_series(make_phantom("nanostar", size=20, static=True), n_frames=40, blur=False)


def _start(sid, s):
    return StartMsg(stream_id=sid, frame_shape=s.frames.shape[1:], dtype="float32", scheme="golden",
                    pixel_nm=s.pixel_nm)


def _frame(sid, s, i, data=None):
    return FrameMsg(seq=i, stream_id=sid, angle_deg=float(s.angles_deg[i]), t_s=float(s.times_s[i]),
                    exposure_s=0.1, data=s.frames[i] if data is None else data)


def test_engine_publishes_slices_every_update_and_volumes_at_a_bounded_rate(series):
    clock = FakeClock()
    eng = ReconEngine(EngineConfig(streaming=StreamingParams(window_frames=40, subset_size=10, steps_per_update=2),
                                   volume_period_s=1.0, device="cpu"), clock=clock)
    eng.handle(_start("a" * 32, series))
    kinds = []
    for i in range(series.frames.shape[0]):
        eng.handle(_frame("a" * 32, series, i))
        clock.t += 0.25
        out = eng.step()
        kinds.append([type(m) for m in out])
        for m in out:
            unpack(pack(m))  # every output is a valid wire message
    assert all(SlicesMsg in k and MetricsMsg in k for k in kinds)
    n_vol = sum(VolumeMsg in k for k in kinds)
    assert 8 <= n_vol <= 11  # 40 updates × 0.25 s at ≤ 1 volume/s
    truth = series.truth(0.0)
    vol = eng.estimator.volume()
    assert np.linalg.norm(vol - truth) / np.linalg.norm(truth) < 0.3
    slices = [m for m in out if isinstance(m, SlicesMsg)][0]
    z, y, x = slices.index
    np.testing.assert_allclose(slices.xz, vol[:, y, :])
    np.testing.assert_allclose(slices.yz, vol[:, :, x])


def test_engine_folds_several_pending_frames_into_one_update(series):
    eng = ReconEngine(EngineConfig(device="cpu"))
    eng.handle(_start("b" * 32, series))
    for i in range(5):
        eng.handle(_frame("b" * 32, series, i))
    assert eng.n_pending == 5
    eng.step()
    assert eng.n_pending == 0 and eng.estimator.n_frames_seen == 5 and len(eng.latencies_s) == 5


def test_engine_rejects_bad_frames_and_keeps_going(series):
    eng = ReconEngine(EngineConfig(device="cpu"))
    eng.handle(_start("c" * 32, series))
    eng.handle(_frame("c" * 32, series, 0, data=np.zeros((7, 9), np.float32)))
    eng.handle(_frame("c" * 32, series, 1))
    eng.step()
    assert sum(eng.rejected.values()) == 1 and eng.estimator.n_frames_seen == 1


def test_new_series_resets_and_end_is_noted(series):
    eng = ReconEngine(EngineConfig(device="cpu"))
    eng.handle(_start("d" * 32, series))
    for i in range(4):
        eng.handle(_frame("d" * 32, series, i))
    eng.step()
    eng.handle(EndMsg(stream_id="d" * 32, n_frames=4, reason="complete"))
    assert eng.ended
    eng.handle(_frame("e" * 32, series, 0))  # a frame of a new series without its start: no series
    assert eng.stream_id == "d" * 32 and eng.rejected == {"no_start": 1}
    eng.handle(_start("e" * 32, series))
    assert eng.stream_id == "e" * 32 and eng.estimator.n_frames_seen == 0 and not eng.ended
    eng.handle(_frame("e" * 32, series, 0))
    out = eng.step()
    assert all(m.stream_id == "e" * 32 for m in out)


def test_a_burst_longer_than_the_window_folds_only_the_newest_frames(series):
    eng = ReconEngine(EngineConfig(streaming=StreamingParams(window_frames=8), device="cpu"))
    eng.handle(_start("g" * 32, series))
    for i in range(30):
        eng.handle(_frame("g" * 32, series, i))
    eng.step()
    est = eng.estimator
    assert est.n_frames_seen == 30 and est.window_size == 8
    assert est.window_seqs == tuple(range(22, 30))
    assert len(eng.latencies_s) == 30


def test_binned_live_sirt_is_the_binned_particle_in_the_same_units(series, caplog):
    """bin=2: the estimate is the particle on a grid half as fine with the same voxel values (the
    frames divided by the factor) and twice the voxel size; a bad frame is named in the sent size."""
    sid = "e" * 32
    params = StreamingParams(window_frames=40, subset_size=10)
    engines = {b: ReconEngine(EngineConfig(streaming=params, bin=b, device="cpu", idle_refine_steps=0)) for b in (1, 2)}
    for eng in engines.values():
        eng.handle(_start(sid, series))
        eng.handle(_frame(sid, series, 0, data=np.zeros((7, 9), np.float32)))
        for i in range(1, len(series)):
            eng.handle(_frame(sid, series, i))
        eng.step()
        eng.estimator.update(steps=60)
    binned = engines[2]
    assert binned.estimator.vol_shape == (10, 10, 10) and binned.voxel_nm == pytest.approx(2 * series.pixel_nm)
    assert binned.rejected == {"bad_shape": 1} and binned.estimator.n_frames_seen == len(series) - 1
    assert "expected shape (20, 20)" in caplog.text
    truth = block_mean(series.truth(0.0), 2)
    vol, full = binned.estimator.volume(), block_mean(engines[1].estimator.volume(), 2)
    assert np.linalg.norm(vol - truth) / np.linalg.norm(truth) < 0.3
    assert vol.sum() / full.sum() == pytest.approx(1.0, abs=0.05)  # same units as the full-size estimate
    assert np.corrcoef(vol.ravel(), full.ravel())[0, 1] > 0.95


def test_bin_must_be_a_positive_integer_and_shrinks_what_the_budget_sees():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="bin: expected a positive integer"):
            EngineConfig(bin=bad)
    budget = 256 * 2**20
    full, binned = (ReconEngine(EngineConfig(bin=b, memory_budget_bytes=budget, device="cpu")) for b in (1, 4))
    assert not full.admits((512, 512))[0]
    fits, need, _ = binned.admits((512, 512))
    assert fits and need < full.admits((512, 512))[1] / 16
