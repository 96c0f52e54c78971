"""Slab-parallel reconstruction on a local dask cluster (2 worker processes, 1 thread each): the
same volumes as one process, written slab by slab, a killed worker survived, clear one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import sys

import numpy as np
import pytest

from tiltstream.cli import main
from tiltstream.recon.batch import BatchParams, reconstruct_4d
from tiltstream.recon.dask_batch import SchedulerError, _check_cluster, dask_client, reconstruct_slabs
from tiltstream.stream.results import read_result

distributed = pytest.importorskip("distributed", reason="slab-parallel reconstruction needs the [distributed] extra")

N, NY, NU, NZ = 40, 30, 29, 25
QUERY = [5.0, 10.0, 14.0]


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(2026)
    return rng.random((N, NY, NU), dtype=np.float32), np.linspace(-70.0, 69.0, N), np.arange(N) * 0.5


def _assemble(client, series, params, **kw):
    """The slabs into one array (the test's own sink) and the slabs in arrival order."""
    frames, angles, times = series
    out = np.full((len(QUERY), params.vol_z or NU, NY, NU), np.nan, dtype=np.float32)
    order = []

    def write(slab, block):
        out[:, :, slab.span] = block
        order.append(slab)

    slabs = reconstruct_slabs(client, frames, angles, times, QUERY, params, write=write, device="cpu", **kw)
    assert sorted(s.index for s in order) == sorted(s.index for s in slabs) == list(range(len(slabs)))
    return out, slabs


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("params", [
    BatchParams(method="sirt", iterations=20, axis_offset_px=0.7, vol_z=NZ),
    BatchParams(method="sirt", iterations=15, window_frames=14, axis_offset_px=-0.4, vol_z=NZ),
    BatchParams(method="fbp", axis_offset_px=0.7, vol_z=NZ),
], ids=["sirt", "windowed-4d", "fbp"])
def test_two_workers_equal_one_process(client, series, params):
    ref = reconstruct_4d(*series, QUERY, params, device="cpu")
    got, slabs = _assemble(client, series, params)
    assert len(slabs) == 8  # ≈ 4 slabs per worker thread
    assert not np.isnan(got).any()
    assert _rel(got, ref) <= 1e-5
    # each worker built each projector once for all its slabs (one per window)
    kept = client.run(lambda: len(__import__("tiltstream.recon.dask_batch", fromlist=["_"])._OPERATORS.kept))
    assert max(kept.values()) == (1 if params.window is None else len(QUERY))


def test_progress_counts_rows_and_task_errors_come_back(client, series):
    rows = []
    frames, angles, times = series
    reconstruct_slabs(client, frames, angles, times, QUERY, BatchParams(method="fbp"), write=lambda s, b: None,
                      device="cpu", slab_rows=7, progress=rows.append)
    assert sorted(rows) == [2, 7, 7, 7, 7]
    with pytest.raises(ValueError, match="one angle and one time per frame"):
        reconstruct_slabs(client, frames, angles[:-3], times, QUERY, BatchParams(method="fbp"),
                          write=lambda s, b: None, device="cpu")
    with pytest.raises(RuntimeError, match="nonsense"):  # raised on a worker, re-raised here
        reconstruct_slabs(client, frames, angles, times, QUERY, BatchParams(method="fbp"),
                          write=lambda s, b: None, device="nonsense")


def test_cluster_check_surfaces_version_problems_in_one_line(client, monkeypatch):
    _check_cluster(client, "local", timeout_s=5)  # the real cluster is fine
    real = client.get_versions(packages=["tiltstream", "torch"])
    assert all(w["packages"]["torch"] for w in real["workers"].values())
    broken = {**real, "workers": {addr: {**info, "packages": {**info["packages"], "torch": None}}
                                  for addr, info in real["workers"].items()}}
    monkeypatch.setattr(client, "get_versions", lambda **kw: broken)
    with pytest.raises(SchedulerError, match="has no torch") as err:
        _check_cluster(client, "local", timeout_s=5)
    assert "\n" not in str(err.value)


def test_unreachable_scheduler_is_one_clear_line(capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SchedulerError, match=f"tcp://127.0.0.1:{port} unreachable within 1 s") as err:
        with dask_client(f"tcp://127.0.0.1:{port}", timeout_s=1):
            pass
    assert "\n" not in str(err.value) and "dask scheduler" in str(err.value)


def test_a_scheduler_without_workers_is_one_clear_line():
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        with pytest.raises(SchedulerError, match="no workers connected within 1 s") as err:
            with dask_client(empty.scheduler_address, timeout_s=1):
                pass
    assert "\n" not in str(err.value) and "dask worker" in str(err.value)


def test_without_the_extra_scheduler_names_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed → ImportError
    assert main(["reconstruct", str(tmp_path / "missing.h5"), "--scheduler", "local:2",
                 "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'tiltstream[distributed]'" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def recording(simulated_recording):
    return simulated_recording(size=24, frames=40, seed=5)


@pytest.mark.parametrize("name", ["slabs.h5", "slabs.zarr"])
def test_cli_scheduler_local_end_to_end(recording, tmp_path, capsys, name):
    if name.endswith(".zarr"):
        pytest.importorskip("ome_zarr", reason="OME-Zarr results need the [zarr] extra")
    common = [str(recording), "--window", "20", "--iterations", "20", "--device", "cpu", "--times", "40,90"]
    assert main(["reconstruct", *common, "--out", str(tmp_path / "one.h5")]) == 0
    assert main(["reconstruct", *common, "--scheduler", "local:2", "--slab-rows", "5",
                 "--out", str(tmp_path / name)]) == 0
    assert "in 5 slab(s) on local:2" in capsys.readouterr().out
    one, t1, _ = read_result(tmp_path / "one.h5")
    got, t2, attrs = read_result(tmp_path / name)
    np.testing.assert_array_equal(t1, t2)
    assert got.shape == one.shape == (2, 24, 24, 24)
    assert _rel(got, one) <= 1e-5
    assert attrs["scheduler"] == "local:2" and attrs["slab_rows"] == 5 and attrs["wall_time_s"] > 0
    assert main(["score", str(tmp_path / name)]) == 0
    assert "mean" in capsys.readouterr().out


def test_a_killed_worker_is_survived(client, series):
    """Kill one worker process while it runs a slab: dask reruns that slab elsewhere (the nanny
    restarts the worker), and the result is still the one-process result."""
    params = BatchParams(method="sirt", iterations=60, window_frames=14, vol_z=NZ)
    ref = reconstruct_4d(*series, QUERY, params, device="cpu")
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker(rows):
        if killed:
            return
        busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
        assert busy, "every slab finished before a worker could be killed: make the slabs slower"
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.append(pids[busy[0]])

    frames, angles, times = series
    out = np.full((len(QUERY), NZ, NY, NU), np.nan, dtype=np.float32)

    def write(slab, block):
        out[:, :, slab.span] = block

    reconstruct_slabs(client, frames, angles, times, QUERY, params, write=write, device="cpu", slab_rows=3,
                      progress=kill_a_busy_worker)
    assert killed and killed[0] not in client.run(os.getpid).values()
    assert _rel(out, ref) <= 1e-5
    client.wait_for_workers(2, timeout=60)  # the nanny brought it back
