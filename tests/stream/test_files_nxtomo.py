"""NXtomo recordings: writer, crash safety, reading our files and files written by ``nxtomo``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from tiltstream.stream import NXtomoWriter, TiltSeries, describe, read_series, write_series
from tiltstream.stream.nxtomo import repair_recording

Y, U = 13, 17


def make_series(rng: np.random.Generator, n: int = 7) -> TiltSeries:
    return TiltSeries(
        frames=rng.random((n, Y, U), dtype=np.float32),
        angles_deg=rng.uniform(-70, 70, n),
        times_s=np.cumsum(rng.uniform(0.1, 0.3, n)),
        exposure_s=rng.uniform(0.05, 0.1, n),
        pixel_nm=0.35,
        extra={"temperature_C": rng.uniform(20, 500, n), "stage_xyz": rng.random((n, 3))},
        metadata={"sample": "Au nanorod", "ramp": [1, 2, 3]},
    )


def test_recording_round_trip(tmp_path, rng):
    s = make_series(rng)
    write_series(tmp_path / "rec.h5", s)
    r = read_series(tmp_path / "rec.h5")
    assert r.frames.dtype == np.float32 and r.frames.shape == (7, Y, U)
    np.testing.assert_array_equal(r.frames, s.frames)
    np.testing.assert_array_equal(r.angles_deg, s.angles_deg)
    np.testing.assert_array_equal(r.times_s, s.times_s)
    np.testing.assert_array_equal(r.exposure_s, s.exposure_s)
    assert set(r.extra) == {"temperature_C", "stage_xyz"}
    np.testing.assert_array_equal(r.extra["stage_xyz"], s.extra["stage_xyz"])
    np.testing.assert_array_equal(r.extra["temperature_C"], s.extra["temperature_C"])
    assert r.pixel_nm == pytest.approx(0.35, rel=1e-12)
    assert r.metadata["sample"] == "Au nanorod" and r.metadata["ramp"] == [1, 2, 3]
    assert r.metadata["time_source"] == "timestamps"
    assert r.metadata["recording_closed"] is True
    info = describe(tmp_path / "rec.h5")
    assert info["n_frames"] == 7 and info["frame_shape"] == (Y, U) and info["format"] == "tiltstream-recording"
    assert info["duration_s"] == pytest.approx(s.times_s[-1] - s.times_s[0])
    with pytest.raises(FileExistsError):
        write_series(tmp_path / "rec.h5", s)


def test_recording_layout_readable_by_nxtomo(tmp_path, rng):
    from nxtomo.application.nxtomo import NXtomo

    s = make_series(rng)
    write_series(tmp_path / "rec.nx", s)
    nx = NXtomo().load(str(tmp_path / "rec.nx"), "entry", detector_data_as="as_numpy_array")
    np.testing.assert_array_equal(nx.instrument.detector.data, s.frames)
    np.testing.assert_array_equal(nx.sample.rotation_angle.to("degree").magnitude, s.angles_deg)
    np.testing.assert_array_equal(nx.instrument.detector.count_time.to("s").magnitude, s.exposure_s)
    assert nx.instrument.detector.x_pixel_size.to("nm").magnitude == pytest.approx(0.35)
    assert [int(k.value) for k in nx.instrument.detector.image_key] == [0] * 7
    with h5py.File(tmp_path / "rec.nx") as f:
        assert f["entry"].attrs["definition"] == "NXtomo"
        assert f["entry/data/data"].shape == (7, Y, U)  # NXdata link
        assert f["entry/instrument/detector/data"].chunks == (1, Y, U)
        assert f["entry/instrument/detector/mid_exposure_time_s"].attrs["units"] == "s"
        assert f["entry/frame_info/temperature_C"].attrs["units"] == "degC"


_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tiltstream.stream.nxtomo import NXtomoWriter
    with NXtomoWriter(sys.argv[1], frame_shape=(13, 17), pixel_nm=0.5, extra_fields={"temperature_C": ()}) as w:
        for i in range(100000):
            frame = np.arange(13 * 17, dtype=np.float32).reshape(13, 17) + 1000 * i
            n = w.append(frame, angle_deg=0.5 * i, t_s=0.1 * i, exposure_s=0.05, temperature_C=300.0 + i)
            print(n, flush=True)
            time.sleep(0.005)
    """
)


def _expected_frame(i: int) -> np.ndarray:
    return np.arange(Y * U, dtype=np.float32).reshape(Y, U) + 1000 * i


def test_killed_writer_leaves_every_acknowledged_frame(tmp_path):
    from nxtomo.application.nxtomo import NXtomo

    path = tmp_path / "live.h5"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    acked = 0
    try:
        for line in child.stdout:
            acked = int(line)
            if acked == 5:
                live = read_series(path)  # SWMR read while the writer is appending
                assert live.n_frames >= 5 and live.metadata["recording_closed"] is False
                for i in range(live.n_frames):
                    np.testing.assert_array_equal(live.frames[i], _expected_frame(i))
            if acked >= 15:
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        acked = max([acked] + [int(line) for line in child.stdout.read().split()])
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    r = read_series(path)
    assert r.n_frames >= acked
    for i in range(r.n_frames):
        np.testing.assert_array_equal(r.frames[i], _expected_frame(i))
    np.testing.assert_array_equal(r.angles_deg, 0.5 * np.arange(r.n_frames))
    np.testing.assert_array_equal(r.times_s, 0.1 * np.arange(r.n_frames))
    np.testing.assert_array_equal(r.extra["temperature_C"], 300.0 + np.arange(r.n_frames))

    nx = NXtomo().load(str(path), "entry", detector_data_as="as_numpy_array")
    n_nx = nx.instrument.detector.data.shape[0]
    assert n_nx >= acked
    assert nx.sample.rotation_angle.shape[0] >= acked
    np.testing.assert_array_equal(nx.instrument.detector.data[:acked], np.stack([_expected_frame(i) for i in range(acked)]))

    fixed = tmp_path / "fixed.h5"
    assert repair_recording(path, fixed) == r.n_frames
    with h5py.File(fixed, "r") as f:  # a normal file again: no SWMR needed
        assert f["entry/instrument/detector/data"].shape[0] == r.n_frames
    np.testing.assert_array_equal(read_series(fixed).frames, r.frames)
    assert read_series(fixed).metadata["recording_closed"] is True


def test_writer_checks_and_extras(tmp_path, rng, caplog):
    with NXtomoWriter(tmp_path / "a.h5", frame_shape=(Y, U), extra_fields=["dose_e_per_A2"]) as w:
        with pytest.raises(ValueError, match=r"frame: expected shape \(13, 17\), got \(17, 13\)"):
            w.append(np.zeros((U, Y)), angle_deg=0, t_s=0)
        with pytest.raises(ValueError, match="angle_deg: expected a finite number"):
            w.append(np.zeros((Y, U)), angle_deg=np.nan, t_s=0)
        assert w.append(np.zeros((Y, U)), angle_deg=1, t_s=0.5, dose_e_per_A2=2.0) == 1
        assert w.append(np.ones((Y, U)), angle_deg=2, t_s=1.5, focus_index=3) == 2  # undeclared: dropped
    assert "focus_index" in caplog.text
    r = read_series(tmp_path / "a.h5")
    np.testing.assert_array_equal(r.extra["dose_e_per_A2"], [2.0, np.nan])
    assert r.exposure_s is None and r.pixel_nm is None and "focus_index" not in r.extra

    # without SWMR, new fields may appear mid-series (earlier frames get NaN)
    with NXtomoWriter(tmp_path / "b.h5", frame_shape=(Y, U), swmr=False) as w:
        w.append(np.zeros((Y, U)), angle_deg=1, t_s=0)
        w.append(np.zeros((Y, U)), angle_deg=2, t_s=1, stage_xyz=[1.0, 2.0, 3.0])
    r = read_series(tmp_path / "b.h5")
    np.testing.assert_array_equal(r.extra["stage_xyz"], [[np.nan] * 3, [1.0, 2.0, 3.0]])


def _nxtomo_file(path, rng, *, count_time: bool = True):
    """A file written by the nxtomo package: 2 darks, 1 flat, 5 projections, 1 flat."""
    import pint
    from nxtomo.application.nxtomo import NXtomo

    ureg = pint.get_application_registry()
    keys = np.array([2, 2, 1, 0, 0, 0, 0, 0, 1])
    data = rng.random((keys.size, Y, U), dtype=np.float32)
    angles = np.array([0, 0, 0, -60, -30, 0, 30, 60, 60], dtype=np.float64)
    counts = np.array([1.0, 1.0, 0.5, 0.2, 0.2, 0.3, 0.3, 0.3, 0.5])
    nx = NXtomo()
    nx.instrument.detector.data = data
    nx.instrument.detector.image_key_control = keys
    nx.sample.rotation_angle = angles * ureg.degree
    nx.instrument.detector.x_pixel_size = 0.5e-9 * ureg.meter
    nx.instrument.detector.y_pixel_size = 0.5e-9 * ureg.meter
    if count_time:
        nx.instrument.detector.count_time = counts * ureg.second
    nx.save(str(path), "entry", overwrite=True)
    return keys, data, angles, counts


def test_foreign_nxtomo_with_darks_and_flats(tmp_path, rng):
    keys, data, angles, counts = _nxtomo_file(tmp_path / "scan.nx", rng)
    r = read_series(tmp_path / "scan.nx")
    proj = keys == 0
    np.testing.assert_array_equal(r.frames, data[proj])
    np.testing.assert_array_equal(r.angles_deg, angles[proj])
    np.testing.assert_array_equal(r.exposure_s, counts[proj])
    # mid-exposure of back-to-back exposures over every frame in file order
    expected = [sum(counts[:i]) + counts[i] / 2 for i in range(keys.size)]
    np.testing.assert_allclose(r.times_s, np.array(expected)[proj], rtol=0, atol=1e-12)
    assert r.metadata["time_source"] == "cumulative_count_time"
    assert r.metadata["skipped_frames"] == {"dark": 2, "flat": 2}
    assert r.metadata["format"] == "nxtomo"
    assert r.pixel_nm == pytest.approx(0.5)
    info = describe(tmp_path / "scan.nx")
    assert info["n_frames"] == 5 and info["skipped_frames"] == {"dark": 2, "flat": 2}


def test_foreign_nxtomo_time_sources(tmp_path, rng):
    keys, _, _, counts = _nxtomo_file(tmp_path / "nocount.nx", rng, count_time=False)
    r = read_series(tmp_path / "nocount.nx")
    assert r.metadata["time_source"] == "frame_index"
    np.testing.assert_array_equal(r.times_s, np.arange(5))
    assert describe(tmp_path / "nocount.nx")["duration_s"] is None

    _nxtomo_file(tmp_path / "stamped.nx", rng)
    start = 100.0 + np.arange(keys.size) * 2.0  # NXdetector per-frame start_time, in ms
    with h5py.File(tmp_path / "stamped.nx", "a") as f:
        f["entry/instrument/detector/start_time"] = start
        f["entry/instrument/detector/start_time"].attrs["units"] = "ms"
    r = read_series(tmp_path / "stamped.nx")
    assert r.metadata["time_source"] == "timestamps"
    expected = (start - start[0]) * 1e-3 + counts / 2
    np.testing.assert_allclose(r.times_s, expected[keys == 0], rtol=0, atol=1e-12)
