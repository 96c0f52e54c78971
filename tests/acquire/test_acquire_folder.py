"""Folder watcher: complete files only, angles from sidecars and names, clear rejects, exactly once."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tiltstream.acquire import MemorySink
from tiltstream.acquire.folder import FolderWatcher, angle_from_name, read_sidecar
from tiltstream.stream.messages import EndMsg, FrameMsg, StartMsg

SHAPE = (23, 19)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 60000, SHAPE).astype(np.uint16)


def _tiff_bytes(data: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data)
    return buffer.getvalue()


def _watcher(folder: Path, sink: MemorySink, clock: FakeClock, **kw) -> FolderWatcher:
    kw = {"settle_s": 0.5, "sidecar_wait_s": 2.0, **kw}
    return FolderWatcher(folder, sink, clock=clock, **kw)


def _settle(watcher: FolderWatcher, clock: FakeClock, seconds: float = 0.6) -> list[Path]:
    """Poll now (files are seen) and after ``seconds`` (files have settled)."""
    watcher.poll()
    clock.now += seconds
    return watcher.poll()


@pytest.mark.parametrize(
    "name, angle",
    [
        ("tilt_+12.50deg_0007.tif", 12.5),
        ("tilt_-3deg_0001.tif", -3.0),
        ("series_0007_-3.2.tif", -3.2),
        ("series_0007_+45.tif", 45.0),
        ("scan_12.5.tiff", 12.5),
        ("2024-05-01_frame_-60.0.mrc", -60.0),
        ("a_7.5 degrees_0003.tif", 7.5),
    ],
)
def test_angle_from_name(name, angle):
    assert angle_from_name(name) == angle


@pytest.mark.parametrize(
    "name, match",
    [
        ("frame_0007.tif", "no angle in file name"),
        ("2024-05-01_frame_7.tif", "no angle in file name"),
        ("v1.2_-30.0.tif", "ambiguous"),
        ("a_+3deg_b_-4deg.tif", "ambiguous"),
    ],
)
def test_no_or_ambiguous_angle_in_name(name, match):
    with pytest.raises(ValueError, match=match):
        angle_from_name(name)


def test_sidecar_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"angle_deg": -12.5, "t_s": 3.25, "temperature_C": 410,
                                                 "stage_xyz": [1, 2, 3], "camera": "K3"}))
    (tmp_path / "b.txt").write_text("  -7.25 \n")
    (tmp_path / "c.txt").write_text("# from SerialEM\nangle_deg = 33.0\nt_s: 12.5\nexposure_s=0.2\n")
    (tmp_path / "d.json").write_text('{"angle_deg": 1')
    (tmp_path / "e.txt").write_text("t_s = 4\n")
    assert read_sidecar(tmp_path / "a.json") == {"angle_deg": -12.5, "t_s": 3.25, "temperature_C": 410.0,
                                                 "stage_xyz": (1.0, 2.0, 3.0)}
    assert read_sidecar(tmp_path / "b.txt") == {"angle_deg": -7.25}
    assert read_sidecar(tmp_path / "c.txt") == {"angle_deg": 33.0, "t_s": 12.5, "exposure_s": 0.2}
    with pytest.raises(ValueError, match="expected JSON"):
        read_sidecar(tmp_path / "d.json")
    with pytest.raises(ValueError, match="expected an angle_deg"):
        read_sidecar(tmp_path / "e.txt")


def test_files_with_sidecars_are_sent_once_in_order(tmp_path, rng):
    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, exposure_s=0.1, pixel_nm=0.5)
    images = [_image(rng) for _ in range(4)]
    for i, img in enumerate(images):
        tifffile.imwrite(tmp_path / f"frame_{i + 1:04d}.tif", img)
        sidecar = tmp_path / f"frame_{i + 1:04d}{'.json' if i % 2 else '.txt'}"
        if i % 2:
            sidecar.write_text(json.dumps({"angle_deg": 10.0 * i - 5, "t_s": 2.0 * i, "exposure_s": 0.25}))
        else:
            sidecar.write_text(f"angle_deg = {10.0 * i - 5}\nt_s = {2.0 * i}\n")
        assert len(_settle(watcher, clock)) == 1
    for _ in range(3):
        clock.now += 1.0
        assert watcher.poll() == []  # nothing twice
    watcher.close()
    msgs = sink.messages
    assert [type(m) for m in msgs] == [StartMsg] + [FrameMsg] * 4 + [EndMsg]
    start, frames = msgs[0], msgs[1:-1]
    assert start.frame_shape == SHAPE and start.dtype == "<u2" and start.pixel_nm == 0.5
    for i, (frame, img) in enumerate(zip(frames, images, strict=True)):
        np.testing.assert_array_equal(frame.data, img)
        assert (frame.seq, frame.angle_deg, frame.t_s) == (i, 10.0 * i - 5, 2.0 * i)
        assert frame.exposure_s == (0.25 if i % 2 else 0.1)
    assert msgs[-1].reason == "stopped" and msgs[-1].n_frames == 4
    assert watcher.rejected == {}


def test_several_files_in_one_poll_go_in_order_of_modification_time(tmp_path, rng):
    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, angle_from="filename")
    names = ["b_+30.0.tif", "c_-10.0.tif", "a_+5.0.tif"]
    for k, name in enumerate(names):
        tifffile.imwrite(tmp_path / name, _image(rng))
        os.utime(tmp_path / name, (1000.0 + k, 1000.0 + k))
    _settle(watcher, clock)
    assert [p.name for p in watcher.sent] == names
    assert [f.angle_deg for f in sink.frames] == [30.0, -10.0, 5.0]
    assert [f.t_s for f in sink.frames] == [0.0, 1.0, 2.0]  # modification times, from the first frame


def test_a_file_is_not_read_before_it_is_complete(tmp_path, rng, caplog):
    """A file written slowly in two halves is sent once, whole, after it settled."""
    caplog.set_level(logging.INFO, logger="tiltstream.acquire")
    img = _image(rng)
    raw = _tiff_bytes(img)
    sink = MemorySink()
    watcher = FolderWatcher(tmp_path, sink, angle_from="filename", poll_s=0.02, settle_s=0.4)
    stop = threading.Event()
    runner = threading.Thread(target=watcher.run, args=(stop,))
    runner.start()
    try:
        with open(tmp_path / "tilt_-42.5deg_0001.tif", "wb") as fh:
            fh.write(raw[: len(raw) // 2])
            fh.flush()
            time.sleep(0.3)  # shorter than settle_s: the watcher polls the half file many times
            fh.write(raw[len(raw) // 2:])
        tifffile.imwrite(tmp_path / "tilt_+7.0deg_0002.tif", img[::-1].copy())
        assert sink.wait_for(3, timeout_s=5.0)  # start/1 + 2 frames
        time.sleep(0.2)
    finally:
        stop.set()
        runner.join(timeout=5)
    frames = sink.frames
    assert [f.angle_deg for f in frames] == [-42.5, 7.0]
    np.testing.assert_array_equal(frames[0].data, img)
    assert watcher.rejected == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert isinstance(sink.messages[-1], EndMsg) and sink.messages[-1].n_frames == 2


def test_file_without_angle_is_reported_and_the_watch_goes_on(tmp_path, rng, caplog):
    caplog.set_level(logging.WARNING, logger="tiltstream.acquire")
    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, angle_from="filename")
    tifffile.imwrite(tmp_path / "tilt_+1.0deg_0001.tif", _image(rng))
    _settle(watcher, clock)
    tifffile.imwrite(tmp_path / "frame_0002.tif", _image(rng))
    _settle(watcher, clock)
    tifffile.imwrite(tmp_path / "tilt_-2.0deg_0003.tif", _image(rng))
    _settle(watcher, clock)
    assert [f.angle_deg for f in sink.frames] == [1.0, -2.0]
    assert [f.seq for f in sink.frames] == [0, 1]
    assert list(watcher.rejected) == [tmp_path / "frame_0002.tif"]
    assert "frame_0002.tif: not streamed: no angle in file name" in caplog.text


def test_missing_sidecar_unreadable_file_and_wrong_shape_are_reported(tmp_path, rng, caplog):
    caplog.set_level(logging.WARNING, logger="tiltstream.acquire")
    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, sidecar_wait_s=1.0)
    tifffile.imwrite(tmp_path / "f1.tif", _image(rng))
    (tmp_path / "f1.txt").write_text("10")
    tifffile.imwrite(tmp_path / "f2.tif", _image(rng))  # its sidecar never comes
    (tmp_path / "f3.tif").write_bytes(b"II*\x00garbage, not an image")
    (tmp_path / "f3.txt").write_text("30")
    tifffile.imwrite(tmp_path / "f4.tif", np.zeros((5, 5), np.uint16))
    (tmp_path / "f4.txt").write_text("40")
    tifffile.imwrite(tmp_path / "f5.tif", _image(rng))
    (tmp_path / "f5.txt").write_text("50")
    _settle(watcher, clock)
    assert [f.angle_deg for f in sink.frames] == [10.0]  # f2 holds the queue while it waits for its sidecar
    clock.now += 1.1
    watcher.poll()
    assert [f.angle_deg for f in sink.frames] == [10.0, 50.0]
    reasons = {p.name: r for p, r in watcher.rejected.items()}
    assert set(reasons) == {"f2.tif", "f3.tif", "f4.tif"}
    assert "no sidecar f2.json or f2.txt" in reasons["f2.tif"]
    assert reasons["f3.tif"].startswith("unreadable")
    assert "expected shape (23, 19)" in reasons["f4.tif"]
    for name in reasons:
        assert f"{name}: not streamed" in caplog.text


def test_rejected_file_is_retried_when_it_changes_and_sent_files_never_twice(tmp_path, rng):
    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, angle_from="filename")
    path = tmp_path / "tilt_+3.0deg.tif"
    path.write_bytes(b"II*\x00broken")
    _settle(watcher, clock)
    assert path in watcher.rejected and sink.frames == []
    img = _image(rng)
    tifffile.imwrite(path, img)
    _settle(watcher, clock)
    np.testing.assert_array_equal(sink.frames[0].data, img)
    tifffile.imwrite(path, img + 1)  # rewritten after it was sent
    _settle(watcher, clock)
    assert len(sink.frames) == 1


def test_mrc_frames(tmp_path, rng):
    import mrcfile

    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, pattern=("*.mrc", "*.tif"), angle_from="filename")
    img = rng.random(SHAPE).astype(np.float32)
    with mrcfile.new(tmp_path / "img_-15.5deg.mrc") as mrc:
        mrc.set_data(img)
    _settle(watcher, clock)
    np.testing.assert_array_equal(sink.frames[0].data, img)
    assert sink.frames[0].angle_deg == -15.5


def test_existing_files_can_be_ignored(tmp_path, rng):
    tifffile.imwrite(tmp_path / "old_+1.0.tif", _image(rng))
    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, angle_from="filename", include_existing=False)
    tifffile.imwrite(tmp_path / "new_+2.0.tif", _image(rng))
    _settle(watcher, clock)
    assert [f.angle_deg for f in sink.frames] == [2.0]


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="angle_from"):
        FolderWatcher(tmp_path, MemorySink(), angle_from="header")
    with pytest.raises(ValueError, match="existing folder"):
        FolderWatcher(tmp_path / "nope", MemorySink())


def test_serialem_frames_with_their_own_mdoc(tmp_path, rng):
    """Per-frame MRC files + .mrc.mdoc as SerialEM writes them (mdocfile's writer): angle, time, dose, pixel."""
    import mrcfile

    pytest.importorskip("mdocfile")
    from mdocfile.data_models import Mdoc, MdocGlobalData, MdocSectionData

    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, pattern="*.mrc")
    images = [rng.random(SHAPE).astype(np.float32) for _ in range(3)]
    angles, stamps = [12.5, -30.25, 47.0], [7.3e8 + 4.0, 7.3e8 + 6.5, 7.3e8 + 10.0]
    for i, img in enumerate(images):
        with mrcfile.new(tmp_path / f"tilt_{i:03d}.mrc") as mrc:
            mrc.set_data(img)
        section = MdocSectionData(ZValue=0, TiltAngle=angles[i], TimeStamp=repr(stamps[i]), ExposureTime=0.4,
                                  ExposureDose=1.5, PixelSpacing=3.36)
        mdoc = Mdoc(titles=["[T = SerialEM]"], global_data=MdocGlobalData(PixelSpacing=3.36), section_data=[section])
        (tmp_path / f"tilt_{i:03d}.mrc.mdoc").write_text(mdoc.to_string() + "\n")
        assert len(_settle(watcher, clock)) == 1
    watcher.close()
    frames = sink.frames
    for frame, img in zip(frames, images, strict=True):
        np.testing.assert_array_equal(frame.data, img)
    assert [f.angle_deg for f in frames] == angles
    assert [f.t_s for f in frames] == [0.0, 2.5, 6.0]
    assert [(f.exposure_s, f.dose_e_per_A2, f.pixel_nm) for f in frames] == [(0.4, 1.5, pytest.approx(0.336))] * 3
    assert watcher.rejected == {}


def test_truncated_mrc_frame_is_reported_in_one_line(tmp_path, rng):
    import mrcfile

    clock, sink = FakeClock(), MemorySink()
    watcher = _watcher(tmp_path, sink, clock, pattern="*.mrc", angle_from="filename")
    with mrcfile.new(tmp_path / "img_+5.0deg.mrc") as mrc:
        mrc.set_data(rng.random(SHAPE).astype(np.float32))
    raw = (tmp_path / "img_+5.0deg.mrc").read_bytes()
    (tmp_path / "img_+5.0deg.mrc").write_bytes(raw[:-100])
    _settle(watcher, clock)
    reason = watcher.rejected[tmp_path / "img_+5.0deg.mrc"]
    assert reason.startswith("unreadable (data: expected") and "truncated file" in reason and "\n" not in reason
