"""SerialEM MRC stacks + .mdoc (written by mrcfile and mdocfile), FEI extended headers, bad .mdoc files."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import mrcfile
import numpy as np
import pytest

from tiltstream.stream import FileFormatError, describe, read_series

mdocfile = pytest.importorskip("mdocfile")
from mdocfile.data_models import Mdoc, MdocGlobalData, MdocSectionData  # noqa: E402

N, Y, U = 5, 37, 31
ANGLES = np.array([0.0, 68.75, -42.5, 26.25, -84.0])  # golden-ratio-like order: acquisition order
EXPOSURE = np.array([0.5, 0.5, 0.75, 0.5, 0.25])
DOSE = np.array([1.5, 1.25, 2.0, 1.5, 0.75])
STAMPS = 7.3e8 + np.array([0.0, 2.5, 5.25, 8.0, 11.5])  # SerialEM TimeStamp: seconds since 2000


def _write_stack(path, frames, *, voxel_a: float | None = None) -> None:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(frames)
        m.set_image_stack()
        if voxel_a is not None:
            m.voxel_size = voxel_a


def _sections(*, stamps: bool = True, dates: bool = False, pixel_a: float = 7.88) -> list[MdocSectionData]:
    start = datetime(2023, 3, 31, 16, 24, 15)
    out = []
    for i in range(N):
        fields = dict(ZValue=i, TiltAngle=ANGLES[i], ExposureTime=EXPOSURE[i], ExposureDose=DOSE[i],
                      PixelSpacing=pixel_a, Magnification=115000.0)
        if stamps:
            fields["TimeStamp"] = repr(float(STAMPS[i]))
        if dates:
            fields["DateTime"] = (start + timedelta(seconds=3 * i)).strftime("%d-%b-%y  %H:%M:%S")
        out.append(MdocSectionData(**fields))
    return out


def _write_mdoc(path, sections, *, pixel_a: float | None = 7.88) -> None:
    mdoc = Mdoc(titles=["[T = SerialEM: test  31-Mar-23  16:24:14]", "[T = Tilt axis angle = 85.3, binning = 1]"],
                global_data=MdocGlobalData(PixelSpacing=pixel_a, ImageFile="tomo.mrc", ImageSize=(U, Y), DataMode=2),
                section_data=sections)
    path.write_text(mdoc.to_string() + "\n")


@pytest.fixture
def frames(rng):
    return rng.random((N, Y, U), dtype=np.float32)


def test_mrc_with_mdoc_gives_angles_times_exposure_dose_and_pixel(tmp_path, frames):
    _write_stack(tmp_path / "tomo.mrc", frames)  # cell left at 1 Å pixels: the pixel size is the .mdoc's
    _write_mdoc(tmp_path / "tomo.mrc.mdoc", _sections(pixel_a=7.88))
    r = read_series(tmp_path / "tomo.mrc")
    np.testing.assert_array_equal(r.frames, frames)
    np.testing.assert_allclose(r.angles_deg, ANGLES)  # stack (= acquisition) order, not sorted
    np.testing.assert_allclose(r.times_s, STAMPS - STAMPS[0])
    np.testing.assert_allclose(r.exposure_s, EXPOSURE)
    np.testing.assert_allclose(r.extra["dose_e_per_A2"], DOSE)
    assert r.pixel_nm == pytest.approx(0.788)  # Å -> nm
    assert r.metadata["format"] == "serialem" and r.metadata["time_source"] == "timestamps"
    assert "TimeStamp" in r.metadata["time_detail"]
    info = describe(tmp_path / "tomo.mrc")
    assert info["files"][1].endswith("tomo.mrc.mdoc") and info["duration_s"] == pytest.approx(11.5)


def test_mdoc_date_times_without_time_stamps_and_the_header_pixel_size_first(tmp_path, frames):
    _write_stack(tmp_path / "tomo.mrc", frames, voxel_a=4.2)
    _write_mdoc(tmp_path / "tomo.mdoc", _sections(stamps=False, dates=True, pixel_a=7.88))
    r = read_series(tmp_path / "tomo.mrc")
    np.testing.assert_allclose(r.times_s, 3.0 * np.arange(N))
    assert "DateTime" in r.metadata["time_detail"]
    assert r.pixel_nm == pytest.approx(0.42)  # a set MRC cell wins over the .mdoc


def test_a_tilt_file_overrides_the_mdoc_angles_and_dose_zero_is_no_dose(tmp_path, frames):
    _write_stack(tmp_path / "tomo.mrc", frames)
    sections = _sections()
    for s in sections:
        s.ExposureDose = 0.0  # SerialEM in STEM: no dose
    _write_mdoc(tmp_path / "tomo.mrc.mdoc", sections)
    (tmp_path / "tomo.rawtlt").write_text("".join(f"{a + 0.5}\n" for a in ANGLES))
    r = read_series(tmp_path / "tomo.mrc")
    np.testing.assert_allclose(r.angles_deg, ANGLES + 0.5)
    assert "dose_e_per_A2" not in r.extra
    np.testing.assert_allclose(r.times_s, STAMPS - STAMPS[0])


def _mdoc_text() -> str:
    mdoc = Mdoc(titles=["[T = SerialEM: test]"], global_data=MdocGlobalData(PixelSpacing=7.88),
                section_data=_sections())
    return mdoc.to_string() + "\n"


@pytest.mark.parametrize(
    "edit, field, expected",
    [
        (lambda t: t[: t.index("[ZValue = 3]")], "sections", "5 [ZValue = N] sections"),  # truncated file
        (lambda t: t[: t.rindex("TiltAngle")], "[ZValue = 4]", "TiltAngle as in the other sections"),
        (lambda t: t.replace("[ZValue = 2]", "[ZValue = 7]"), "ZValue", "[ZValue = 0] to [ZValue = 4]"),
        (lambda t: t.replace(f"TiltAngle = {ANGLES[1]}", "TiltAngle = high"), "TiltAngle", "valid value"),
        (lambda t: t.replace("TimeStamp = ", "TimeStamp = x", 1), "[ZValue = 0] TimeStamp", "a number"),
        (lambda t: t.split("[ZValue")[0], "sections", "[ZValue = N] sections, one per frame"),
    ],
)
def test_bad_mdoc_is_one_line_naming_what_was_expected(tmp_path, frames, edit, field, expected):
    _write_stack(tmp_path / "tomo.mrc", frames)
    (tmp_path / "tomo.mrc.mdoc").write_text(edit(_mdoc_text()))
    with pytest.raises(FileFormatError) as info:
        read_series(tmp_path / "tomo.mrc")
    e = info.value
    assert e.file.endswith("tomo.mrc.mdoc") and e.field == field and expected in e.expected, str(e)
    assert "\n" not in str(e)


def test_without_mdocfile_the_error_says_what_to_install(tmp_path, frames, monkeypatch):
    _write_stack(tmp_path / "tomo.mrc", frames)
    _write_mdoc(tmp_path / "tomo.mrc.mdoc", _sections())
    monkeypatch.setitem(sys.modules, "mdocfile", None)  # import mdocfile -> ImportError
    with pytest.raises(FileFormatError, match=r"mdocfile package .*tiltstream\[formats\]"):
        read_series(tmp_path / "tomo.mrc")


def test_fei_extended_header_pixel_size_and_angles(tmp_path, frames):
    """FEI1 (mrcfile's layout) and the older headerless FEI one (etspy's needle series: 3.36 nm)."""
    ext = np.zeros(N, dtype=mrcfile.dtypes.get_ext_header_dtype(b"FEI1"))
    ext["Metadata size"] = ext.dtype.itemsize
    ext["Alpha tilt"] = ANGLES
    ext["Pixel size X"] = ext["Pixel size Y"] = 3.36e-9
    with mrcfile.new(tmp_path / "fei1.mrc") as m:
        m.set_data(frames)
        m.set_image_stack()
        m.set_extended_header(ext)
        m.header.exttyp = b"FEI1"
    r = read_series(tmp_path / "fei1.mrc")  # no .rawtlt: the angles are the header's
    np.testing.assert_allclose(r.angles_deg, ANGLES)
    assert r.pixel_nm == pytest.approx(3.36)

    old = np.zeros((1024, 32), dtype="<f4")
    old[:N, 0] = ANGLES
    old[:, 11] = 3.36e-9
    with mrcfile.new(tmp_path / "old.mrc") as m:
        m.set_data(frames)
        m.set_image_stack()
        m.set_extended_header(old.view(np.uint8).reshape(-1))
    r = read_series(tmp_path / "old.mrc")
    np.testing.assert_allclose(r.angles_deg, ANGLES.astype(np.float32))
    assert r.pixel_nm == pytest.approx(3.36)
