"""The monitor's view model, without Qt: history, slider, slab, levels, coverage, status, series."""

import subprocess
import sys

import numpy as np
import pytest

from tiltstream.stream.messages import EndMsg, FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg
from tiltstream.viz import ModelConfig, ViewModel
from tiltstream.viz.history import VolumeEntry, VolumeHistory
from tiltstream.viz.slicing import cut_slices, percentile_levels, slab_bounds

SID = "series-a"


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def volume(seq, t_s, data, sid=SID, n_used=None, voxel_nm=0.5):
    return VolumeMsg(stream_id=sid, seq=seq, t_s=t_s, data=data, source="sirt",
                     n_frames_used=seq if n_used is None else n_used, voxel_nm=voxel_nm)


def frame(seq, angle, t_s=None, sid=SID, shape=(5, 7), **kw):
    return FrameMsg(seq=seq, stream_id=sid, angle_deg=angle, t_s=float(seq) if t_s is None else t_s,
                    exposure_s=0.1, data=np.zeros(shape, np.float32), **kw)


def metrics(seq, sid=SID, t_s=0.0, **values):
    return MetricsMsg(stream_id=sid, seq=seq, t_s=t_s, values={k: float(v) for k, v in values.items()})


def slices_of(vol, seq, index, sid=SID, t_s=0.0):
    z, y, x = index
    return SlicesMsg(stream_id=sid, seq=seq, t_s=t_s, xy=vol[z], xz=np.ascontiguousarray(vol[:, y, :]),
                     yz=np.ascontiguousarray(vol[:, :, x]), index=index, source="sirt", voxel_nm=0.5)


@pytest.fixture
def vol(rng):
    return rng.random((23, 31, 37), dtype=np.float32)  # odd, non-square: catches transposed axes


def test_import_without_qt():
    code = ("import sys; sys.modules['PySide6'] = None; sys.modules['pyqtgraph'] = None; "
            "sys.modules['PyQt5'] = None; sys.modules['PyQt6'] = None\n"
            "import tiltstream.viz as v; m = v.ViewModel(); print(type(m).__name__)\n"
            "try:\n    v.MonitorWindow\nexcept ImportError as e:\n    print('hint' if 'pip install' in str(e) else e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["ViewModel", "hint"]


def test_history_ring_buffer_is_bounded_and_ordered(vol):
    h = VolumeHistory(capacity=5)
    for seq in range(1, 9):
        h.append(VolumeEntry(seq, float(seq), vol, "sirt", seq, None, 0.0))
    assert len(h) == 5 and [e.seq for e in h] == [4, 5, 6, 7, 8]
    assert list(h.times()) == [4.0, 5.0, 6.0, 7.0, 8.0] and h.evicted == 3
    assert h.nbytes == 5 * vol.nbytes
    by_bytes = VolumeHistory(capacity=100, max_bytes=3 * vol.nbytes)
    for seq in range(10):
        by_bytes.append(VolumeEntry(seq, float(seq), vol, "sirt", seq, None, 0.0))
    assert [e.seq for e in by_bytes] == [7, 8, 9] and by_bytes.nbytes <= 3 * vol.nbytes


def test_idle_resends_replace_the_newest_entry_instead_of_filling_history(vol):
    m = ViewModel(ModelConfig(history_volumes=8))
    m.ingest(volume(1, 2.0, vol, n_used=10))
    for seq in (2, 3, 4):  # the service re-sending its latest state while idle: same t, same frames
        m.ingest(volume(seq, 2.0, vol + seq, n_used=10))
    assert m.n_history == 1 and m.history[0].seq == 4
    m.ingest(volume(5, 3.0, vol, n_used=11))
    assert m.n_history == 2


def test_slider_and_follow_live(vol):
    m = ViewModel(ModelConfig(history_volumes=4))
    assert m.index is None and m.view() is None and m.follow_live
    for seq in range(1, 4):
        m.ingest(volume(seq, float(seq), vol * seq))
    assert m.index == 2 and m.view().seq == 3
    m.set_index(0)  # scrub back: stays on seq 1 while intake goes on
    assert not m.follow_live and m.view().seq == 1
    m.ingest(volume(4, 4.0, vol))
    assert m.view().seq == 1 and m.index == 0 and m.n_history == 4
    m.ingest(volume(5, 5.0, vol))  # seq 1 evicted: the oldest left is shown
    assert m.index == 0 and m.view().seq == 2
    m.set_index(99)  # the newest: follow live again
    assert m.follow_live and m.view().seq == 5
    m.ingest(volume(6, 6.0, vol))
    assert m.view().seq == 6
    m.set_follow_live(False)
    m.ingest(volume(7, 7.0, vol))
    assert m.view().seq == 6
    m.set_follow_live(True)
    assert m.view().seq == 7


def test_slab_bounds_and_averaging(vol):
    assert slab_bounds(10, 23, 5) == (8, 13)
    assert slab_bounds(0, 23, 5) == (0, 5) and slab_bounds(22, 23, 5) == (18, 23)
    assert slab_bounds(3, 4, 9) == (0, 4) and slab_bounds(2, 23, 1) == (2, 3)
    xy, xz, yz = cut_slices(vol, (10, 3, 36), 3)
    assert xy.shape == (31, 37) and xz.shape == (23, 37) and yz.shape == (23, 31)
    np.testing.assert_allclose(xy, vol[9:12].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(xz, vol[:, 2:5, :].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(yz, vol[:, :, 34:37].mean(axis=2), rtol=1e-6)
    one = cut_slices(vol, (10, 3, 36), 1)
    np.testing.assert_array_equal(one[0], vol[10])
    np.testing.assert_array_equal(one[1], vol[:, 3, :])
    np.testing.assert_array_equal(one[2], vol[:, :, 36])
    m = ViewModel()
    m.ingest(volume(1, 1.0, vol))
    m.set_crosshair(z=10.7, y=3, x=99)  # floored and clipped
    m.set_slab(3)
    v = m.view()
    assert v.crosshair == (10, 3, 36) and v.slab == 3
    np.testing.assert_allclose(v.yz, vol[:, :, 34:37].mean(axis=2), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 1"):
        m.set_slab(0)


def test_live_slices_at_the_service_cut_and_volume_cuts_elsewhere(vol):
    m = ViewModel()
    full = np.repeat(np.repeat(np.repeat(vol, 2, 0), 2, 1), 2, 2)  # the service's full-resolution grid
    centre = tuple(n // 2 for n in full.shape)
    m.ingest(volume(1, 1.0, vol, voxel_nm=1.0))  # downsampled 2x for viewers
    m.ingest(slices_of(full, 2, centre))
    assert m.reference_shape == full.shape and m.crosshair == centre and m.voxel_nm == 0.5
    v = m.view()
    assert v.live and v.seq == 2 and v.scale == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(v.xz, full[:, centre[1], :])
    m.set_crosshair(x=10)  # off the service's cut: cut the (coarser) volume at the same place
    v = m.view()
    assert not v.live and v.index == (centre[0] // 2, centre[1] // 2, 5) and v.scale == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(v.yz, vol[:, :, 5])


def test_percentile_levels_ignore_outliers_and_lock_holds_them(vol):
    data = vol.copy()
    data[0, 0, :5] = 1e6  # a few hot voxels
    lo, hi = percentile_levels(data, 0.5, 99.5)
    assert 0.0 <= lo < 0.05 and 0.9 < hi < 1.0001
    assert percentile_levels(np.full((4, 4), 3.0)) == (2.5, 3.5)
    assert percentile_levels(np.full((4, 4), np.nan)) is None
    m = ViewModel()
    m.ingest(volume(1, 1.0, data))
    levels = m.auto_levels(m.view())
    assert levels[1] < 1.0 + 1e-3
    m.lock_levels(True)
    m.ingest(volume(2, 2.0, data * 10))
    assert m.auto_levels(m.view()) == levels  # held across updates
    m.lock_levels(False)
    assert m.auto_levels(m.view())[1] > 5
    m.set_levels(0.2, 0.4)
    assert m.levels_locked and m.auto_levels(m.view()) == (0.2, 0.4)
    with pytest.raises(ValueError, match="low < high"):
        m.set_levels(1.0, 1.0)
    m.set_colormap("viridis")
    assert m.colormap == "viridis"
    with pytest.raises(ValueError, match="viridis"):
        m.set_colormap("jet")


def test_coverage_data_newest_window_wedge_and_gap():
    m = ViewModel()
    m.ingest(StartMsg(stream_id=SID, frame_shape=(5, 7), dtype="float32", scheme="golden",
                      tilt_range_deg=(-60.0, 70.0)))
    angles = [0.0, 30.0, -30.0, 60.0, -50.0, 10.0]
    for i, a in enumerate(angles):
        m.ingest(frame(i, a))
    m.ingest(metrics(1, window_frames=4, frames_seen=6))
    c = m.coverage()
    np.testing.assert_array_equal(c.angles_deg, angles)
    assert c.newest_deg == 10.0 and c.tilt_range_deg == (-60.0, 70.0)
    assert c.in_window.tolist() == [False, False, True, True, True, True]
    assert c.wedge_deg == ((-90.0, -60.0), (70.0, 90.0))
    assert c.max_gap_deg == pytest.approx(50.0)  # window angles -50, -30, 10, 60 in [-60, 70]: -30 → 10 ... 10 → 60
    assert c.frames_total == 6


def test_status_rates_drops_latency_and_stream_messages():
    clock = Clock()
    m = ViewModel(ModelConfig(stall_after_s=5.0, silent_after_s=8.0), recon_endpoint="tcp://r:1",
                  frames_endpoint="tcp://f:2", clock=clock)
    st = m.status()
    assert st.state == "waiting" and "tcp://r:1" in st.message
    # A late joiner: the first frame it sees is seq 40; that is not a loss.
    for k, seq in enumerate([40, 41, 42, 45, 46, 47, 48, 49, 50, 51]):
        clock.t = 100.0 + 0.1 * k
        m.ingest(frame(seq, float(seq)))
        m.ingest(metrics(seq, latency_s=0.08, frames_seen=seq + 1, last_frame_seq=seq))
    m.ingest(slices_of(np.ones((3, 4, 5), np.float32), 7, (1, 2, 2)))
    m.ingest(slices_of(np.ones((3, 4, 5), np.float32), 10, (1, 2, 2)))
    st = m.status()
    assert st.frames_dropped == 2 and st.updates_dropped == 2
    assert st.frames_per_s == pytest.approx(11 / 0.9, rel=1e-6)  # 40 → 51 over 0.9 s
    assert st.latency_s == pytest.approx(0.08) and st.series_id == SID and st.frames_seen == 52
    assert st.level == "warn" and "dropping" in st.message
    v = m.view()
    clock.t += 0.02
    m.note_displayed(v)
    assert m.status().end_to_end_s == pytest.approx(0.08 + 0.02 + 0.0, abs=1e-6)
    clock.t += 3.0
    m.note_displayed(m.view())  # the same slices drawn again 3 s later (stream stopped): no new delay
    assert m.status().end_to_end_s == pytest.approx(0.1, abs=1e-6)
    clock.t += 3.0
    m.ingest(metrics(60, latency_s=0.08))  # the service still talks, but no new frames
    st = m.status()
    assert st.state == "stalled" and "No new frames for 6 s" in st.message and st.frames_per_s == 0.0
    clock.t += 9.0
    st = m.status()
    assert st.state == "silent" and st.level == "error"
    m.ingest(EndMsg(stream_id=SID, n_frames=52, reason="complete"))
    st = m.status()
    assert st.state == "ended" and "complete" in st.message and "52 frames" in st.message
    assert "series" in st.summary() and "dropped 2" in st.summary()


def test_new_series_resets_state_and_retired_series_are_ignored(vol):
    clock = Clock()
    m = ViewModel(clock=clock)
    m.ingest(volume(1, 1.0, vol))
    m.ingest(frame(0, 12.0, temperature_C=300.0, dose_e_per_A2=5.0))
    m.ingest(metrics(1, sirt_residual=0.5, dip_heldout_loss=0.7))
    assert set(m.traces()) == {"temperature_C", "dose_e_per_A2", "sirt_residual", "dip_heldout_loss"}
    m.set_index(0)
    m.set_follow_live(False)
    clock.t += 1
    assert m.ingest(frame(0, -5.0, sid="series-b", shape=(9, 11)))
    assert m.series_id == "series-b" and m.n_history == 0 and m.follow_live
    assert m.coverage().angles_deg.tolist() == [-5.0] and "temperature_C" not in m.traces()
    st = m.status()
    assert "New series series-b" in st.message and st.level == "info"
    assert not m.ingest(volume(2, 2.0, vol))  # late message of the old series: ignored
    assert m.n_history == 0 and m.series_id == "series-b"
    clock.t += 11
    assert "New series" not in m.status().message


def test_status_shows_what_the_service_rejected_and_why():
    m = ViewModel(ModelConfig(), recon_endpoint="tcp://r:1")
    m.ingest(metrics(0, frames_seen=3, last_frame_seq=2, rejected_total=0))
    assert m.status().service_rejects == {} and "service rejected" not in m.status().summary()
    m.ingest(metrics(1, frames_seen=4, last_frame_seq=3, rejected_total=5,
                     **{"rejected.foreign_sender": 3, "rejected.garbage": 2, "rejected.no_start": 0}))
    st = m.status()
    assert st.service_rejects == {"foreign_sender": 3, "garbage": 2}
    assert "service rejected 5 (foreign_sender 3, garbage 2)" in st.summary()


def test_metric_names_a_publisher_invents_cannot_grow_the_traces_without_bound():
    from tiltstream.viz.metrics import MAX_TRACES

    m = ViewModel()
    m.ingest(MetricsMsg(stream_id="s", seq=0, t_s=0.0, values={"sirt_residual": 0.5}))
    for i in range(1, 40):
        m.ingest(MetricsMsg(stream_id="s", seq=i, t_s=float(i),
                            values={"sirt_residual": 0.5, **{f"loss_{i}_{k}": 1.0 for k in range(16)}}))
    traces = m.traces()
    assert len(traces) == MAX_TRACES
    assert len(traces["sirt_residual"][0]) == 40  # a known trace goes on
