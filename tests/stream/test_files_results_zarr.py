"""4D results as OME-Zarr: validated by ome-zarr's own reader, equal to the HDF5 result, readable
while partly written; one writer interface for both formats."""

from __future__ import annotations

import numpy as np
import pytest

from tiltstream.stream import read_result, write_result
from tiltstream.stream.results import open_result_writer, volume_at

pytest.importorskip("ome_zarr", reason="OME-Zarr results need the [zarr] extra")
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402

T, Z, Y, X = 3, 9, 11, 13
VOXEL_NM = 0.35
ATTRS = {"method": "sirt", "parameters": {"iterations": 30, "window": [4, "s"]}, "voxel_nm": VOXEL_NM,
         "input_path": "/nowhere/in.h5", "input_sha256": "ab" * 32, "note": "unit test", "skipped": None}


@pytest.fixture
def result(rng):
    return rng.random((T, Z, Y, X), dtype=np.float32), np.array([0.5, 2.0, 3.5])


def ngff_image(path):
    """(multiscales metadata, level-0 dask array) of an OME-Zarr image, through ome-zarr's reader."""
    nodes = list(Reader(parse_url(str(path)))())
    assert nodes, f"{path}: ome-zarr found no image"
    return nodes[0].metadata, nodes[0].data[0]


def test_zarr_result_is_ngff_with_axes_units_scale_and_one_chunk_per_time(tmp_path, result):
    volumes, times = result
    write_result(tmp_path / "r.zarr", volumes, times, attrs=ATTRS)
    meta, data = ngff_image(tmp_path / "r.zarr")
    assert [a["name"] for a in meta["axes"]] == ["t", "z", "y", "x"]
    assert [a["type"] for a in meta["axes"]] == ["time", "space", "space", "space"]
    assert [a.get("unit") for a in meta["axes"]] == ["second", "nanometer", "nanometer", "nanometer"]
    scale, translation = meta["coordinateTransformations"][0]
    assert scale == {"type": "scale", "scale": [1.5, VOXEL_NM, VOXEL_NM, VOXEL_NM]}
    assert translation["translation"] == [0.5, 0.0, 0.0, 0.0]
    assert data.shape == (T, Z, Y, X) and data.chunksize == (1, Z, Y, X)
    np.testing.assert_array_equal(np.asarray(data), volumes)


def test_zarr_and_hdf5_results_hold_the_same_data_and_provenance(tmp_path, result):
    volumes, times = result
    write_result(tmp_path / "r.zarr", volumes, times, attrs=ATTRS)
    write_result(tmp_path / "r.h5", volumes, times, attrs=ATTRS)
    vz, tz, az = read_result(tmp_path / "r.zarr")
    vh, th, ah = read_result(tmp_path / "r.h5")
    np.testing.assert_array_equal(vz, vh)
    np.testing.assert_array_equal(vz, volumes)
    np.testing.assert_array_equal(tz, th)
    for key in ("method", "parameters", "voxel_nm", "input_path", "input_sha256", "note", "format",
                "tiltstream_version", "n_written", "n_planned"):
        assert az[key] == ah[key], key
    assert az["parameters"] == {"iterations": 30, "window": [4, "s"]}
    assert "skipped" not in az and "skipped" not in ah
    _, data = ngff_image(tmp_path / "r.zarr")
    np.testing.assert_array_equal(np.asarray(data), vh)


@pytest.mark.parametrize("name", ["p.zarr", "p.h5"])
def test_partly_written_result_opens_with_the_volumes_done(tmp_path, result, name):
    volumes, times = result
    writer = open_result_writer(tmp_path / name, (Z, Y, X), times, attrs=ATTRS)
    writer.append(volumes[0])
    writer.append(volumes[1])
    if name.endswith(".h5"):
        writer.close()  # HDF5: a reader can open the file only when the writer lets go (or via SWMR)
    v, t, attrs = read_result(tmp_path / name)
    assert v.shape == (2, Z, Y, X) and attrs["n_written"] == 2 and attrs["n_planned"] == T
    np.testing.assert_array_equal(v, volumes[:2])
    np.testing.assert_array_equal(t, times[:2])
    if name.endswith(".zarr"):
        _, data = ngff_image(tmp_path / name)  # napari-ome-zarr reads it the same way
        assert data.shape == (T, Z, Y, X)
        assert np.isnan(np.asarray(data[2])).all()  # not computed yet
        writer.append(volumes[2])
        writer.close()
        np.testing.assert_array_equal(read_result(tmp_path / name)[0], volumes)


def test_writer_checks_order_shape_and_count(tmp_path, result):
    volumes, times = result
    with open_result_writer(tmp_path / "w.zarr", (Z, Y, X), times[:1], attrs={}) as w:
        with pytest.raises(ValueError, match=r"volume 0: expected shape \(9, 11, 13\), got \(9, 13, 11\)"):
            w.append(volumes[0].transpose(0, 2, 1))
        w.append(volumes[0])
        with pytest.raises(ValueError, match="expected at most 1 volumes"):
            w.append(volumes[1])
    with pytest.raises(FileExistsError, match="w.zarr: refusing to replace"):
        write_result(tmp_path / "w.zarr", volumes, times, attrs={})
    write_result(tmp_path / "w.zarr", volumes, times, attrs={}, overwrite=True)
    assert read_result(tmp_path / "w.zarr")[0].shape == (T, Z, Y, X)


def test_zarr_without_voxel_size_has_no_spatial_unit(tmp_path, result):
    volumes, times = result
    write_result(tmp_path / "n.zarr", volumes[:1], times[:1], attrs={"voxel_nm": float("nan")})
    meta, _ = ngff_image(tmp_path / "n.zarr")
    assert [a.get("unit") for a in meta["axes"]] == ["second", None, None, None]
    assert meta["coordinateTransformations"][0][0]["scale"] == [1.0, 1.0, 1.0, 1.0]
    assert "voxel_nm" not in read_result(tmp_path / "n.zarr")[2]  # JSON has no NaN: unknown = absent


def test_volume_at_nearest_and_interpolated(result):
    volumes, times = result
    v, t = volume_at(volumes, times, 1.0)
    assert t == 0.5
    np.testing.assert_array_equal(v, volumes[0])
    np.testing.assert_array_equal(volume_at(volumes, times, 1.5)[0], volumes[1])
    v, t = volume_at(volumes, times, 2.5, interpolate=True)
    assert t == 2.5
    np.testing.assert_allclose(v, volumes[1] + (volumes[2] - volumes[1]) / 3, rtol=1e-6)
    np.testing.assert_array_equal(volume_at(volumes, times, 3.5, interpolate=True)[0], volumes[2])
    with pytest.raises(ValueError, match=r"expected t within the result's span \[0.5, 3.5\] s, got 4 s"):
        volume_at(volumes, times, 4.0)
