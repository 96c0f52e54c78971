"""The monitor's view model with the online DIP beside the streaming SIRT (no Qt): routing, newer
estimates replacing older ones, choosing the reconstruction, the slider over DIP time points."""

import numpy as np
import pytest

from tiltstream.stream.messages import MetricsMsg, SlicesMsg, VolumeMsg
from tiltstream.viz import ModelConfig, ViewModel
from tiltstream.viz.history import EstimateHistory, VolumeEntry

SID = "series-dip"
SHAPE = (23, 31, 37)  # the SIRT's grid (Z, Y, X); the DIP's is binned ×2 below
DIP_SHAPE = (11, 15, 18)


def sirt_volume(seq, t_s, value, n_used=60):
    return VolumeMsg(stream_id=SID, seq=seq, t_s=t_s, data=np.full(SHAPE, value, np.float32), source="sirt",
                     n_frames_used=n_used, voxel_nm=0.5)


def dip_volume(seq, t_s, n_frames, data=None):
    """A DIP volume whose voxels all hold its time (unless ``data``): what is shown tells where it came from."""
    data = np.full(DIP_SHAPE, t_s, np.float32) if data is None else data
    return VolumeMsg(stream_id=SID, seq=seq, t_s=t_s, data=data, source="dip", n_frames_used=n_frames,
                     voxel_nm=1.0)


def dip_metrics(seq, t_s, n_frames, nrmse=0.2):
    return MetricsMsg(stream_id=SID, seq=seq, t_s=t_s, values={
        "dip_steps": 10.0 * n_frames, "dip_frames": float(n_frames), "dip_loss": 0.01,
        "dip_steps_per_s": 2.0, "dip_heldout_nrmse": nrmse})


def publish_estimate(m, first_seq, times, n_frames, *, metrics=True, nrmse=0.2):
    """One estimate as the service sends it: a volume per time, then its metrics."""
    for k, t in enumerate(times):
        m.ingest(dip_volume(first_seq + k, float(t), n_frames))
    if metrics:
        m.ingest(dip_metrics(first_seq + len(times), float(times[-1]), n_frames, nrmse))


def test_dip_volumes_are_kept_apart_from_the_sirt_history():
    m = ViewModel(ModelConfig(history_volumes=8))
    for seq in range(1, 4):
        m.ingest(sirt_volume(seq, 10.0 * seq, float(seq)))
    assert not m.dip_available
    publish_estimate(m, 100, [0.0, 10.0, 20.0, 30.0], n_frames=30)
    assert m.dip_available and len(m.dip) == 4 and all(e.source == "dip" for e in m.dip)
    assert m.n_history == 3 and all(e.source == "sirt" for e in m.history)  # the SIRT slider is unchanged
    assert m.source == "sirt" and m.view().source == "sirt" and m.view().seq == 3
    assert m.reference_shape == SHAPE  # binned DIP volumes do not take over the grid
    # A stream with only DIP volumes shows them (nothing else to show), on their own grid.
    only = ViewModel()
    publish_estimate(only, 1, [0.0, 5.0], n_frames=20)
    assert only.source == "dip" and only.reference_shape == DIP_SHAPE and only.view().t_s == 5.0


def test_a_newer_estimate_replaces_the_older_one_over_its_span():
    h = EstimateHistory(capacity=16)

    def add(t, n_frames):
        h.append(VolumeEntry(seq=0, t_s=t, data=np.zeros((2, 2, 2), np.float32), source="dip",
                             n_frames_used=n_frames, voxel_nm=None, received_s=0.0))

    for t in (0.0, 10.0, 20.0):
        add(t, 30)
    h.close_estimate()
    assert list(h.times()) == [0.0, 10.0, 20.0] and h.estimates == 1
    add(0.0, 40)
    add(12.0, 40)  # mid-burst: new volumes up to t = 12, the older estimate's beyond
    assert list(h.times()) == [0.0, 12.0, 20.0]
    assert [h.estimate_of(i) for i in range(3)] == [2, 2, 1]
    add(24.0, 40)
    add(36.0, 40)
    assert list(h.times()) == [0.0, 12.0, 24.0, 36.0] and {h.estimate_of(i) for i in range(4)} == {2}
    # No metrics in between: the same frame count restarting at t = 0 is a new estimate (a re-send).
    add(0.0, 40)
    assert h.estimates == 3 and list(h.times()) == [0.0, 12.0, 24.0, 36.0]
    h.close_estimate()
    # Volumes lost on the way: the older estimate's stay where the newer one has none beyond its span.
    add(0.0, 50)
    add(30.0, 50)
    assert list(h.times()) == [0.0, 30.0, 36.0] and [h.estimate_of(i) for i in range(3)] == [4, 4, 2]
    assert h.nbytes == 3 * 32
    # Bounded: beyond capacity the oldest estimate goes first, then the earliest times.
    small = EstimateHistory(capacity=3)
    for t in (0.0, 1.0, 2.0):
        small.append(VolumeEntry(0, t, np.zeros(1, np.float32), "dip", 5, None, 0.0))
    small.close_estimate()
    for t in (5.0, 6.0):  # (a series whose oldest frames the DIP dropped: no overlap)
        small.append(VolumeEntry(0, t, np.zeros(1, np.float32), "dip", 9, None, 0.0))
    assert list(small.times()) == [2.0, 5.0, 6.0] and small.evicted == 2
    for t in (7.0, 8.0):  # the newest estimate alone is longer than the capacity: its earliest go
        small.append(VolumeEntry(0, t, np.zeros(1, np.float32), "dip", 9, None, 0.0))
    assert list(small.times()) == [6.0, 7.0, 8.0] and small.evicted == 4
    with pytest.raises(ValueError, match="at least 1"):
        EstimateHistory(capacity=0)


def test_source_choice_drives_slices_and_slider_over_dip_time_points():
    m = ViewModel(ModelConfig(history_volumes=8))
    for seq in range(1, 5):
        m.ingest(sirt_volume(seq, 10.0 * seq, 100.0 + seq))
    m.set_source("dip")  # chosen before any DIP data: the SIRT stays on screen meanwhile
    assert m.source == "sirt" and m.view().source == "sirt"
    publish_estimate(m, 100, [0.0, 12.0, 24.0, 36.0], n_frames=40)
    assert m.source == "dip"  # ... and the DIP shows as soon as it arrives
    v = m.view()
    assert v.source == "dip" and v.t_s == 36.0 and not v.live and v.n_frames_used == 40 and v.position == (4, 4)
    assert v.xy.shape == DIP_SHAPE[1:] and v.scale == pytest.approx((23 / 11, 31 / 15, 37 / 18))
    np.testing.assert_array_equal(v.xy, 36.0)  # cut from the newest DIP time point
    assert m.n_history == 4 and list(m.history_times()) == [0.0, 12.0, 24.0, 36.0] and m.index == 3
    assert [e.t_s for e in m.entries()] == [0.0, 12.0, 24.0, 36.0]
    m.set_index(1)  # scrub to t = 12
    assert not m.follow_live and m.view().t_s == 12.0
    # A newer estimate over a longer series: the view stays at (about) the same time, on the new volume.
    publish_estimate(m, 200, [0.0, 13.0, 26.0, 39.0, 52.0], n_frames=50)
    v = m.view()
    assert v.t_s == 13.0 and v.n_frames_used == 50 and m.index == 1 and m.n_history == 5
    np.testing.assert_array_equal(v.yz, 13.0)
    # Back to the SIRT while scrubbed: its volume closest to t = 13 (t = 10, seq 1).
    m.set_source("sirt")
    assert m.view().source == "sirt" and m.view().seq == 1 and m.n_history == 4 and not m.follow_live
    m.set_source("dip")
    assert m.view().t_s == 13.0
    m.set_follow_live(True)  # live: the newest DIP time point
    assert m.view().t_s == 52.0 and m.index == 4
    m.set_follow_live(False)
    publish_estimate(m, 300, [0.0, 15.0, 30.0, 45.0, 60.0], n_frames=60)
    assert m.view().t_s == 45.0  # stays at t = 52: 45 is the closest now (60 is further)
    publish_estimate(m, 400, [0.0, 13.0, 26.0, 39.0, 52.0, 65.0], n_frames=70)
    assert m.view().t_s == 52.0  # the remembered time did not drift to 45
    with pytest.raises(ValueError, match="sirt, dip"):
        m.set_source("fbp")


def test_dip_view_never_shows_the_sirt_live_slices():
    m = ViewModel()
    vol = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    index = tuple(n // 2 for n in SHAPE)
    m.ingest(SlicesMsg(stream_id=SID, seq=5, t_s=40.0, xy=vol[index[0]], xz=np.ascontiguousarray(vol[:, index[1], :]),
                       yz=np.ascontiguousarray(vol[:, :, index[2]]), index=index, source="sirt", voxel_nm=0.5))
    assert m.view().live and m.source == "sirt"
    publish_estimate(m, 10, [0.0, 20.0], n_frames=16)
    m.set_source("dip")
    v = m.view()
    assert not v.live and v.source == "dip" and v.t_s == 20.0
    np.testing.assert_array_equal(v.xz, 20.0)
    m.set_source("sirt")
    assert m.view().live


def test_dip_metrics_feed_the_status_and_the_score_trace_without_blanking_the_sirt():
    m = ViewModel(recon_endpoint="tcp://r:1")
    m.ingest(sirt_volume(1, 30.0, 1.0))
    m.ingest(MetricsMsg(stream_id=SID, seq=1, t_s=30.0, values={
        "sirt_residual": 0.05, "latency_s": 0.04, "frames_seen": 80.0, "window_frames": 60.0,
        "last_frame_seq": 79.0}))
    st = m.status()
    assert st.dip_frames is None and not st.dip_available and "DIP" not in st.summary()
    publish_estimate(m, 10, [0.0, 15.0, 29.0], n_frames=72, nrmse=0.183)
    st = m.status()
    assert st.latency_s == pytest.approx(0.04) and st.frames_seen == 80  # the SIRT's numbers stay
    assert m.metrics()["window_frames"] == 60.0 and m.metrics()["dip_frames"] == 72.0
    assert st.dip_available and st.dip_frames == 72 and st.dip_steps == 720
    assert st.dip_heldout_nrmse == pytest.approx(0.183) and st.dip_age_s == pytest.approx(0.0, abs=1.0)
    assert st.source == "sirt" and "showing SIRT live" in st.summary()
    assert "DIP 72 frames fitted, held-out NRMSE 0.183" in st.summary()
    m.set_source("dip")
    assert m.status().source == "dip" and "showing DIP" in m.status().summary()
    # Only the held-out score is plotted; counters and the training loss are not.
    assert set(m.traces()) == {"sirt_residual", "dip_heldout_nrmse"}
    t, v = m.traces()["dip_heldout_nrmse"]
    assert t.tolist() == [29.0] and v.tolist() == pytest.approx([0.183])


def test_a_new_series_clears_the_dip_but_keeps_the_choice():
    m = ViewModel()
    publish_estimate(m, 1, [0.0, 5.0], n_frames=20)
    m.ingest(sirt_volume(1, 5.0, 1.0))
    m.set_source("dip")
    other = VolumeMsg(stream_id="series-2", seq=0, t_s=1.0, data=np.ones(SHAPE, np.float32), source="sirt",
                      n_frames_used=3)
    m.ingest(other)
    assert not m.dip_available and len(m.dip) == 0 and m.status().dip_frames is None
    assert m.source == "sirt"  # nothing from the DIP yet in this series
    m.ingest(VolumeMsg(stream_id="series-2", seq=0, t_s=0.5, data=np.zeros(DIP_SHAPE, np.float32), source="dip",
                       n_frames_used=16))
    assert m.source == "dip"
