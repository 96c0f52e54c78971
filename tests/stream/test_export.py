"""Export of 4-D results: MRC with the voxel size, ImageJ TIFF hyperstacks with time, OME-Zarr, slice
movies; the volume at a chosen time; ``tiltstream export`` and ``reconstruct --out r.zarr``."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.cli import main
from tiltstream.stream import FileFormatError, read_result, write_result
from tiltstream.stream.export import export_result, export_tiff_series, format_of

T, Z, Y, X = 3, 9, 11, 13
VOXEL_NM = 0.4


@pytest.fixture
def result(tmp_path, rng):
    volumes = rng.random((T, Z, Y, X), dtype=np.float32)
    times = np.array([1.0, 3.0, 5.0])
    path = tmp_path / "r.h5"
    write_result(path, volumes, times, attrs={"method": "sirt", "parameters": {"iterations": 7},
                                              "voxel_nm": VOXEL_NM, "input_path": "/nowhere.h5",
                                              "input_sha256": "cd" * 32})
    return path, volumes, times


def test_mrc_holds_the_volume_at_the_time_with_voxel_size_in_angstrom(result, tmp_path):
    path, volumes, _ = result
    done = export_result(path, tmp_path / "v.mrc", time_s=2.9)
    assert done.times_s == (3.0,) and done.format == "mrc"
    with mrcfile.open(tmp_path / "v.mrc") as m:
        np.testing.assert_array_equal(m.data, volumes[1])
        assert m.data.shape == (Z, Y, X)
        assert float(m.voxel_size.x) == pytest.approx(VOXEL_NM * 10) == float(m.voxel_size.z)
    export_result(path, tmp_path / "last.mrc")  # no time: the last volume
    with mrcfile.open(tmp_path / "last.mrc") as m:
        np.testing.assert_array_equal(m.data, volumes[-1])


def test_mrc_interpolated_between_two_times(result, tmp_path):
    path, volumes, _ = result
    done = export_result(path, tmp_path / "i.mrc", time_s=4.0, interpolate=True)
    assert done.times_s == (4.0,) and done.interpolated
    with mrcfile.open(tmp_path / "i.mrc") as m:
        np.testing.assert_allclose(m.data, (volumes[1] + volumes[2]) / 2, rtol=1e-6)


def test_tiff_is_an_imagej_hyperstack_with_time_and_spacing(result, tmp_path):
    path, volumes, _ = result
    export_result(path, tmp_path / "s.tif")
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.is_imagej
        ij = tif.imagej_metadata
        assert (ij["frames"], ij["slices"]) == (T, Z)
        assert ij["unit"] == "nm" and ij["spacing"] == pytest.approx(VOXEL_NM)
        assert ij["finterval"] == pytest.approx(2.0)
        assert tif.series[0].axes == "TZYX"
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(1 / VOXEL_NM)
        np.testing.assert_array_equal(tif.asarray(), volumes)
    export_result(path, tmp_path / "one.tiff", time_s=5.0)
    with tifffile.TiffFile(tmp_path / "one.tiff") as tif:
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), volumes[2])


def test_tiff_series_checks(tmp_path, rng):
    vol = rng.random((2, 3, 4, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"volumes: expected a 4-D array \(T, Z, Y, X\), got shape \(3, 4, 5\)"):
        export_tiff_series(tmp_path / "a.tif", vol[0], [0.0])
    export_tiff_series(tmp_path / "a.tif", vol, [0.0, 1.0])
    with pytest.raises(FileExistsError, match="a.tif: refusing to replace"):
        export_tiff_series(tmp_path / "a.tif", vol, [0.0, 1.0])


def test_zarr_export_carries_the_provenance(result, tmp_path):
    pytest.importorskip("ome_zarr", reason="OME-Zarr needs the [zarr] extra")
    path, volumes, times = result
    export_result(path, tmp_path / "r.zarr")
    v, t, attrs = read_result(tmp_path / "r.zarr")
    _, _, source = read_result(path)
    np.testing.assert_array_equal(v, volumes)
    np.testing.assert_array_equal(t, times)
    for key in ("method", "parameters", "voxel_nm", "input_path", "input_sha256"):
        assert attrs[key] == source[key], key
    assert attrs["exported_from"] == str(path)


def test_export_names_what_is_wrong(result, tmp_path):
    path, _, _ = result
    with pytest.raises(FileFormatError, match=r"v.png: format: expected a .mrc, .map, .rec, .tif, .tiff, .zarr "
                                              r"file name, got '.png'"):
        format_of(tmp_path / "v.png")
    with pytest.raises(ValueError, match=r"expected t within the result's span \[1, 5\] s, got 9 s"):
        export_result(path, tmp_path / "v.mrc", time_s=9.0)
    with pytest.raises(ValueError, match="export format: expected one of mrc, tiff, zarr, got 'png'"):
        export_result(path, tmp_path / "v.mrc", to="png")


def test_cli_export_to_every_format(result, tmp_path, capsys):
    path, volumes, _ = result
    assert main(["export", str(path), "--to", "mrc", "--time", "1.2"]) == 0
    assert "t = 1 s" in capsys.readouterr().out
    with mrcfile.open(path.with_suffix(".mrc")) as m:
        np.testing.assert_array_equal(m.data, volumes[0])
    assert main(["export", str(path), "--to", "tiff", "--out", str(tmp_path / "x.tif")]) == 0
    assert tifffile.imread(tmp_path / "x.tif").shape == (T, Z, Y, X)
    assert main(["export", str(path), "--to", "gif", "--fps", "2"]) == 0
    assert "3 volume(s)" in capsys.readouterr().out
    from PIL import Image

    with Image.open(path.with_suffix(".gif")) as gif:
        assert gif.n_frames == T
    assert main(["export", str(path), "--to", "mrc", "--time", "1.2"]) == 2  # exists: no --overwrite
    assert "refusing to replace" in capsys.readouterr().err
    assert main(["export", str(path), "--to", "mrc", "--interpolate"]) == 2
    assert "--interpolate: expected --time T" in capsys.readouterr().err


def test_reconstruct_out_zarr_gives_an_ome_zarr_result(tmp_path, simulated_recording):
    pytest.importorskip("ome_zarr", reason="OME-Zarr needs the [zarr] extra")
    rec = simulated_recording(size=12, frames=16, seed=1)
    out = tmp_path / "r.zarr"
    assert main(["reconstruct", str(rec), "--method", "fbp", "--device", "cpu", "--out", str(out)]) == 0
    assert (out / "zarr.json").is_file()
    v, t, attrs = read_result(out)
    assert v.shape[1:] == (12, 12, 12) and attrs["method"] == "fbp" and len(attrs["input_sha256"]) == 64
