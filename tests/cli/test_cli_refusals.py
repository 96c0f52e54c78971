"""Inputs and options the CLI must refuse with a one-line error (exit 2) instead of writing nonsense,
destroying a file or ending in a traceback."""

import shutil

import h5py
import numpy as np
import pytest

from tiltstream.cli import main

DATA = "entry/instrument/detector/data"


@pytest.fixture(scope="module")
def recording(simulated_recording):
    return simulated_recording(size=16, frames=20, seed=5)


@pytest.fixture
def copy(recording, tmp_path):
    """A writable copy of the recording."""
    path = tmp_path / "copy.h5"
    shutil.copy(recording, path)
    return path


def _fails(argv, capsys, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("method", ["sirt", "fbp"])
def test_reconstruct_refuses_frames_with_nan(copy, tmp_path, capsys, method):
    with h5py.File(copy, "r+") as f:
        f[DATA][4, 3, 2] = np.nan
    out = tmp_path / "out.h5"
    _fails(["reconstruct", str(copy), "--method", method, "--iterations", "2", "--device", "cpu", "--out", str(out)],
           capsys, "frames: expected finite pixel values, got NaN/Inf in frame(s) [4]", str(copy))
    assert not out.exists()


@pytest.mark.parametrize("command", [["reconstruct", "--method", "fbp", "--device", "cpu"], ["align"]])
def test_reconstruct_and_align_refuse_to_write_over_their_input(copy, capsys, command):
    before = copy.read_bytes()
    for out in (copy, copy.parent / "." / copy.name):
        _fails([command[0], str(copy), *command[1:], "--out", str(out)], capsys, "--out", "other than the input")
    assert copy.read_bytes() == before


def test_reconstruct_refuses_times_outside_the_series(recording, tmp_path, capsys):
    from tiltstream.stream import read_series

    t = read_series(recording).times_s
    out = tmp_path / "out.h5"
    _fails(["reconstruct", str(recording), "--method", "fbp", "--device", "cpu", "--times=-100,1e9", "--out", str(out)],
           capsys, f"--times: expected times within the series' span [{t.min():g}, {t.max():g}] s", "got -100, 1e+09 s")
    assert not out.exists()
    assert main(["reconstruct", str(recording), "--method", "fbp", "--device", "cpu",  # the span itself is allowed
                 f"--times={float(t.min())!r},{float(t.max())!r}", "--out", str(out)]) == 0


def test_reconstruct_refuses_an_axis_offset_off_the_detector(recording, tmp_path, capsys):
    out = tmp_path / "out.h5"
    _fails(["reconstruct", str(recording), "--method", "fbp", "--device", "cpu", "--axis-offset", "8",
            "--out", str(out)], capsys, "--axis-offset", "frames 16 px wide", "got 8")
    assert main(["reconstruct", str(recording), "--method", "fbp", "--device", "cpu", "--axis-offset", "-7.5",
                 "--out", str(out)]) == 0


def test_absurd_sizes_are_one_line_errors(recording, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.h5"
    _fails(["reconstruct", str(recording), "--method", "fbp", "--device", "cpu", "--height", "10000000000",
            "--out", str(out)], capsys, "--height: expected volumes that fit in memory")
    huge = tmp_path / "huge.h5"  # a small file announcing ~4 TB of frames
    with h5py.File(huge, "w") as f:
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", definition="NXtomo")
        f.create_dataset(DATA, shape=(1_000_000, 1024, 1024), dtype="f4", chunks=(1, 1024, 1024))
        f["entry/sample/rotation_angle"] = np.linspace(-60, 60, 1_000_000)
    _fails(["reconstruct", str(huge), "--method", "fbp", "--device", "cpu", "--out", str(out)], capsys,
           str(huge), "frames: expected frames that fit in memory")

    from tiltstream import simulate

    def no_memory(args):
        raise MemoryError("Unable to allocate 1.46 TiB for an array with shape (10, 200000, 200000)")

    monkeypatch.setattr(simulate, "run", no_memory)
    _fails(["simulate", "--size", "16", "--frames", "4", "--out", str(out)], capsys,
           "simulate: error: out of memory: Unable to allocate 1.46 TiB")


def test_score_finds_and_checks_the_input_or_says_why_not(recording, tmp_path, capsys, monkeypatch):
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f["volumes"] = np.zeros((2, 4, 4, 4), np.float32)
        f["times_s"] = [0.0, 1.0]
    _fails(["score", str(bare)], capsys, str(bare), "input_path: expected the recording", "--truth-from")

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(recording, run / "sim.h5")
    monkeypatch.chdir(run)
    assert main(["reconstruct", "sim.h5", "--method", "fbp", "--device", "cpu", "--out", "res.h5"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # input_path "sim.h5" is found beside the result
    capsys.readouterr()
    assert main(["score", str(run / "res.h5")]) == 0
    assert "mean" in capsys.readouterr().out

    with h5py.File(run / "sim.h5", "r+") as f:  # same name, other contents
        f[DATA][0] = f[DATA][0] + 1
    _fails(["score", str(run / "res.h5")], capsys, "input_sha256: expected sim.h5 with SHA-256", "--truth-from")


def test_a_non_finite_tilt_axis_in_the_file_names_the_file_and_field(copy, tmp_path, capsys):
    with h5py.File(copy, "r+") as f:
        f["entry/tiltstream"].attrs["tilt_axis_angle_deg"] = np.nan
    for argv in (["info", str(copy)],
                 ["reconstruct", str(copy), "--method", "fbp", "--device", "cpu", "--out", str(tmp_path / "o.h5")]):
        _fails(argv, capsys, str(copy), "tilt_axis_angle_deg: expected a finite tilt-axis angle", "got nan")
    assert main(["info", str(copy), "--tilt-axis-angle", "0"]) == 0  # the argument overrides the file


def test_replay_refuses_a_speed_that_overflows_the_schedule(recording, capsys):
    _fails(["replay", str(recording), "--speed", "1e-10", "--pub", "tcp://127.0.0.1:0"], capsys,
           "--speed: expected a factor of real time", "got 1e-10")


@pytest.mark.parametrize("to, name", [("mrc", "a.tif"), ("tiff", "b.mrc"), ("zarr", "d.h5"), ("gif", "e.mp4")])
def test_export_refuses_an_out_suffix_of_another_format(recording, tmp_path, capsys, to, name):
    result = tmp_path / "res.h5"
    assert main(["reconstruct", str(recording), "--method", "fbp", "--device", "cpu", "--out", str(result)]) == 0
    capsys.readouterr()
    _fails(["export", str(result), "--to", to, "--out", str(tmp_path / name)], capsys, f"--to {to}", name)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--jitter", "inf", "expected a finite number >= 0, got inf"),
    ("--drift", "inf", "expected a finite number >= 0, got inf"),
    ("--axis-offset", "nan", "expected a finite number, got nan"),
    ("--dose", "nan", "expected a finite number > 0, got nan"),
    ("--tilt-range", "-inf,10", "expected finite LO,HI in degrees"),
])
def test_simulate_refuses_non_finite_options_naming_them(tmp_path, capsys, option, value, expected):
    """They wrote all-zero frames (jitter, drift, axis offset) or misleading errors (dose, range)."""
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--size", "8", "--frames", "4", f"{option}={value}", "--out", str(tmp_path / "s.h5")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert option in err and expected in err, err
    assert not (tmp_path / "s.h5").exists()


def test_a_window_in_seconds_is_refused_for_frame_index_times(tmp_path, capsys):
    """An MRC with only a .tlt has no acquisition times (its times are frame indices): a window in
    seconds would count frames as seconds; a window in frames is the way."""
    import mrcfile

    frames = np.random.default_rng(0).random((12, 8, 8)).astype(np.float32)
    with mrcfile.new(tmp_path / "tomo.st") as m:
        m.set_data(frames)
        m.set_image_stack()
    (tmp_path / "tomo.tlt").write_text("\n".join(f"{a:.1f}" for a in np.linspace(-60, 60, 12)) + "\n")
    common = ["reconstruct", str(tmp_path / "tomo.st"), "--method", "fbp", "--device", "cpu"]
    _fails([*common, "--window", "5s", "--out", str(tmp_path / "s.h5")], capsys,
           "--window: expected frames", "frame indices", "'5s'")
    assert main([*common, "--window", "5", "--out", str(tmp_path / "f.h5")]) == 0
