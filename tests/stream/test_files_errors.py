"""Bad inputs fail with a FileFormatError naming the file, the field, what was expected and found."""

from __future__ import annotations

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.stream import FileFormatError, NXtomoWriter, TiltSeries, describe, read_series, write_series
from tiltstream.stream.mrc import write_mrc_series

Y, U = 13, 17


def _series(rng, n=41) -> TiltSeries:
    return TiltSeries(frames=rng.random((n, Y, U), dtype=np.float32), angles_deg=np.linspace(-60, 60, n),
                      times_s=np.arange(n, dtype=float))


def _raises(path, match, reader=read_series) -> FileFormatError:
    with pytest.raises(FileFormatError, match=match) as info:
        reader(path)
    assert isinstance(info.value, ValueError)
    return info.value


def _mrc(path, frames):
    with mrcfile.new(path) as m:
        m.set_data(np.asarray(frames, np.float32))
        if np.ndim(frames) == 3:
            m.set_image_stack()


def _foreign_nxtomo(path, *, data, angles):
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", definition="NXtomo")
        f["entry/instrument/detector/data"] = data
        f["entry/sample/rotation_angle"] = angles
        f["entry/sample/rotation_angle"].attrs["units"] = "degree"


# ---------------------------------------------------------------- angle count != frame count
def test_angle_count_mismatch_mrc(tmp_path, rng):
    _mrc(tmp_path / "series.mrc", rng.random((41, Y, U)))
    (tmp_path / "series.rawtlt").write_text("\n".join(str(a) for a in range(40)) + "\n")
    e = _raises(tmp_path / "series.mrc", "angles")
    assert str(e) == f"{tmp_path / 'series.mrc'} + series.rawtlt: angles: expected 41 angles (one per frame), got 40"
    assert (e.field, e.expected, e.found) == ("angles", "41 angles (one per frame)", 40)


def test_angle_count_mismatch_nxtomo_and_tiff(tmp_path, rng):
    _foreign_nxtomo(tmp_path / "a.nxs", data=rng.random((5, Y, U)), angles=np.arange(4.0))
    _raises(tmp_path / "a.nxs", r"a.nxs: /entry/sample/rotation_angle: expected 5 angles \(one per frame\), got 4")
    tifffile.imwrite(tmp_path / "t.tif", rng.random((3, Y, U), dtype=np.float32), photometric="minisblack")
    (tmp_path / "t.csv").write_text("angle_deg,time_s\n0,0\n1,1\n2,2\n3,3\n")
    _raises(tmp_path / "t.tif", r"t.tif \+ t.csv: angle_deg: expected 3 angles \(one per frame\), got 4")


def test_csv_angles_disagreeing_with_rawtlt(tmp_path, rng):
    write_mrc_series(tmp_path / "s.mrc", _series(rng, 5))
    (tmp_path / "s.rawtlt").write_text("0\n1\n2\n3\n4\n")
    _raises(tmp_path / "s.mrc", r"s.csv: angle_deg: expected the same angles as the tilt-angle file, got different")


# ---------------------------------------------------------------- NaN angles
def test_nan_angles(tmp_path, rng):
    _mrc(tmp_path / "s.mrc", rng.random((4, Y, U)))
    (tmp_path / "s.tlt").write_text("0\n10\nnan\n30\n")
    _raises(tmp_path / "s.mrc", r"s.mrc \+ s.tlt: angles: expected finite angles, got NaN/Inf at frame\(s\) \[2\]")
    _foreign_nxtomo(tmp_path / "n.h5", data=rng.random((3, Y, U)), angles=[0.0, np.nan, 2.0])
    _raises(tmp_path / "n.h5", r"n.h5: /entry/sample/rotation_angle: expected finite angles, got NaN/Inf at frame\(s\) \[1\]")
    tifffile.imwrite(tmp_path / "t.tif", rng.random((2, Y, U), dtype=np.float32), photometric="minisblack")
    (tmp_path / "t.csv").write_text("NaN,0\n1,1\n")
    _raises(tmp_path / "t.tif", r"angle_deg: expected finite angles, got NaN")


# ---------------------------------------------------------------- empty files, zero frames
@pytest.mark.parametrize("name, field", [("e.h5", "file: expected an HDF5 file"), ("e.mrc", "MRC header"),
                                         ("e.tif", "file: expected a TIFF file")])
def test_empty_files(tmp_path, name, field):
    (tmp_path / name).write_bytes(b"")
    e = _raises(tmp_path / name, field)
    assert "empty file (0 bytes)" in str(e) and name in str(e)
    _raises(tmp_path / name, field, reader=describe)


def test_zero_frames(tmp_path):
    NXtomoWriter(tmp_path / "r.h5", frame_shape=(Y, U)).close()
    _raises(tmp_path / "r.h5", r"r.h5: /entry/instrument/detector/data: expected at least 1 frame, got 0 frames")
    (tmp_path / "frames").mkdir()
    _raises(tmp_path / "frames", r"frames: frames: expected a folder with \*.tif/\*.tiff files, got no TIFF files")


def test_only_darks_and_flats(tmp_path, rng):
    _foreign_nxtomo(tmp_path / "d.h5", data=rng.random((3, Y, U)), angles=np.zeros(3))
    with h5py.File(tmp_path / "d.h5", "a") as f:
        f["entry/instrument/detector/image_key"] = [2, 2, 1]
    _raises(tmp_path / "d.h5", r"image_key: expected at least 1 projection \(image_key 0\), got 3 frames")


# ---------------------------------------------------------------- wrong dimensions
def test_two_d_data_where_three_d_expected(tmp_path, rng):
    _foreign_nxtomo(tmp_path / "a.h5", data=rng.random((Y, U)), angles=[0.0])
    _raises(tmp_path / "a.h5", r"/entry/instrument/detector/data: expected a 3-D dataset \(N, Y, U\), got a 2-D dataset of shape \(13, 17\)")
    _mrc(tmp_path / "b.mrc", rng.random((Y, U)))
    (tmp_path / "b.rawtlt").write_text("0\n")
    _raises(tmp_path / "b.mrc", r"b.mrc: data: expected a 3-D stack of frames \(N, Y, X\), got a 2-D image of shape \(13, 17\)")
    tifffile.imwrite(tmp_path / "c.tif", rng.random((Y, U), dtype=np.float32))
    (tmp_path / "c.csv").write_text("0,0\n")
    _raises(tmp_path / "c.tif", r"c.tif: image: expected a 3-D stack of frames \(N, Y, X\), got a single 2-D image of shape \(13, 17\)")


# ---------------------------------------------------------------- damaged files
def test_truncated_hdf5(tmp_path, rng):
    write_series(tmp_path / "r.h5", _series(rng))
    data = (tmp_path / "r.h5").read_bytes()
    (tmp_path / "r.h5").write_bytes(data[: len(data) // 2])
    e = _raises(tmp_path / "r.h5", r"r.h5: file: expected a complete HDF5 file, got a truncated file of \d+ bytes")
    assert "truncated" in str(e)


def test_truncated_mrc(tmp_path, rng):
    _mrc(tmp_path / "s.mrc", rng.random((4, Y, U)))
    (tmp_path / "s.rawtlt").write_text("0\n1\n2\n3\n")
    data = (tmp_path / "s.mrc").read_bytes()
    (tmp_path / "s.mrc").write_bytes(data[:-100])
    _raises(tmp_path / "s.mrc", r"s.mrc: data: expected \d+ bytes for 4 x 13 x 17 values in mode 2, got a truncated file")


def test_bad_text_sidecars(tmp_path, rng):
    _mrc(tmp_path / "s.mrc", rng.random((2, Y, U)))
    (tmp_path / "s.rawtlt").write_text("0\nten\n")
    _raises(tmp_path / "s.mrc", r"s.rawtlt: line 2: expected one tilt angle in degrees per line, got 'ten'")
    tifffile.imwrite(tmp_path / "t.tif", rng.random((2, Y, U), dtype=np.float32), photometric="minisblack")
    (tmp_path / "t.csv").write_text("angle_deg,time_s\n0,0\n1,oops\n")
    _raises(tmp_path / "t.tif", r"t.csv: line 3: expected numbers \(angle_deg, time_s, ...\), got '1,oops'")


def test_unknown_units(tmp_path, rng):
    _foreign_nxtomo(tmp_path / "u.h5", data=rng.random((2, Y, U)), angles=[0.0, 1.0])
    with h5py.File(tmp_path / "u.h5", "a") as f:
        f["entry/sample/rotation_angle"].attrs["units"] = "furlong"
    _raises(tmp_path / "u.h5", r"u.h5: /entry/sample/rotation_angle@units: expected a angle unit .*, got 'furlong'")


# ---------------------------------------------------------------- missing and unknown files
def test_missing_path_and_sidecars(tmp_path, rng):
    _raises(tmp_path / "nope.h5", r"nope.h5: path: expected an existing file or folder, got no such file or folder")
    _raises(tmp_path / "nope.h5", r"nope.h5: path", reader=describe)
    _mrc(tmp_path / "s.mrc", rng.random((2, Y, U)))
    _raises(tmp_path / "s.mrc", r"s.mrc: angles: expected a tilt-angle file s.rawtlt or s.tlt .* beside it, got none")
    tifffile.imwrite(tmp_path / "t.tif", rng.random((2, Y, U), dtype=np.float32), photometric="minisblack")
    _raises(tmp_path / "t.tif", r"t.tif: angles: expected a CSV of angle_deg,time_s \(t.csv beside it\), got none")


def test_unknown_extension_and_wrong_content(tmp_path, rng):
    (tmp_path / "x.xyz").write_bytes(b"\x00" * 2000)
    _raises(tmp_path / "x.xyz", r"x.xyz: format: expected one of .h5 .* or a folder of TIFF files, got '.xyz'")
    (tmp_path / "y.h5").write_bytes(b"not an hdf5 file at all" * 10)
    _raises(tmp_path / "y.h5", r"y.h5: file: expected a readable HDF5 file")
    with h5py.File(tmp_path / "z.h5", "w") as f:
        f["something"] = [1, 2, 3]
    _raises(tmp_path / "z.h5", r"z.h5: /: expected an NXentry with definition NXtomo, got top-level objects \['something'\]")
