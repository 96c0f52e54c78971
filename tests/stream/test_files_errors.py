"""Bad inputs fail with a FileFormatError naming the file, the field, what was expected and found."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.stream import FileFormatError, NXtomoWriter, TiltSeries, describe, read_series, write_series
from tiltstream.stream.mrc import write_mrc_series
from tiltstream.stream.tiff import write_tiff_series

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


# ---------------------------------------------------------------- junk and corrupted files
# Every damaged file is a FileFormatError (one line, naming the file), never an IndexError,
# KeyError, OSError, ... from tifffile, mrcfile or h5py.
JUNK_TIFF = b"II*\x00garbage"


def _one_line_error(path, reader=read_series, *, named=None) -> FileFormatError:
    """The FileFormatError of reading ``path``: one line, starting with the file(s) at fault, which
    include ``named`` (a file name; default ``path``'s)."""
    named = path.name if named is None else named
    try:
        reader(path)
    except FileFormatError as e:
        assert "\n" not in str(e), f"expected a one-line message, got {str(e)!r}"
        assert str(e).startswith(f"{e.file}: ") and e.file.startswith(str(path.parent)), str(e)
        assert named in e.file, f"expected the message to name {named}, got {e}"
        return e
    pytest.fail(f"{path}: expected FileFormatError, got a successful {reader.__name__}")


def test_junk_tiff(tmp_path):
    (tmp_path / "j.tif").write_bytes(JUNK_TIFF)
    for reader in (describe, read_series):
        e = _one_line_error(tmp_path / "j.tif", reader)
        assert "expected at least one image in the TIFF file, got no image series" in str(e)


def _mrc_with(path, rng, **fields):
    """A valid MRC series (5 frames, 13 x 17) + sidecars, then header words replaced (int32 at byte offsets)."""
    write_mrc_series(path, _series(rng, 5))
    data = bytearray(path.read_bytes())
    offsets = {"nx": 0, "ny": 4, "nz": 8, "mode": 12, "nsymbt": 92, "nlabl": 220}
    for name, value in fields.items():
        data[offsets[name]:offsets[name] + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_mrc_negative_nx(tmp_path, rng):
    path = _mrc_with(tmp_path / "s.mrc", rng, nx=-5)
    e = _one_line_error(path, describe)
    assert str(e) == (f"{path}: MRC header: nx, ny, nz: expected positive numbers of columns, rows and sections, "
                      f"got -5, 13, 5")


@pytest.mark.parametrize("fields, message", [
    ({"nx": 0}, r"nx, ny, nz: expected positive .*, got 0, 13, 5"),
    ({"ny": -1}, r"nx, ny, nz: expected positive .*, got 17, -1, 5"),
    ({"nz": 0}, r"nx, ny, nz: expected positive .*, got 17, 13, 0"),
    ({"nz": -2**31}, r"nx, ny, nz: expected positive .*, got 17, 13, -2147483648"),
    ({"nx": 2**31 - 1}, r"data: expected \d+ bytes for 5 x 13 x 2147483647 values in mode 2, got a truncated file"),
    ({"nz": 4}, r"data: expected \d+ bytes for 4 x 13 x 17 values in mode 2, got a file of \d+ bytes \(884 more\)"),
    ({"mode": 1}, r"data: expected \d+ bytes for 5 x 13 x 17 values in mode 1, got a file of \d+ bytes"),
    ({"mode": 4}, r"data: expected \d+ bytes for 5 x 13 x 17 values in mode 4, got a truncated file"),
    ({"mode": 99}, r"MRC header: mode: expected a known MRC data mode"),
    ({"nsymbt": -1}, r"MRC header: nsymbt: expected an extended header of 0 to \d+ bytes .*, got -1 bytes"),
    ({"nsymbt": 2**30}, r"MRC header: nsymbt: expected an extended header of 0 to \d+ bytes .*, got 1073741824 bytes"),
    ({"nlabl": 11}, r"MRC header: nlabl: expected 0 to 10 labels, got 11"),
])
def test_mrc_bad_header_fields(tmp_path, rng, fields, message):
    path = _mrc_with(tmp_path / "s.mrc", rng, **fields)
    for reader in (describe, read_series):
        e = _one_line_error(path, reader)
        assert re.search(message, str(e)), f"expected /{message}/, got {e}"


def _written(fmt, tmp_path, rng):
    """(main file, frames) of a series written by tiltstream's own writer for ``fmt``."""
    series = TiltSeries(frames=rng.random((7, Y, U), dtype=np.float32), angles_deg=np.linspace(-60, 60, 7),
                        times_s=np.arange(7.0), pixel_nm=0.5)
    path = tmp_path / {"recording": "r.h5", "mrc": "s.mrc", "tiff": "t.tif"}[fmt]
    {"recording": write_series, "mrc": write_mrc_series, "tiff": write_tiff_series}[fmt](path, series)
    return path, series.frames


def _tiff_data_end(path) -> int:
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].dataoffset + tif.series[0].nbytes


FORMATS = ["recording", "mrc", "tiff"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cut", [1, 4, 8, 100, 211, 1023, 1025, 2000, "data", "half", "last"])
def test_truncated_files(tmp_path, rng, fmt, cut):
    path, frames = _written(fmt, tmp_path, rng)
    data = path.read_bytes()
    end = len(data) - 1 if cut == "last" else len(data) // 2 if cut == "half" else cut
    if cut == "data":  # inside the frames
        end = _tiff_data_end(path) - 50 if fmt == "tiff" else len(data) - 3 * Y * U
    path.write_bytes(data[:end])
    try:
        series = read_series(path)
    except FileFormatError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        _one_line_error(path, describe)
        return
    # only an ImageJ TIFF cut after its (contiguous) frames still holds them all: then they must be right
    assert fmt == "tiff", f"{path} cut to {end} of {len(data)} bytes: expected FileFormatError, got a series"
    assert np.array_equal(series.frames, frames)


@pytest.mark.parametrize("fmt", FORMATS)
def test_flipped_header_bytes(tmp_path, rng, fmt):
    """Each byte of the first 1 KiB (every byte of the MRC words that size the data), flipped one at
    a time: the file reads, or fails with FileFormatError."""
    path, frames = _written(fmt, tmp_path, rng)
    data = path.read_bytes()
    positions = sorted(set(range(0, 1024, 3)) | (set(range(16)) | set(range(92, 96)) | set(range(220, 224))
                                                 if fmt == "mrc" else set()))
    outcomes = {"read": 0, "FileFormatError": 0}
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            series = read_series(path)
            assert series.frames.ndim == 3, f"byte {pos} flipped: frames {series.frames.shape}"
            outcomes["read"] += 1
        except FileFormatError as e:
            assert "\n" not in str(e) and str(path) in str(e), f"byte {pos} flipped: {e!r}"
            outcomes["FileFormatError"] += 1
    assert outcomes["FileFormatError"] > 0, f"{fmt}: expected some flipped bytes to be refused, got {outcomes}"


def _mrc_for_sidecars(tmp_path, rng, *, keep_rawtlt):
    path = tmp_path / "s.mrc"
    write_mrc_series(path, _series(rng, 5))
    (tmp_path / "s.csv").unlink()
    if not keep_rawtlt:
        (tmp_path / "s.rawtlt").unlink()
    return path


@pytest.mark.parametrize("name, content, message", [
    ("s.rawtlt", b"\x00\xff\xfe\x89PNG garbage\n" * 5, r"s.rawtlt: line 1: expected one tilt angle in degrees per line"),
    ("s.rawtlt", b"0\n1\n", r"s.rawtlt: angles: expected 5 angles \(one per frame\), got 2"),
    ("s.rawtlt", b"", r"s.rawtlt: angles: expected 5 angles \(one per frame\), got 0"),
    ("s.rawtlt", b"0\n1\n2\n3\n4\n5\n6\n", r"s.rawtlt: angles: expected 5 angles \(one per frame\), got 7"),
    ("s.tlt", b"0\n1\ninf\n3\n4\n", r"s.tlt: angles: expected finite angles, got NaN/Inf at frame\(s\) \[2\]"),
    ("s.csv", b"angle_deg,time_s\n", r"s.csv: angle_deg: expected 5 angles \(one per frame\), got 0"),
    ("s.csv", b"angle_deg,time_s\n0,0\n1,1\n2,nan\n3,3\n4,4\n", r"s.csv: time_s: expected finite times, got NaN/Inf at frame\(s\) \[2\]"),
    ("s.csv", b"angle_deg,time_s\n0,0\n1,1,1\n", r"s.csv: line 3: expected 2 columns, got 3"),
    ("s.csv", b"foo,bar\n1,2\n", r"s.csv: header: expected a column angle_deg, got columns \['foo', 'bar'\]"),
    ("s.csv", b"\x89\x00\xff,\x01\n\x02\x03,\xfe\n", r"s.csv: line 2: expected numbers \(angle_deg, time_s, ...\)"),
    ("s.csv", b"# pixel_nm=abc\n0,0\n1,1\n2,2\n3,3\n4,4\n", r"s.csv: # pixel_nm: expected a number, got 'abc'"),
])
def test_garbage_sidecars(tmp_path, rng, name, content, message):
    path = _mrc_for_sidecars(tmp_path, rng, keep_rawtlt=False)
    (tmp_path / name).write_bytes(content)
    for reader in (describe, read_series):
        e = _one_line_error(path, reader, named=name)
        assert re.search(message, str(e)), f"expected /{message}/, got {e}"


# ---------------------------------------------------------------- the CLI: one line on stderr, exit 2
@pytest.mark.parametrize("command", ["info", "replay", "reconstruct", "align", "info-mrc"])
def test_cli_bad_file_is_one_line_and_exit_2(tmp_path, rng, command):
    if command == "info-mrc":
        path, command = _mrc_with(tmp_path / "s.mrc", rng, nx=-5), "info"
    else:
        path = tmp_path / "j.tif"
        path.write_bytes(JUNK_TIFF)
    extra = {"info": [], "replay": ["--push", f"ipc://{tmp_path}/replay.ipc", "--speed", "max"],
             "reconstruct": ["--method", "fbp", "--out", str(tmp_path / "o.h5")],
             "align": ["--out", str(tmp_path / "a.h5")]}[command]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, "-m", "tiltstream", command, str(path), *extra], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"expected exit 2, got {result.returncode}; stderr:\n{result.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith(f"tiltstream {command}: error: {path}: "), lines[0]
    assert "expected" in lines[0] and "got" in lines[0]
