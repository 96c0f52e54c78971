"""``tiltstream align`` and ``tiltstream reconstruct --align`` end to end on a small drifting simulation."""

import json

import h5py
import numpy as np
import pytest

from tiltstream.cli import main
from tiltstream.recon.align import Alignment, split_gauge
from tiltstream.simulate import truth_from_recording
from tiltstream.stream.readers import read_series


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def drifting(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("align") / "drift.h5"
    assert main(["simulate", "--phantom", "nanorod", "--size", "40", "--frames", "60", "--static", "--drift", "0.04",
                 "--jitter", "1.0", "--axis-offset", "2.5", "--dose", "5000", "--seed", "4", "--out", str(out)]) == 0
    return out


def test_align_writes_an_aligned_recording_with_its_alignment(drifting, tmp_path, capsys):
    out = tmp_path / "aligned.h5"
    assert main(["align", str(drifting), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 60 and abs(summary["axis_offset_px"] - 2.5) < 0.5
    aligned, original = read_series(out), read_series(drifting)
    assert aligned.frames.shape == original.frames.shape
    np.testing.assert_allclose(aligned.angles_deg, original.angles_deg)
    np.testing.assert_allclose(aligned.times_s, original.times_s)
    meta = aligned.metadata["alignment"]
    assert meta["axis_offset_applied_to_frames"] is True
    alignment = Alignment.from_metadata(meta)
    assert abs(alignment.tilt_axis_angle_deg) < 0.3
    # the recorded per-frame shifts are the simulated drift (without its unmeasurable part)
    shifts = aligned.extra["align_shift_px"]
    np.testing.assert_allclose(shifts, alignment.shifts_px, atol=1e-3)
    true = original.extra["true_shift_px"]
    est_g, true_g = split_gauge(shifts, original.angles_deg)[0], split_gauge(true, original.angles_deg)[0]
    assert np.sqrt(np.mean((est_g - true_g) ** 2)) < 0.5
    assert np.sqrt(np.mean(true_g**2)) > 1.0
    with h5py.File(out, "r") as f:  # plain NXtomo fields for other tools
        assert f["entry/instrument/detector/data"].shape == (60, 40, 40)
        assert f["entry/frame_info/align_shift_px"].shape == (60, 2)


def test_reconstruct_with_align_beats_reconstruct_without(drifting, tmp_path):
    truth = truth_from_recording(drifting)(0.0)
    errs = {}
    for flag in ([], ["--align"]):
        out = tmp_path / f"r{len(flag)}.h5"
        cmd = ["reconstruct", str(drifting), "--iterations", "40", "--device", "cpu", "--out", str(out)]
        assert main(cmd + flag) == 0
        with h5py.File(out, "r") as f:
            vol = f["volumes"][0]
            if flag:
                alignment = json.loads(f.attrs["alignment_json"])
                assert abs(alignment["axis_offset_px"] - 2.5) < 0.5
        errs[bool(flag)] = np.linalg.norm(vol - truth) / np.linalg.norm(truth)
    assert errs[True] < 0.6 * errs[False]


def test_align_reports_bad_input(tmp_path, capsys):
    assert main(["align", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x.h5")]) == 2
    assert "missing.h5" in capsys.readouterr().err
