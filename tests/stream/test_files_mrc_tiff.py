"""MRC + .rawtlt/.tlt/.csv and TIFF (+ folder) + CSV readers, round trips."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.stream import TiltSeries, describe, read_series
from tiltstream.stream.mrc import write_mrc_series
from tiltstream.stream.tiff import write_tiff_series

Y, U = 13, 17


def make_series(rng: np.random.Generator, n: int = 6) -> TiltSeries:
    return TiltSeries(
        frames=rng.random((n, Y, U), dtype=np.float32),
        angles_deg=rng.uniform(-70, 70, n),
        times_s=np.cumsum(rng.uniform(0.1, 0.3, n)),
        exposure_s=rng.uniform(0.05, 0.1, n),
        pixel_nm=0.35,
        extra={"dose_e_per_A2": rng.uniform(1, 2, n)},
    )


def assert_same(r: TiltSeries, s: TiltSeries) -> None:
    np.testing.assert_array_equal(r.frames, s.frames)
    np.testing.assert_array_equal(r.angles_deg, s.angles_deg)
    np.testing.assert_array_equal(r.times_s, s.times_s)
    np.testing.assert_array_equal(r.exposure_s, s.exposure_s)
    np.testing.assert_array_equal(r.extra["dose_e_per_A2"], s.extra["dose_e_per_A2"])
    assert r.pixel_nm == pytest.approx(s.pixel_nm, rel=1e-6)
    assert r.metadata["time_source"] == "timestamps"


def test_mrc_round_trip_with_csv_times(tmp_path, rng):
    s = make_series(rng)
    write_mrc_series(tmp_path / "series.mrc", s)
    assert (tmp_path / "series.rawtlt").exists() and (tmp_path / "series.csv").exists()
    r = read_series(tmp_path / "series.mrc")
    assert_same(r, s)
    assert r.metadata["format"] == "mrc"
    info = describe(tmp_path / "series.mrc")
    assert info["n_frames"] == 6 and info["frame_shape"] == (Y, U) and info["dtype"] == "float32"


def test_mrc_with_tlt_only_imod_style(tmp_path, rng):
    """An IMOD .st + .tlt written with mrcfile directly: angles, pixel size, frame-index times."""
    frames = rng.integers(-1000, 1000, (5, Y, U)).astype(np.int16)
    angles = np.array([-40.5, -20.25, 0.0, 20.125, 40.0])
    with mrcfile.new(tmp_path / "tomo.st") as m:
        m.set_data(frames)
        m.set_image_stack()
        m.voxel_size = 4.2  # Å
    (tmp_path / "tomo.tlt").write_text("\n".join(f"  {a:.3f}" for a in angles) + "\n\n")
    r = read_series(tmp_path / "tomo.st")
    np.testing.assert_array_equal(r.frames, frames.astype(np.float32))
    np.testing.assert_array_equal(r.angles_deg, angles)
    assert r.pixel_nm == pytest.approx(0.42)
    assert r.metadata["time_source"] == "frame_index"
    np.testing.assert_array_equal(r.times_s, np.arange(5))
    assert r.exposure_s is None


def test_mrc_cell_equal_to_the_grid_means_pixel_size_unknown(tmp_path, rng):
    """IMOD writes a cell equal to the grid (1 Å pixels) when it has no pixel size; that is not 0.1 nm."""
    frames = rng.normal(size=(3, Y, U)).astype(np.float32)
    for voxel, expected in ((1.0, None), (0.0, None), (3.36, 0.336)):
        with mrcfile.new(tmp_path / "unset.mrc", overwrite=True) as m:
            m.set_data(frames)
            m.set_image_stack()
            m.voxel_size = voxel
        (tmp_path / "unset.tlt").write_text("-30\n0\n30\n")
        r = read_series(tmp_path / "unset.mrc")
        assert r.pixel_nm == (None if expected is None else pytest.approx(expected)), voxel


def test_tiff_stack_round_trip(tmp_path, rng):
    s = make_series(rng)
    write_tiff_series(tmp_path / "stack.tif", s)
    r = read_series(tmp_path / "stack.tif")
    assert_same(r, s)
    assert r.metadata["format"] == "tiff"


def test_tiff_stack_csv_without_header_and_pixel_from_tags(tmp_path, rng):
    frames = rng.random((4, Y, U), dtype=np.float32)
    tifffile.imwrite(tmp_path / "a.tiff", frames, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZYX", "unit": "nm"})
    (tmp_path / "a.csv").write_text("# acquired with the DIP-STER scheme\n-60,0.5\n-15.5,1.5\n30,2.5\n75,3.5\n")
    r = read_series(tmp_path / "a.tiff")
    np.testing.assert_array_equal(r.frames, frames)
    np.testing.assert_array_equal(r.angles_deg, [-60, -15.5, 30, 75])
    np.testing.assert_array_equal(r.times_s, [0.5, 1.5, 2.5, 3.5])
    assert r.pixel_nm == pytest.approx(0.25, rel=1e-6)


def test_tiff_folder_natural_order(tmp_path, rng):
    frames = rng.random((11, Y, U), dtype=np.float32)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        tifffile.imwrite(folder / f"frame_{i}.tif", f)  # frame_10 sorts after frame_9
    (tmp_path / "frames.csv").write_text(
        "time_s;angle_deg;temperature_C\n" + "".join(f"{0.2 * i!r};{3.0 * i!r};{300 + i}\n" for i in range(11))
    )
    r = read_series(folder)
    np.testing.assert_array_equal(r.frames, frames)
    np.testing.assert_array_equal(r.angles_deg, 3.0 * np.arange(11))
    np.testing.assert_array_equal(r.times_s, 0.2 * np.arange(11))
    np.testing.assert_array_equal(r.extra["temperature_C"], 300 + np.arange(11))
    assert describe(folder)["n_frames"] == 11


def test_describe_reads_no_frames(tmp_path, rng):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"f{i}.tif", rng.random((Y, U), dtype=np.float32))
    (folder / "f2.tif").write_bytes(b"II*\x00" + b"\x00" * 20)  # broken, but not read by describe
    (folder / "angles.csv").write_text("0\n1\n2\n")
    info = describe(folder)
    assert info["n_frames"] == 3 and info["time_source"] == "frame_index"
    from tiltstream.stream import FileFormatError

    with pytest.raises(FileFormatError, match=r"f2.tif: image: expected shape \(13, 17\)"):
        read_series(folder)
