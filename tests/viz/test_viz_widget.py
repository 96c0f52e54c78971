"""The Qt monitor, offscreen: the rendered panels show the right data in the right orientation."""

import time

import numpy as np
import pytest

pytest.importorskip("pyqtgraph")
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets  # noqa: E402

from tiltstream.sim import make_phantom, simulate_series  # noqa: E402
from tiltstream.stream.messages import FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg  # noqa: E402
from tiltstream.stream.sockets import tcp_endpoint  # noqa: E402
from tiltstream.stream.transport import Publisher  # noqa: E402
from tiltstream.viz import ModelConfig, StreamReceiver, ViewModel  # noqa: E402
from tiltstream.viz.window import MonitorWindow  # noqa: E402

SID = "0123456789abcdef"
SHAPE = (24, 36, 50)  # (Z, Y, X): all different, so a transposed panel cannot pass


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def dispose(window):
    """Delete a window now, not during interpreter shutdown (where PySide may crash)."""
    window.close()
    window.deleteLater()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)


@pytest.fixture(scope="module")
def phantom_volume():
    """A tilted, raised nanorod plus one off-centre marker in each central plane (no symmetry left)."""
    ph = make_phantom("nanorod", shape=SHAPE, axis_tilt_deg=35.0, axis_elevation_deg=30.0, static=True)
    vol = ph.contrast(0.0, 1.8).astype(np.float32)
    vol /= vol.max()
    nz, ny, nx = SHAPE
    vol[nz // 2 - 1:nz // 2 + 2, 3:7, nx - 9:nx - 4] = 1.0  # XY plane: top right
    vol[2:6, ny // 2 - 1:ny // 2 + 2, 4:9] = 1.0  # XZ plane: top left
    vol[nz - 7:nz - 3, ny - 8:ny - 4, nx // 2 - 1:nx // 2 + 2] = 1.0  # YZ plane: Z high, Y high
    return vol


def to_gray(img: QtGui.QImage) -> np.ndarray:
    img = img.convertToFormat(QtGui.QImage.Format.Format_RGB32)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    return arr[:, : img.width(), :3].astype(np.float64).mean(axis=2)


def shrink(a: np.ndarray, shape) -> np.ndarray:
    """Area-average ``a`` onto ``shape`` (panel pixels → data pixels)."""
    rows = np.linspace(0, a.shape[0], shape[0] + 1).astype(int)
    cols = np.linspace(0, a.shape[1], shape[1] + 1).astype(int)
    return np.array([[a[r0:r1, c0:c1].mean() for c0, c1 in zip(cols[:-1], cols[1:])]
                     for r0, r1 in zip(rows[:-1], rows[1:])])


def corr(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def check_panel(window, name, expected, min_corr=0.9):
    """The panel's pixels match ``expected`` (rows down, cols right) far better than any flip/transpose."""
    check_pixels(name, to_gray(window.panel_image(name)), expected, min_corr)


def check_pixels(name, pixels, expected, min_corr=0.9):
    h, w = pixels.shape
    rows, cols = expected.shape
    assert pixels.std() > 10, f"{name}: blank panel"
    assert abs((w / h) / (cols / rows) - 1) < 0.08, f"{name}: aspect {w}x{h} does not fit data {cols}x{rows}"
    seen = shrink(pixels, expected.shape)
    c = corr(seen, expected)
    assert c > min_corr, f"{name}: correlation {c:.3f} with the expected slice"
    for label, wrong in (("flipped up-down", expected[::-1]), ("flipped left-right", expected[:, ::-1]),
                         ("rotated", expected[::-1, ::-1])):
        assert corr(seen, wrong) < c - 0.3, f"{name}: looks {label}"


def pump(app, seconds, until=lambda: False):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        app.processEvents()
        time.sleep(0.01)


def make_window(app, model):
    w = MonitorWindow(model, display_hz=30)
    w.resize(1400, 900)
    w.show()
    return w


def test_panels_show_the_volume_in_the_right_orientation(app, phantom_volume, tmp_path):
    model = ViewModel()
    model.ingest(VolumeMsg(stream_id=SID, seq=1, t_s=3.0, data=phantom_volume, source="sirt", n_frames_used=20,
                           voxel_nm=0.4))
    w = make_window(app, model)
    try:
        pump(app, 0.3)
        nz, ny, nx = SHAPE
        check_panel(w, "xy", phantom_volume[nz // 2])
        check_panel(w, "xz", phantom_volume[:, ny // 2, :])
        check_panel(w, "yz", phantom_volume[:, :, nx // 2].T)  # YZ is drawn with Z to the right
        # Move the crosshair: all three panels follow it.
        z, y, x = nz // 2 + 2, ny // 2 + 2, nx // 2 + 2  # off-centre: the rod is no longer point-symmetric
        model.set_crosshair(z=z, y=y, x=x)
        check_panel(w, "xy", phantom_volume[z], min_corr=0.8)
        check_panel(w, "xz", phantom_volume[:, y, :], min_corr=0.8)
        check_panel(w, "yz", phantom_volume[:, :, x].T, min_corr=0.8)
        # Levels reach the pixels: with black..white = 0..2 the phantom (max 1.0) is mid-grey, not white.
        plane = phantom_volume[z]
        solid = plane > 0.95

        def solid_grey():
            return float(np.median(shrink(to_gray(w.panel_image("xy")), plane.shape)[solid]))

        model.set_levels(0.0, 2.0)
        assert 115 < solid_grey() < 140
        model.lock_levels(False)
        assert solid_grey() > 235
        png = w.save_snapshot(tmp_path / "shot.png")
        assert png.stat().st_size > 10_000
        assert QtGui.QImage(str(png)).width() == w.width()
    finally:
        dispose(w)


def test_widget_fed_a_simulated_stream_over_the_network(app, phantom_volume):
    """Publisher → StreamReceiver thread → model → panels, with sim frames, slices, volume and metrics."""
    sim = simulate_series(make_phantom("nanorod", shape=SHAPE, axis_tilt_deg=35.0, static=True), n_frames=12,
                          blur=False)
    frames = sim.frames.copy()
    frames[-1, 2:6, -8:-3] = frames[-1].max()  # a marker top right: the rod's projection alone is symmetric
    nz, ny, nx = SHAPE
    index = (nz // 2, ny // 2, nx // 2)
    # Queues deep enough for the whole series: this test is about what the panels show, not drops
    # (with the viewer default, sndhwm=2, a loaded machine may drop a frame or the last volume).
    with Publisher(tcp_endpoint(0), sndhwm=64) as rec_pub, Publisher(tcp_endpoint(0), sndhwm=64) as frame_pub:
        model = ViewModel(recon_endpoint=rec_pub.endpoint, frames_endpoint=frame_pub.endpoint)
        w = make_window(app, model)
        try:
            with StreamReceiver(model, rec_pub.endpoint, frame_pub.endpoint):
                pump(app, 0.3)  # let the subscriptions reach the publishers
                frame_pub.send(StartMsg(stream_id=SID, frame_shape=sim.frames.shape[1:], dtype="float32",
                                        scheme="golden", tilt_range_deg=(-70.0, 70.0)))
                for k in range(len(sim)):
                    frame_pub.send(FrameMsg(seq=k, stream_id=SID, angle_deg=float(sim.angles_deg[k]),
                                            t_s=float(sim.times_s[k]), exposure_s=0.1, data=frames[k],
                                            dose_e_per_A2=100.0 * (k + 1), temperature_C=300.0 + k))
                    rec_pub.send(MetricsMsg(stream_id=SID, seq=k + 1, t_s=float(sim.times_s[k]),
                                            values={"sirt_residual": 1.0 / (k + 1), "latency_s": 0.05,
                                                    "frames_seen": k + 1.0, "last_frame_seq": float(k)}))
                    time.sleep(0.01)
                rec_pub.send(VolumeMsg(stream_id=SID, seq=20, t_s=5.0, data=phantom_volume, source="sirt",
                                       n_frames_used=12, voxel_nm=0.4))
                rec_pub.send(SlicesMsg(stream_id=SID, seq=20, t_s=5.0, xy=phantom_volume[index[0]],
                                       xz=np.ascontiguousarray(phantom_volume[:, index[1], :]),
                                       yz=np.ascontiguousarray(phantom_volume[:, :, index[2]]), index=index,
                                       source="sirt", voxel_nm=0.4))
                pump(app, 5.0, until=lambda: model.view() is not None and model.view().seq == 20
                     and model.latest_frame() is not None and model.latest_frame().seq == len(sim) - 1)
                pump(app, 0.6)  # one slow refresh (coverage, traces, status)
            view = model.view()
            assert view is not None and view.live and view.seq == 20
            check_panel(w, "xy", phantom_volume[index[0]])
            check_panel(w, "yz", phantom_volume[:, :, index[2]].T)
            check_panel(w, "frame", frames[-1], min_corr=0.85)
            assert model.coverage().angles_deg.size == len(sim)
            assert "θ = " in w.frame.title.text and f"#{len(sim) - 1}" in w.frame.title.text
            assert w.status_line.where.text().count("tcp://127.0.0.1") == 2
            assert set(model.traces()) >= {"sirt_residual", "temperature_C", "dose_e_per_A2"}
        finally:
            dispose(w)


def test_controls_drive_the_model(app, phantom_volume, tmp_path):
    """Crosshair drag, slider + follow-live, slab, colormap, histogram levels + lock, snapshot, export."""
    model = ViewModel(ModelConfig(history_volumes=8))
    for seq in range(1, 5):
        model.ingest(VolumeMsg(stream_id=SID, seq=seq, t_s=float(seq), data=phantom_volume * seq, source="sirt",
                               n_frames_used=seq, voxel_nm=0.4))
    w = make_window(app, model)
    w.out_dir = tmp_path
    try:
        pump(app, 0.3)
        x_line = w.ortho.lines["xy"][0]  # the vertical line in XY is x
        x_line.setValue(40.3)  # what a drag does
        assert model.crosshair[2] == 40
        assert w.ortho.lines["xz"][0].value() == pytest.approx(40.5)  # XZ's x line follows, snapped
        assert w.shown_view.index[2] == 40
        w.controls.slider.setValue(1)  # scrub back
        assert not model.follow_live and not w.controls.live_button.isChecked() and w.shown_view.seq == 2
        w.controls.live_button.setChecked(True)
        assert model.follow_live and w.shown_view.seq == 4
        w.controls.slab.setValue(3)
        assert model.slab == 3 and w.shown_view.slab == 3
        w.controls.cmap.setCurrentText("inferno")
        assert model.colormap == "inferno"
        assert w.ortho.images["xy"].lut is not None and tuple(w.ortho.images["xy"].lut[-1]) == (252, 255, 164)
        w.ortho.hist.region.setRegion((0.1, 0.6))  # the user drags the histogram
        w.ortho.hist.region.sigRegionChangeFinished.emit(w.ortho.hist.region)
        assert model.levels == pytest.approx((0.1, 0.6)) and model.levels_locked and w.controls.lock.isChecked()
        model.ingest(VolumeMsg(stream_id=SID, seq=5, t_s=5.0, data=phantom_volume * 9, source="sirt",
                               n_frames_used=5, voxel_nm=0.4))
        pump(app, 0.2)
        assert w.shown_view.seq == 5 and model.levels == pytest.approx((0.1, 0.6))  # held
        w.controls.lock.setChecked(False)
        assert model.levels[1] > 1.0  # auto again
        assert w.save_snapshot().parent == tmp_path
        gif = w.export_history(fmt="gif")
        assert gif.exists() and gif.suffix == ".gif"
    finally:
        dispose(w)


def bin2(vol: np.ndarray) -> np.ndarray:
    z, y, x = (n // 2 for n in vol.shape)
    return vol[:2 * z, :2 * y, :2 * x].reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5)).astype(np.float32)


def test_dip_selected_the_panels_slider_status_and_snapshot_show_the_dip(app, phantom_volume, tmp_path):
    """A SIRT stream plus DIP estimates of another object (binned ×2): the selector appears, and with
    DIP chosen the panels, the slider, the status line and the saved PNG show the DIP volume."""
    other = make_phantom("nanorod", shape=SHAPE, axis_tilt_deg=-50.0, axis_elevation_deg=-20.0, static=True)
    dip_full = other.contrast(0.0, 1.8).astype(np.float32)
    dip_full /= dip_full.max()
    nz, ny, nx = SHAPE
    # markers where the SIRT volume has none: XY bottom left, XZ bottom right, YZ (z mid, y low)
    dip_full[nz // 2 - 2:nz // 2 + 2, ny - 10:ny - 2, 2:12] = 1.0
    dip_full[nz - 8:nz - 2, ny // 2 - 2:ny // 2 + 2, nx - 14:nx - 4] = 1.0
    dip_full[2:8, ny - 12:ny - 4, nx // 2 - 2:nx // 2 + 2] = 1.0
    dip = bin2(dip_full)  # (12, 18, 25): the DIP publishes binned volumes
    model = ViewModel()
    model.ingest(VolumeMsg(stream_id=SID, seq=1, t_s=50.0, data=phantom_volume, source="sirt", n_frames_used=60,
                           voxel_nm=0.4))
    w = make_window(app, model)
    try:
        pump(app, 0.3)
        assert w.controls.source_box.isHidden() and not w.status_line.source.isVisibleTo(w)  # SIRT only: no selector
        for k, t in enumerate((0.0, 24.0, 48.0)):
            model.ingest(VolumeMsg(stream_id=SID, seq=k, t_s=t, data=dip * (1 + k), source="dip", n_frames_used=72,
                                   voxel_nm=0.8))
        model.ingest(MetricsMsg(stream_id=SID, seq=3, t_s=48.0, values={
            "dip_steps": 900.0, "dip_frames": 72.0, "dip_loss": 0.01, "dip_heldout_nrmse": 0.183}))
        w.refresh(force=True)
        assert not w.controls.source_box.isHidden() and w.controls.source_box.buttons["sirt"].isChecked()
        check_panel(w, "xy", phantom_volume[nz // 2])  # still the SIRT until the operator switches
        w.controls.source_box.buttons["dip"].click()
        assert model.source == "dip" and w.shown_view.source == "dip" and w.shown_view.t_s == 48.0
        cz, cy, cx = (c * m // n for c, m, n in zip(model.crosshair, dip.shape, SHAPE))
        expected = {"xy": dip[cz], "xz": dip[:, cy, :], "yz": dip[:, :, cx].T}
        for name, slice_ in expected.items():
            check_panel(w, name, slice_)
        # The slider runs over the DIP's time points; the status line names the source and the progress.
        assert w.controls.slider.maximum() == 2 and w.controls.slider.value() == 2 and w.controls.time_label.text().startswith("DIP t = 48.0 s")
        text = w.status_line.source.text()
        assert "DIP</b>" in text and "72</b> frames fitted" in text and "0.183" in text
        assert w.status_line.source.isVisibleTo(w)
        assert "dip_heldout_nrmse" in w.traces.curves and w.traces.plots["loss"].getAxis("right").isVisible()
        for seq, t, score in ((4, 49.0, 0.021), (5, 50.0, 0.025)):  # small scores read as they are, not ×0.001
            model.ingest(MetricsMsg(stream_id=SID, seq=seq, t_s=t, values={"dip_heldout_nrmse": score}))
        w.refresh(force=True)
        w.grab()  # the score axis takes its range (and would take an SI prefix) when drawn
        right = w.traces.plots["loss"].getAxis("right")
        assert right.autoSIPrefixScale == 1.0 and "0.001" not in right.labelString()
        w.controls.slider.setValue(0)
        assert w.shown_view.t_s == 0.0 and not model.follow_live
        assert w.traces.markers[0].isVisible() and w.traces.markers[0].value() == 0.0
        # The saved PNG, not only the live widget, shows the DIP in the XY panel.
        png = w.save_snapshot(tmp_path / "dip.png")
        shot = QtGui.QImage(str(png))
        rect = w.ortho.panel_rect("xy")
        rect.moveTopLeft(w.ortho.mapTo(w, rect.topLeft()))
        pixels = to_gray(shot.copy(rect))
        check_pixels("snapshot xy", pixels, dip[cz])
        sirt_xy = phantom_volume[nz // 2]
        assert corr(shrink(pixels, sirt_xy.shape), sirt_xy) < 0.5  # not the SIRT volume
        # And back: the SIRT again.
        w.controls.source_box.buttons["sirt"].click()
        assert model.source == "sirt"
        check_panel(w, "xy", phantom_volume[nz // 2])
        assert not w.controls.time_label.text().startswith("DIP")
    finally:
        dispose(w)


def test_status_line_parts_never_overlap_on_a_narrow_window(app):
    """With a DIP, long endpoints and a message, the parts need more than 1600 px: state and numbers
    stay whole, so does the DIP's progress at 1600 px; the endpoints, the message (and the progress on
    a narrower window) give way (whole in their tooltips) instead of being drawn over the others."""
    from tiltstream.viz.records import Status
    from tiltstream.viz.statusline import StatusLine

    st = Status(recon_endpoint="tcp://127.0.0.1:46293", frames_endpoint="tcp://127.0.0.1:34967", state="ended",
                series_id=SID, frames_per_s=3.6, display_fps=14, latency_s=1.8, end_to_end_s=1.827,
                frames_seen=120, frames_dropped=0, updates_dropped=3, rejected=0,
                message="series 01234567 ended (complete, 120 frames)", level="info", source="dip",
                dip_available=True, dip_frames=120, dip_steps=500, dip_heldout_nrmse=0.117, dip_age_s=2.0)
    for width in (1600, 1100, 2400):
        w = QtWidgets.QMainWindow()
        try:
            w.resize(width, 300)
            line = StatusLine(w.statusBar())
            w.show()
            line.show(st)
            for _ in range(3):
                app.processEvents()
            parts = [line.state, line.where, line.numbers, line.source, line.message]
            assert all(p.isVisible() for p in parts)
            boxes = [p.geometry() for p in parts]
            for a, b in zip(boxes, boxes[1:]):
                assert a.right() < b.left(), (width, [(g.left(), g.right()) for g in boxes])
            for p in (line.state, line.numbers) + ((line.source,) if width >= 1600 else ()):
                assert p.width() >= p.sizeHint().width()
            assert "tcp://127.0.0.1:34967" in line.where.toolTip() and "120 frames" in line.message.toolTip()
        finally:
            dispose(w)


def test_status_line_texts_cut_short_with_an_ellipsis_and_peer_text_shown_literally(app):
    """A part too long for its room ends in "…" (not in letters clipped at the edge) and is whole in its
    tooltip; a message quoting a peer (an end/1 reason) is text, not markup."""
    from tiltstream.viz.records import Status
    from tiltstream.viz.statusline import StatusLine

    st = Status(recon_endpoint="tcp://127.0.0.1:46293", frames_endpoint="tcp://127.0.0.1:34967", state="ended",
                series_id=SID, frames_per_s=3.6, display_fps=14, latency_s=1.8, end_to_end_s=1.827,
                frames_seen=120, frames_dropped=0, updates_dropped=3, rejected=0,
                message="series 01234567 ended (<b>bold</b> <img src='x.png'>, 120 frames)", level="info",
                source="dip", dip_available=True, dip_frames=120, dip_steps=500, dip_heldout_nrmse=0.117, dip_age_s=2.0)
    for width, cut in ((1100, True), (3000, False)):
        w = QtWidgets.QMainWindow()
        try:
            w.resize(width, 300)
            line = StatusLine(w.statusBar())
            w.show()
            for _ in range(3):
                line.show(st)
                app.processEvents()
            where = QtGui.QTextDocumentFragment.fromHtml(line.where.text()).toPlainText()
            assert where.endswith("…") == cut, (width, where)
            assert line.where.fontMetrics().horizontalAdvance(where) <= line.where.contentsRect().width()
            assert "tcp://127.0.0.1:34967" in line.where.toolTip()
            assert "<b>" not in line.message.text() and "<img" not in line.message.text()
            assert "(<b>bold</b> <img src='x.png'>, 120 frames)" in line.message.toolTip()
            if not cut:
                assert QtGui.QTextDocumentFragment.fromHtml(line.message.text()).toPlainText() == st.message
        finally:
            dispose(w)
