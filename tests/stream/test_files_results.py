"""4D results: write/read round trip with provenance, single-volume export to MRC and TIFF."""

from __future__ import annotations

import hashlib
from datetime import datetime

import mrcfile
import numpy as np
import pytest
import tifffile

from tiltstream.stream import FileFormatError, TiltSeries, export_volume, read_result, read_series, write_result, write_series

T, Z, Y, X = 3, 5, 7, 9


def test_result_round_trip_with_provenance(tmp_path, rng):
    series = TiltSeries(frames=rng.random((2, Y, X), dtype=np.float32), angles_deg=[0, 1], times_s=[0, 1])
    write_series(tmp_path / "in.h5", series)
    volumes = rng.random((T, Z, Y, X), dtype=np.float32)
    times = np.array([0.25, 1.5, 2.75])
    params = {"iterations": 30, "window_s": 4.0, "lr": [1e-3, 1e-4]}
    write_result(tmp_path / "out.h5", volumes, times,
                 attrs={"method": "streaming-sirt", "parameters": params, "input_path": tmp_path / "in.h5",
                        "voxel_nm": 0.35, "note": "unit test"})
    v, t, attrs = read_result(tmp_path / "out.h5")
    assert v.dtype == np.float32 and v.shape == (T, Z, Y, X)
    np.testing.assert_array_equal(v, volumes)
    np.testing.assert_array_equal(t, times)
    assert attrs["method"] == "streaming-sirt" and attrs["parameters"] == params
    assert attrs["input_sha256"] == hashlib.sha256((tmp_path / "in.h5").read_bytes()).hexdigest()
    assert attrs["input_path"] == str(tmp_path / "in.h5")
    assert attrs["format"] == "tiltstream-result/1" and attrs["tiltstream_version"]
    assert attrs["voxel_nm"] == 0.35 and attrs["note"] == "unit test"
    datetime.fromisoformat(attrs["created"])
    with pytest.raises(FileExistsError):
        write_result(tmp_path / "out.h5", volumes, times, attrs={})
    with pytest.raises(FileFormatError, match="a tiltstream 4-D result"):
        read_series(tmp_path / "out.h5")


def test_result_input_checks(tmp_path, rng):
    with pytest.raises(ValueError, match=r"volumes: expected a 4-D array \(T, Z, Y, X\), got shape \(5, 7, 9\)"):
        write_result(tmp_path / "a.h5", np.zeros((Z, Y, X)), [0.0], attrs={})
    with pytest.raises(ValueError, match=r"times_s: expected 3 times \(one per volume\)"):
        write_result(tmp_path / "a.h5", np.zeros((T, Z, Y, X)), [0.0, 1.0], attrs={})
    with pytest.raises(FileFormatError, match=r"nope.h5: path: expected an existing result file"):
        read_result(tmp_path / "nope.h5")
    write_series(tmp_path / "rec.h5", TiltSeries(frames=np.zeros((1, Y, X)), angles_deg=[0], times_s=[0]))
    with pytest.raises(FileFormatError, match=r"rec.h5: /volumes: expected a tiltstream 4-D result dataset, got none"):
        read_result(tmp_path / "rec.h5")


def test_export_volume(tmp_path, rng):
    vol = rng.random((Z, Y, X), dtype=np.float32)
    export_volume(tmp_path / "v.mrc", vol, voxel_nm=0.5)
    with mrcfile.open(tmp_path / "v.mrc") as m:
        np.testing.assert_array_equal(m.data, vol)
        assert float(m.voxel_size.x) == pytest.approx(5.0)  # Å
    export_volume(tmp_path / "v.tif", vol, voxel_nm=0.5)
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), vol)
        assert tif.imagej_metadata["unit"] == "nm" and tif.imagej_metadata["spacing"] == 0.5
    with pytest.raises(FileFormatError, match=r"v.png: format: expected a .mrc, .map, .rec, .tif or .tiff file name, got '.png'"):
        export_volume(tmp_path / "v.png", vol)
    with pytest.raises(ValueError, match=r"volume: expected a 3-D array"):
        export_volume(tmp_path / "w.mrc", vol[0])
