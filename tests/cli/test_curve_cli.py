"""CURVE from the command line: `tiltstream keys`, the shared --curve* options, encrypted sim -> record,
# Runs after tests/stream: running it earlier left the stream gap-log tests without their log records (cause not found yet, see the issue 12 note).
sim -> recon -> viewer, a key that is not allowed, the missing-option errors, `demo --curve`.

The commands run in-process (``tiltstream.cli.main`` in threads) on tcp://127.0.0.1 port 0; the bound
endpoints are read from the lines the commands print."""

from __future__ import annotations

import argparse
import json
import re
import stat
import threading
import time
from pathlib import Path

import h5py
import pytest
import zmq.auth

from tiltstream._curve_args import curve_from_args
from tiltstream.cli import build_parser, main
from tiltstream.stream.sockets import CurveClientConfig, CurveConfig

#: sub-commands that open no socket; every other one must take the shared --curve* options
NO_SOCKETS = {"info", "simulate", "reconstruct", "score", "align", "keys", "export"}
#: sub-commands that make their own keys instead (a flag that turns CURVE on)
OWN_KEYS = {"demo": "--curve"}
CURVE_FLAGS = ("--curve-key", "--curve-server-key", "--curve-allowed")
#: the least each socket command needs to parse
REQUIRED = {
    "sim": [], "replay": ["run.h5"], "watch": ["folder"], "view": [],
    "record": ["--connect", "tcp://127.0.0.1:9", "--out", "x.h5"], "recon": ["--connect", "tcp://127.0.0.1:9"],
}
TINY_SIM = ["sim", "--size", "16", "--frames", "30", "--speed", "max", "--static"]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SOCKET_COMMANDS = sorted(set(subcommands()) - NO_SOCKETS - set(OWN_KEYS))


class Cli(threading.Thread):
    """``main(argv)`` in a thread; ``result()`` gives its exit code or re-raises what it raised."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(daemon=True, name=argv[0])
        self.argv, self.rc, self.error = [str(a) for a in argv], None, None
        self.start()

    def run(self) -> None:
        try:
            self.rc = main(self.argv)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc

    def result(self, timeout: float = 30.0) -> int:
        self.join(timeout)
        assert not self.is_alive(), f"{self.argv[0]} still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.rc


class Output:
    """Everything the in-process commands printed so far (capsys is read and cleared as it goes)."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self.capsys, self.text = capsys, ""

    def read(self) -> str:
        self.text += self.capsys.readouterr().out
        return self.text

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.read())
            if match:
                return match
            time.sleep(0.02)
        raise AssertionError(f"expected output matching {pattern!r} within {timeout} s, got {self.text!r}")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """One key pair per machine, made with `tiltstream keys`, and each server's allowed folder."""
    folder = tmp_path / "keys"
    for name in ("sim", "rec", "recon", "viewer", "intruder"):
        assert main(["keys", str(folder / name), "--name", name]) == 0
    out = {name: folder / name / f"{name}.key" for name in ("sim", "rec", "recon", "viewer", "intruder")}
    out.update({f"{name}_secret": folder / name / f"{name}.key_secret" for name in list(out)})
    for server, clients in (("sim", ("rec", "recon")), ("recon", ("viewer",))):
        allowed = tmp_path / f"allowed_{server}"
        allowed.mkdir()
        for client in clients:
            (allowed / out[client].name).write_bytes(out[client].read_bytes())
        out[f"{server}_allowed"] = allowed
    return out


def server_flags(keys: dict[str, Path], name: str) -> list[str]:
    return ["--curve-key", keys[f"{name}_secret"], "--curve-allowed", keys[f"{name}_allowed"]]


def client_flags(keys: dict[str, Path], name: str, server: str) -> list[str]:
    return ["--curve-key", keys[f"{name}_secret"], "--curve-server-key", keys[server]]


# -- keys ----------------------------------------------------------------------------------------
def test_keys_makes_a_usable_pair_with_a_private_secret_and_refuses_to_overwrite(tmp_path, capsys):
    folder = tmp_path / "k"
    assert main(["keys", str(folder), "--name", "gpu-box"]) == 0
    public, secret = folder / "gpu-box.key", folder / "gpu-box.key_secret"
    text = capsys.readouterr().out
    assert str(public) in text and f"--curve-key {secret}" in text and "--curve-allowed" in text
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub, sec = zmq.auth.load_certificate(str(secret))
    assert len(pub) == 40 and sec is not None and len(sec) == 40
    assert zmq.auth.load_certificate(str(public)) == (pub, None)
    before = secret.read_bytes()
    assert main(["keys", str(folder), "--name", "gpu-box"]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and len(err.strip().splitlines()) == 1
    assert secret.read_bytes() == before


# -- the shared options --------------------------------------------------------------------------
def test_every_socket_command_is_known_here():
    assert set(SOCKET_COMMANDS) >= {"sim", "replay", "watch", "record", "recon", "view"}


@pytest.mark.parametrize("command", SOCKET_COMMANDS)
def test_each_socket_command_takes_the_shared_curve_options(command, tmp_path):
    options = {s for a in subcommands()[command]._actions for s in a.option_strings}
    missing = [f for f in CURVE_FLAGS if f not in options]
    assert not missing, f"tiltstream {command}: expected the shared --curve* options, missing {missing}"
    argv = [command, *REQUIRED.get(command, []), "--curve-key", "a.key_secret", "--curve-server-key", "s.key",
            "--curve-allowed", str(tmp_path)]
    args = build_parser().parse_args(argv)
    assert (args.curve_key, args.curve_server_key, args.curve_allowed) == (Path("a.key_secret"), Path("s.key"),
                                                                           tmp_path)


@pytest.mark.parametrize("command, flag", sorted(OWN_KEYS.items()))
def test_self_keyed_commands_take_their_curve_flag(command, flag):
    options = {s for a in subcommands()[command]._actions for s in a.option_strings}
    assert flag in options


def test_curve_from_args_gives_the_role_of_each_socket(keys):
    args = argparse.Namespace(curve_key=keys["recon_secret"], curve_server_key=keys["sim"],
                              curve_allowed=keys["recon_allowed"])
    assert curve_from_args(args, bind=True) == CurveConfig(keys["recon_secret"], keys["recon_allowed"])
    assert curve_from_args(args, bind=False) == CurveClientConfig(keys["recon_secret"], keys["sim"])
    assert curve_from_args(argparse.Namespace(curve_key=None, curve_server_key=None, curve_allowed=None),
                           bind=True) is None


@pytest.mark.parametrize("argv, expected", [
    (["record", "--connect", "tcp://127.0.0.1:9", "--out", "{tmp}/r.h5", "--curve-key", "{secret}"],
     "--curve-key with --connect: expected --curve-server-key FILE too"),
    (["record", "--bind", "tcp://127.0.0.1:0", "--out", "{tmp}/r.h5", "--curve-key", "{secret}"],
     "expected --curve-allowed DIR too"),
    (["sim", "--push", "tcp://127.0.0.1:0", "--curve-key", "{secret}"], "expected --curve-allowed DIR too"),
    (["sim", "--connect", "--push", "tcp://127.0.0.1:9", "--curve-key", "{secret}", "--curve-allowed", "{tmp}"],
     "expected --curve-server-key FILE too"),
    # recon connects for frames (a client) and binds its PUB (a server): it needs both
    (["recon", "--connect", "tcp://127.0.0.1:9", "--pub", "tcp://127.0.0.1:0", "--curve-key", "{secret}",
      "--curve-server-key", "{public}"], "expected --curve-allowed DIR too"),
    (["recon", "--connect", "tcp://127.0.0.1:9", "--pub", "tcp://127.0.0.1:0", "--curve-key", "{secret}",
      "--curve-allowed", "{tmp}"], "expected --curve-server-key FILE too"),
    (["view", "--connect", "tcp://127.0.0.1:9", "--curve-key", "{secret}"], "expected --curve-server-key FILE too"),
    (["replay", "{tmp}/run.h5", "--push", "tcp://127.0.0.1:0", "--curve-allowed", "{tmp}"],
     "--curve-allowed: expected --curve-key FILE too"),
    (["watch", "{tmp}", "--pub", "tcp://127.0.0.1:0", "--curve-key", "{tmp}/none.key_secret", "--curve-allowed",
      "{tmp}"], "--curve-key: expected a *.key_secret file, got"),
])
def test_missing_or_wrong_curve_options_are_named(argv, expected, keys, tmp_path, capsys):
    values = {"tmp": tmp_path, "secret": keys["rec_secret"], "public": keys["sim"]}
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert expected in err, err


# -- end to end ----------------------------------------------------------------------------------
def test_sim_to_record_with_curve_delivers_every_frame(keys, tmp_path, capsys):
    out = Output(capsys)
    sim = Cli([*TINY_SIM, "--push", "tcp://127.0.0.1:0", "--send-timeout", "5", *server_flags(keys, "sim")])
    endpoint = out.wait_for(r"sim: publishing .* on (tcp://\S+)").group(1)
    recording = tmp_path / "run.h5"
    record = Cli(["record", "--connect", endpoint, "--out", recording, "--until-end", "--idle-timeout", "5",
                  *client_flags(keys, "rec", "sim")])
    assert record.result() == 0 and sim.result() == 0
    assert "recorded 30 frames" in out.read() and "0 missing" in out.text
    with h5py.File(recording, "r") as f:
        assert f["entry/instrument/detector/data"].shape == (30, 16, 16)


def test_a_client_whose_key_is_not_allowed_gets_nothing_recorded(keys, tmp_path, capsys):
    out = Output(capsys)
    sim = Cli([*TINY_SIM, "--push", "tcp://127.0.0.1:0", "--send-timeout", "2", *server_flags(keys, "sim")])
    endpoint = out.wait_for(r"sim: publishing .* on (tcp://\S+)").group(1)
    record = Cli(["record", "--connect", endpoint, "--out", tmp_path / "run.h5", "--idle-timeout", "2.5",
                  *client_flags(keys, "intruder", "sim")])
    assert record.result() == 0
    assert "recorded 0 frames" in out.read()
    assert sim.result() == 2  # no consumer it trusts took the first message within --send-timeout


def test_recon_with_curve_reads_a_curve_sim_and_publishes_to_a_curve_viewer(keys, capsys):
    from tiltstream.stream.transport import Subscriber

    out = Output(capsys)
    sim = Cli([*TINY_SIM, "--push", "tcp://127.0.0.1:0", "--send-timeout", "5", *server_flags(keys, "sim")])
    frames = out.wait_for(r"sim: publishing .* on (tcp://\S+)").group(1)
    # recon: a client of the sim (its --curve-server-key) and a server to viewers (its --curve-allowed)
    recon = Cli(["recon", "--connect", frames, "--pub", "tcp://127.0.0.1:0", "--window", "16", "--device", "cpu",
                 "--idle-timeout", "3", "--curve-key", keys["recon_secret"], "--curve-server-key", keys["sim"],
                 "--curve-allowed", keys["recon_allowed"]])
    pub = out.wait_for(r"publishing on (tcp://\S+)").group(1)
    viewer = Subscriber(pub, curve=CurveClientConfig(keys["viewer_secret"], keys["recon"]))
    intruder = Subscriber(pub, curve=CurveClientConfig(keys["intruder_secret"], keys["recon"]))
    got, stranger = [], []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(type(m).__name__ == "VolumeMsg" for m in got):
            got += viewer.recv_all(timeout_ms=100)
            stranger += intruder.recv_all(timeout_ms=0)
        stranger += intruder.recv_all(timeout_ms=200)
    finally:
        viewer.close()
        intruder.close()
    assert sim.result() == 0 and recon.result() == 0
    assert any(type(m).__name__ == "VolumeMsg" for m in got), [type(m).__name__ for m in got]
    assert stranger == []
    summary = json.loads(out.read().split("recon: ", )[-1].strip().splitlines()[0])
    assert summary["frames_received"] == 30


def test_demo_with_curve_runs_encrypted_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "16", "--frames", "24", "--speed", "400", "--window", "12", "--device", "cpu",
                 "--no-monitor", "--curve", "--out-dir", str(out)]) == 0
    assert "CURVE on" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["curve"] is True
    assert summary["frames_recorded"] == 24 and summary["frames_reconstructed_live"] == 24


@pytest.fixture(autouse=True)
def _restore_logging():
    """``main`` configures the root logger (basicConfig) as the CLI should; later tests get it back."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    disabled = {name: lg.disabled for name, lg in logging.root.manager.loggerDict.items()
                if isinstance(lg, logging.Logger)}
    yield
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.disabled = disabled.get(name, False)
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
