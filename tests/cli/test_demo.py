"""`tiltstream demo` end to end on a tiny phantom: nothing lost, a 4-D result, a summary."""

import json

import h5py

from tiltstream.cli import main


def test_demo_runs_headless_and_loses_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "16", "--frames", "40", "--speed", "400", "--window", "20", "--device", "cpu",
                 "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lost 0" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_recorded"] == 40 and summary["frames_reconstructed_live"] == 40
    assert summary["live"]["messages_rejected"] == 0
    assert summary["live_final_nrmse"] < 0.6
    assert 0 < summary["result_4d"]["mean_nrmse"] < 0.5
    with h5py.File(out / "result_4d.h5", "r") as f:
        assert f["volumes"].shape[1:] == (16, 16, 16)
    assert (out / "recording.h5").exists()
