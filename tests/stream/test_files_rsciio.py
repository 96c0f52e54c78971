"""Velox .emd through RosettaSciIO: a minimal Velox file (rsciio's own layout) read back with angles, times, pixel."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest

from tiltstream.stream import FileFormatError, describe, read_series

pytest.importorskip("rsciio")

N, Y, U = 5, 37, 31
ANGLES = np.array([0.0, 68.75, -42.5, 26.25, -84.0])
T0 = 1.7e9


def write_velox(path, frames, *, alpha_deg=ANGLES, pixel_m=3.36e-10, stage=True) -> None:
    """The groups RosettaSciIO's Velox reader needs: Version, Data/Image/<id>/{Data (Y, X, N), Metadata}."""
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": "11"}).encode()]))
        group = f.create_group("Data/Image/6f1c0a9e")
        group.create_dataset("Data", data=np.moveaxis(frames, 0, 2))
        columns = []
        for i in range(frames.shape[0]):
            md = {"BinaryResult": {"PixelSize": {"width": str(pixel_m), "height": str(pixel_m)}, "PixelUnitX": "m",
                                   "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"}},
                  "Scan": {"FrameTime": "0.5"},
                  "Acquisition": {"AcquisitionStartDatetime": {"DateTime": str(T0 + 2.25 * i)}}}
            if stage:
                md["Stage"] = {"AlphaTilt": repr(float(np.deg2rad(alpha_deg[i])))}
            columns.append(np.frombuffer(json.dumps(md).encode(), np.uint8))
        meta = np.zeros((max(map(len, columns)), len(columns)), np.uint8)
        for i, c in enumerate(columns):
            meta[: len(c), i] = c
        group.create_dataset("Metadata", data=meta)


@pytest.fixture
def frames(rng):
    return rng.random((N, Y, U), dtype=np.float32)


def test_velox_emd_round_trip(tmp_path, frames):
    from rsciio.emd import file_reader

    write_velox(tmp_path / "tilt.emd", frames)
    np.testing.assert_array_equal(file_reader(str(tmp_path / "tilt.emd"))[0]["data"], frames)  # rsciio reads it
    r = read_series(tmp_path / "tilt.emd")
    np.testing.assert_array_equal(r.frames, frames)
    np.testing.assert_allclose(r.angles_deg, ANGLES, atol=1e-9)  # radians per frame -> degrees
    np.testing.assert_allclose(r.times_s, 2.25 * np.arange(N))
    assert r.pixel_nm == pytest.approx(0.336)  # metres -> nm
    assert r.metadata["format"] == "emd" and r.metadata["time_source"] == "timestamps"
    assert describe(tmp_path / "tilt.emd")["n_frames"] == N


def test_velox_without_stage_angles_takes_the_sidecar(tmp_path, frames):
    write_velox(tmp_path / "tilt.emd", frames, stage=False)
    with pytest.raises(FileFormatError, match=r"angles: expected tilt angles in the file or a tilt.rawtlt"):
        read_series(tmp_path / "tilt.emd")
    (tmp_path / "tilt.rawtlt").write_text("".join(f"{a}\n" for a in ANGLES[::-1]))
    r = read_series(tmp_path / "tilt.emd")
    np.testing.assert_array_equal(r.angles_deg, ANGLES[::-1])


def test_without_rosettasciio_the_error_says_what_to_install(tmp_path, frames, monkeypatch):
    write_velox(tmp_path / "tilt.emd", frames)
    monkeypatch.setitem(sys.modules, "rsciio", None)
    with pytest.raises(FileFormatError, match=r"rosettasciio package .*tiltstream\[formats\]"):
        read_series(tmp_path / "tilt.emd")


def test_damaged_emd_is_one_line(tmp_path):
    (tmp_path / "bad.emd").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 200)
    with pytest.raises(FileFormatError) as info:
        read_series(tmp_path / "bad.emd")
    assert "bad.emd" in str(info.value) and "\n" not in str(info.value)
