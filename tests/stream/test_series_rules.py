"""Rules every tilt series obeys, in memory (TiltSeries) and from every file reader alike: real pixel
values, angles within the wire protocol's ±180°, exposure times >= 0, finite pixels before a
reconstruction; and the reader details that go with them (CSV byte-order mark, tilt axis in the file)."""

from __future__ import annotations

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.stream import FileFormatError, TiltSeries, describe, read_series, write_series
from tiltstream.stream.sidecars import write_angle_csv
from tiltstream.stream.validation import ANGLE_LIMIT_DEG

N, Y, U = 7, 13, 11
DATA = "entry/instrument/detector/data"


def _series(rng, **fields) -> TiltSeries:
    args = dict(frames=rng.random((N, Y, U), dtype=np.float32), angles_deg=np.linspace(-60, 60, N),
                times_s=np.arange(N, dtype=float))
    return TiltSeries(**(args | fields))


def _recording(path, rng) -> None:
    write_series(path, _series(rng))


# ---------------------------------------------------------------- angles within ±180°
def test_tilt_series_refuses_angles_beyond_the_wire_limit(rng):
    angles = np.linspace(-60, 60, N)
    _series(rng, angles_deg=np.clip(angles * 3, -ANGLE_LIMIT_DEG, ANGLE_LIMIT_DEG))  # the limit itself is fine
    angles[3] = 500.0
    with pytest.raises(ValueError, match=r"angles_deg: expected degrees in \[-180, 180\], got 500 at frame\(s\) \[3\]"):
        _series(rng, angles_deg=angles)


def test_every_reader_refuses_angles_beyond_the_wire_limit(tmp_path, rng):
    path = tmp_path / "a.h5"
    _recording(path, rng)
    with h5py.File(path, "r+") as f:
        f["entry/sample/rotation_angle"][3] = 500.0
    for reader in (read_series, describe):
        with pytest.raises(FileFormatError, match=r"angles: expected degrees in \[-180, 180\], got 500") as e:
            reader(path)
        assert e.value.file == str(path)
    mrc = tmp_path / "b.mrc"
    with mrcfile.new(mrc) as m:
        m.set_data(rng.random((N, Y, U), dtype=np.float32))
        m.set_image_stack()
    mrc.with_suffix(".rawtlt").write_text("\n".join(["-200"] + ["0"] * (N - 1)) + "\n")
    with pytest.raises(FileFormatError, match=r"angles: expected degrees in \[-180, 180\], got -200 at frame\(s\) \[0\]"):
        read_series(mrc)


# ---------------------------------------------------------------- real pixel values
def test_tilt_series_refuses_complex_frames(rng):
    frames = rng.random((N, Y, U)).astype(np.complex64)
    with pytest.raises(ValueError, match="frames: expected real pixel values .*, got dtype complex64"):
        _series(rng, frames=frames)


def test_readers_refuse_complex_frames_naming_the_dtype(tmp_path, rng):
    frames = (rng.random((N, Y, U)) * 1j).astype(np.complex64)
    h5 = tmp_path / "c.h5"
    _recording(h5, rng)
    with h5py.File(h5, "r+") as f:
        del f[DATA]
        f[DATA] = frames
    mrc = tmp_path / "c.mrc"
    with mrcfile.new(mrc) as m:  # mode 4
        m.set_data(frames)
        m.set_image_stack()
    mrc.with_suffix(".rawtlt").write_text("\n".join(str(a) for a in np.linspace(-60, 60, N)) + "\n")
    tif = tmp_path / "c.tif"
    tifffile.imwrite(tif, frames)
    write_angle_csv(tif.with_suffix(".csv"), np.linspace(-60, 60, N), np.arange(N, dtype=float))
    for path in (h5, mrc, tif):
        for reader in (read_series, describe):
            with pytest.raises(FileFormatError, match="frames: expected real pixel values .*, got dtype complex64"):
                reader(path)


# ---------------------------------------------------------------- exposure times >= 0
def test_tilt_series_refuses_negative_exposure(rng):
    exposure = np.full(N, 0.5)
    exposure[2] = -0.5
    with pytest.raises(ValueError, match=r"exposure_s: expected exposure times in s >= 0, got -0.5 at frame\(s\) \[2\]"):
        _series(rng, exposure_s=exposure)


def test_nxtomo_count_time_and_mdoc_exposure_time_must_not_be_negative(tmp_path, rng):
    h5 = tmp_path / "e.h5"
    with h5py.File(h5, "w") as f:
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", definition="NXtomo")
        f[DATA] = rng.random((N, Y, U), dtype=np.float32)
        f["entry/sample/rotation_angle"] = np.linspace(-60, 60, N)
        f["entry/instrument/detector/count_time"] = np.full(N, -0.1)
    for reader in (read_series, describe):
        with pytest.raises(FileFormatError, match="count_time: expected exposure times >= 0, got -0.1 s"):
            reader(h5)

    mrc = tmp_path / "tomo.mrc"
    with mrcfile.new(mrc) as m:
        m.set_data(rng.random((2, Y, U), dtype=np.float32))
        m.set_image_stack()
    sections = "".join(f"[ZValue = {i}]\nTiltAngle = {a}\nExposureTime = {e}\n\n"
                       for i, (a, e) in enumerate([(0.0, 0.5), (10.0, -0.1)]))
    (tmp_path / "tomo.mrc.mdoc").write_text(f"DataMode = 2\nImageSize = {U} {Y}\n\n{sections}")
    with pytest.raises(FileFormatError, match=r"\[ZValue = 1\] ExposureTime: expected an exposure time in s >= 0"):
        describe(mrc)


# ---------------------------------------------------------------- finite pixels (reconstruction)
def test_check_finite_names_the_frames_with_nan_or_inf(rng):
    frames = rng.random((N, Y, U), dtype=np.float32)
    _series(rng, frames=frames).check_finite()
    frames[4, 1, 2], frames[6, 0, 0] = np.nan, np.inf
    series = _series(rng, frames=frames, source="x.h5")  # constructing it reads no pixels
    with pytest.raises(ValueError, match=r"^x.h5: frames: expected finite pixel values, got NaN/Inf in frame\(s\) \[4, 6\]$"):
        series.check_finite()


# ---------------------------------------------------------------- reader details
def test_angle_csv_with_a_utf8_byte_order_mark_is_read(tmp_path, rng):
    tif = tmp_path / "bom.tif"
    tifffile.imwrite(tif, rng.random((N, Y, U), dtype=np.float32))
    rows = "".join(f"{a},{t}\n" for a, t in zip(np.linspace(-60, 60, N), range(N)))
    tif.with_suffix(".csv").write_bytes(b"\xef\xbb\xbf" + f"angle_deg,time_s\n{rows}".encode())
    series = read_series(tif)
    np.testing.assert_allclose(series.angles_deg, np.linspace(-60, 60, N))


def test_a_non_finite_tilt_axis_in_the_file_names_file_and_field(tmp_path, rng):
    path = tmp_path / "t.h5"
    _recording(path, rng)
    with h5py.File(path, "r+") as f:
        f["entry/tiltstream"].attrs["tilt_axis_angle_deg"] = np.inf
    for reader in (read_series, describe):
        with pytest.raises(FileFormatError, match="tilt_axis_angle_deg: expected a finite tilt-axis angle") as e:
            reader(path)
        assert e.value.file == str(path)
    assert read_series(path, tilt_axis_angle_deg=0.0).n_frames == N  # the argument overrides the file


def test_a_header_announcing_frames_beyond_memory_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", definition="NXtomo")
        f.create_dataset(DATA, shape=(1_000_000, 1024, 1024), dtype="f4", chunks=(1, 1024, 1024))
        f["entry/sample/rotation_angle"] = np.linspace(-60, 60, 1_000_000)
    assert describe(path)["n_frames"] == 1_000_000  # a summary reads no frames
    with pytest.raises(FileFormatError, match=r"frames: expected frames that fit in memory .*, got 1000000 frames"):
        read_series(path)


# ---------------------------------------------------------------- no empty frames, no NaN result times
def test_a_recording_of_zero_pixel_wide_frames_is_refused_also_by_info(tmp_path, rng):
    h5 = tmp_path / "z.h5"
    _recording(h5, rng)
    with h5py.File(h5, "r+") as f:
        del f[DATA]
        f[DATA] = np.zeros((N, 0, U), np.float32)
    for reader in (read_series, describe):
        with pytest.raises(FileFormatError, match=r"frames: expected frames of at least 1×1 pixels, got frames of shape \(0, 11\)"):
            reader(h5)


def test_a_result_with_nan_times_is_refused_naming_the_volume(tmp_path):
    from tiltstream.stream.results import read_result, write_result

    path = tmp_path / "r.h5"
    write_result(path, np.zeros((3, 2, 2, 2), np.float32), np.array([0.0, 1.0, 2.0]), attrs={"method": "sirt"})
    with h5py.File(path, "r+") as f:
        f["times_s"][1] = np.nan
    with pytest.raises(FileFormatError, match=r"/times_s: expected finite times in s, got NaN/Inf at volume\(s\) \[1\]"):
        read_result(path)


def test_a_fifo_named_like_a_recording_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    for reader in (read_series, describe):
        with pytest.raises(FileFormatError, match="path: expected a regular file or a folder, got a FIFO"):
            reader(fifo)
