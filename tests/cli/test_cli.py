"""The CLI end to end on a tiny phantom, in-process (fast) and once as a real console script."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tiltstream.cli import main


@pytest.fixture(scope="module")
def recording(simulated_recording):
    return simulated_recording(size=20, frames=48, seed=3)


def test_info_reports_the_series(recording, capsys):
    assert main(["info", str(recording), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_frames"] == 48
    assert tuple(info["frame_shape"]) == (20, 20)
    assert -70.0 <= info["angle_min_deg"] < info["angle_max_deg"] <= 70.0


@pytest.mark.parametrize("method, extra", [("sirt", ["--window", "24", "--iterations", "30"]), ("fbp", [])])
def test_reconstruct_writes_4d_result_with_provenance(recording, tmp_path, method, extra):
    out = tmp_path / f"{method}.h5"
    assert main(["reconstruct", str(recording), "--method", method, "--out", str(out), "--device", "cpu"] + extra) == 0
    with h5py.File(out, "r") as f:
        vols, times = f["volumes"][...], f["times_s"][...]
        assert f.attrs["method"] == method
        assert "parameters_json" in f.attrs or "parameters" in f.attrs
        assert len(f.attrs["input_sha256"]) == 64
    assert vols.ndim == 4 and vols.shape[1:] == (20, 20, 20) and vols.dtype == np.float32
    assert times.shape == (vols.shape[0],)
    assert (vols.shape[0] > 1) == (method == "sirt")  # windowed → several times; static → one
    assert np.isfinite(vols).all() and vols.max() > 0.5


def test_reconstruct_binned_is_the_binned_reconstruction_with_its_voxel_size(recording, tmp_path):
    """--bin 2 on 20-pixel frames: a 10³ volume with twice the voxel size and the values of the full
    reconstruction binned (frames divided by the factor), the height given in pixels of the frames."""
    from tiltstream.recon.binning import block_mean
    from tiltstream.stream.results import read_result, result_voxel_nm

    common = ["--iterations", "60", "--device", "cpu", "--times", "40"]
    full, binned = tmp_path / "full.h5", tmp_path / "bin2.h5"
    assert main(["reconstruct", str(recording), *common, "--out", str(full)]) == 0
    assert main(["reconstruct", str(recording), *common, "--bin", "2", "--out", str(binned)]) == 0
    (a, _, a_attrs), (b, _, b_attrs) = read_result(full), read_result(binned)
    assert b.shape == (1, 10, 10, 10) and result_voxel_nm(b_attrs) == pytest.approx(2 * result_voxel_nm(a_attrs))
    assert b_attrs["bin"] == 2
    ref = block_mean(a[0], 2)
    assert b.sum() / ref.sum() == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(b.ravel(), ref.ravel())[0, 1] > 0.95
    thin = tmp_path / "thin.h5"
    assert main(["reconstruct", str(recording), *common, "--bin", "2", "--height", "12", "--out", str(thin)]) == 0
    assert read_result(thin)[0].shape == (1, 6, 10, 10)


def test_reconstruct_at_requested_times_and_score(recording, tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert main(["reconstruct", str(recording), "--window", "30", "--iterations", "40", "--times", "50,150.5",
                 "--out", str(out)]) == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["times_s"][...], [50.0, 150.5])
    capsys.readouterr()
    assert main(["score", str(out)]) == 0
    text = capsys.readouterr().out
    mean = float(text.strip().splitlines()[-1].split()[-1])
    assert 0 < mean < 0.5


def test_errors_are_clear_and_exit_nonzero(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5" in capsys.readouterr().err
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    assert main(["reconstruct", str(bad), "--out", str(tmp_path / "o.h5")]) == 2
    assert "garbage.h5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconstruct", str(bad), "--times", "1,x", "--out", "o.h5"])


def test_console_script_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "tiltstream", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("info", "simulate", "reconstruct", "score"):
        assert cmd in out.stdout


def test_reconstruct_dip_writes_result_checkpoint_and_resumes(recording, tmp_path, capsys):
    out = tmp_path / "dip.h5"
    assert main(["reconstruct", str(recording), "--method", "dip", "--steps", "20", "--device", "cpu",
                 "--times", "40,120", "--out", str(out)]) == 0
    assert "held-out NRMSE" in capsys.readouterr().out
    ckpt = out.with_suffix(".dip.pt")
    assert ckpt.is_file()
    with h5py.File(out, "r") as f:
        vols = f["volumes"][...]
        np.testing.assert_allclose(f["times_s"][...], [40.0, 120.0])
        assert f.attrs["method"] == "dip" and f.attrs["dip_steps"] == 20
        held = json.loads(f.attrs["dip_heldout_indices_json"])
        assert 3 <= len(held) <= 6  # ≈10 % of 48 frames
    assert vols.shape == (2, 20, 20, 20) and np.isfinite(vols).all() and vols.max() > 0

    # more steps from the checkpoint; then, with no more steps, only query the best model at a new time
    more = tmp_path / "more.h5"
    assert main(["reconstruct", str(recording), "--method", "dip", "--resume", str(ckpt), "--steps", "30",
                 "--checkpoint", str(tmp_path / "more.dip.pt"), "--times", "40,120", "--out", str(more)]) == 0
    with h5py.File(more, "r") as f:
        assert f.attrs["dip_steps"] == 30
    query = tmp_path / "query.h5"
    assert main(["reconstruct", str(recording), "--method", "dip", "--resume", str(tmp_path / "more.dip.pt"),
                 "--times", "77.7", "--out", str(query)]) == 0
    with h5py.File(query, "r") as f, h5py.File(more, "r") as g:
        assert f.attrs["dip_steps"] == 30
        assert f["volumes"].shape == (1, 20, 20, 20)
        assert f.attrs["dip_best_step"] == g.attrs["dip_best_step"]


def test_reconstruct_dip_refuses_a_window_and_a_foreign_checkpoint(recording, tmp_path, capsys):
    assert main(["reconstruct", str(recording), "--method", "dip", "--window", "10", "--out",
                 str(tmp_path / "x.h5")]) == 2
    assert "--window" in capsys.readouterr().err
    bad = tmp_path / "bad.dip.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["reconstruct", str(recording), "--method", "dip", "--resume", str(bad), "--out",
                 str(tmp_path / "y.h5")]) == 2
    assert "bad.dip.pt" in capsys.readouterr().err


def test_recon_command_leaves_the_signal_handlers_as_it_found_them(capsys):
    """`recon` stops on SIGTERM/Ctrl-C while it runs, and hands the process's handlers back when it returns."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert main(["recon", "--bind", "tcp://127.0.0.1:0", "--idle-timeout", "0.3", "--device", "cpu"]) == 0
    assert "recon: " in capsys.readouterr().out
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_simulate_without_a_dose_writes_noise_free_frames_and_negative_tilt_ranges_parse(tmp_path, capsys):
    """The default (no --dose) is a noise-free series: it has no dose per frame, and it is written."""
    from tiltstream.sim.recipe import truth_from_record
    from tiltstream.stream import read_series

    out = tmp_path / "clean.h5"
    assert main(["simulate", "--size", "16", "--frames", "5", "--tilt-range=-60,50", "--out", str(out)]) == 0
    series = read_series(out)
    assert series.n_frames == 5 and "dose_e_per_A2" not in series.extra and "true_shift_px" in series.extra
    assert series.angles_deg.min() >= -60.0 and series.angles_deg.max() <= 50.0
    truth = truth_from_record(series.metadata["simulation"])(float(series.times_s[0]))
    assert truth.shape == (16, 16, 16) and np.isfinite(truth).all()
