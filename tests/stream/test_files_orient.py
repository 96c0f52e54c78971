"""Tilt-axis orientation: frames whose axis is not along the rows are brought into the convention.

Convention (IMOD): the tilt-axis angle is measured counter-clockwise from the image Y (row) axis
in the right-handed frame x = column index, y = row index. The rotated test frames are built
here from that definition with explicit index maps, independently of the library's rot90 use.
"""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.stream import NXtomoWriter, TiltSeries, describe, read_series
from tiltstream.stream.orient import orient_frames, tilt_axis_direction

Y, U = 13, 17


def rotate_ccw_90(frames: np.ndarray) -> np.ndarray:
    """Turn each (Y, X) picture by +90° (counter-clockwise, x right / y up): (x, y) -> (-y, x)."""
    n, ny, nx = frames.shape
    out = np.empty((n, nx, ny), frames.dtype)
    r, c = np.indices((ny, nx))
    out[:, c, ny - 1 - r] = frames[:, r, c]
    return out


def rotate_cw_90(frames: np.ndarray) -> np.ndarray:
    """Turn each picture by -90° (clockwise): (x, y) -> (y, -x)."""
    n, ny, nx = frames.shape
    out = np.empty((n, nx, ny), frames.dtype)
    r, c = np.indices((ny, nx))
    out[:, nx - 1 - c, r] = frames[:, r, c]
    return out


@pytest.fixture
def originals(rng) -> np.ndarray:
    return rng.random((3, Y, U), dtype=np.float32)


def _write_recording(path, frames, angle):
    with NXtomoWriter(path, frame_shape=frames.shape[1:], tilt_axis_angle_deg=angle) as w:
        for i, f in enumerate(frames):
            w.append(f, angle_deg=10.0 * i, t_s=float(i))


@pytest.mark.parametrize("angle, turn", [(90.0, rotate_ccw_90), (-90.0, rotate_cw_90), (270.0, rotate_cw_90)])
def test_recording_rotated_by_quarter_turns_reads_back_exactly(tmp_path, originals, angle, turn):
    # a picture turned counter-clockwise by 90° has its (formerly vertical) axis at +90°
    stored = turn(originals)
    assert stored.shape == (3, U, Y)
    _write_recording(tmp_path / "rec.h5", stored, angle)
    r = read_series(tmp_path / "rec.h5")
    assert r.frames.shape == (3, Y, U)
    np.testing.assert_array_equal(r.frames, originals)
    assert r.metadata["orientation"]["interpolated"] is False
    assert describe(tmp_path / "rec.h5")["frame_shape_oriented"] == (Y, U)
    # the wrong sign gives a different picture: the test can fail
    wrong = read_series(tmp_path / "rec.h5", tilt_axis_angle_deg=-angle)
    assert not np.array_equal(wrong.frames, originals)


def test_argument_overrides_file_and_default_is_zero(tmp_path, originals):
    _write_recording(tmp_path / "rec.h5", rotate_ccw_90(originals), 0.0)  # file claims 0 (wrong)
    np.testing.assert_array_equal(read_series(tmp_path / "rec.h5", tilt_axis_angle_deg=90).frames, originals)
    r = read_series(tmp_path / "rec.h5")
    assert r.frames.shape == (3, U, Y) and r.metadata["orientation"]["rot90_k"] == 0


def test_tiff_csv_comment_gives_angle(tmp_path, originals):
    tifffile.imwrite(tmp_path / "s.tif", rotate_cw_90(originals), photometric="minisblack")
    (tmp_path / "s.csv").write_text("# tilt_axis_angle_deg=-90\nangle_deg,time_s\n-10,0\n0,1\n10,2\n")
    r = read_series(tmp_path / "s.tif")
    np.testing.assert_array_equal(r.frames, originals)
    assert "tilt_axis_angle_deg" in r.metadata["orientation"]["source"]


def test_mrc_imod_label_gives_angle(tmp_path, originals):
    with mrcfile.new(tmp_path / "s.mrc") as m:
        m.set_data(rotate_ccw_90(originals))
        m.set_image_stack()
        m.header.label[1] = b"SerialEM: Digitized on EMBL   Tilt axis angle = 90.00, binning = 1  spot = 7"
        m.header.nlabl = 2
    (tmp_path / "s.rawtlt").write_text("-10\n0\n10\n")
    r = read_series(tmp_path / "s.mrc")
    np.testing.assert_array_equal(r.frames, originals)
    assert "MRC label" in r.metadata["orientation"]["source"]


def test_mrc_fei_extended_header_gives_angle(tmp_path, originals):
    from mrcfile.dtypes import get_ext_header_dtype

    ext_dtype = get_ext_header_dtype(b"FEI1", "<")
    ext = np.zeros(3, dtype=ext_dtype)
    ext["Metadata size"] = ext_dtype.itemsize
    ext["Tilt axis angle"] = -90.0
    with mrcfile.new(tmp_path / "s.mrc") as m:
        m.set_data(rotate_cw_90(originals))
        m.set_image_stack()
        m.set_extended_header(ext)
        m.header.exttyp = b"FEI1"
    (tmp_path / "s.rawtlt").write_text("-10\n0\n10\n")
    r = read_series(tmp_path / "s.mrc")
    np.testing.assert_array_equal(r.frames, originals)
    assert "FEI extended header" in r.metadata["orientation"]["source"]


def _line_frame(angle_deg: float, size: int = 41) -> np.ndarray:
    """A bright line through the centre along the tilt-axis direction for ``angle_deg``."""
    dx, dy = tilt_axis_direction(angle_deg)
    frame = np.zeros((size, size), np.float32)
    c = size // 2
    for s in np.linspace(-14, 14, 281):
        frame[int(round(c + s * dy)), int(round(c + s * dx))] = 1.0
    return frame


def _column_spread(frame: np.ndarray) -> float:
    cols = np.arange(frame.shape[1])
    w = np.clip(frame, 0, None)
    mean = (w.sum(0) * cols).sum() / w.sum()
    return float(np.sqrt((w.sum(0) * (cols - mean) ** 2).sum() / w.sum()))


def test_direction_helper_follows_imod_convention():
    np.testing.assert_allclose(tilt_axis_direction(0), (0, 1), atol=1e-12)  # along +Y (rows)
    np.testing.assert_allclose(tilt_axis_direction(90), (-1, 0), atol=1e-12)  # counter-clockwise: -X


@pytest.mark.parametrize("angle", [30.0, -30.0, 120.0, 215.0])
def test_interpolated_rotation_puts_axis_along_rows(angle):
    stored = _line_frame(angle)[None]
    assert _column_spread(stored[0]) > 3  # not vertical before
    out, info = orient_frames(stored, angle)
    assert info["interpolated"] and abs(info["residual_deg"]) <= 45
    assert _column_spread(out[0]) < 0.6  # vertical after
    wrong, _ = orient_frames(stored, -angle)
    assert _column_spread(wrong[0]) > 3  # a wrong sign leaves it tilted


def test_orientation_recorded_in_metadata(tmp_path, rng):
    s = TiltSeries(frames=rng.random((2, Y, U), dtype=np.float32), angles_deg=[0, 1], times_s=[0, 1])
    tifffile.imwrite(tmp_path / "t.tif", s.frames, photometric="minisblack")
    (tmp_path / "t.csv").write_text("0,0\n1,1\n")
    r = read_series(tmp_path / "t.tif", tilt_axis_angle_deg=12.5)
    o = r.metadata["orientation"]
    assert o["tilt_axis_angle_deg"] == 12.5 and o["rot90_k"] == 0 and o["residual_deg"] == 12.5
    assert o["source"] == "tilt_axis_angle_deg argument" and r.frames.shape == (2, Y, U)
