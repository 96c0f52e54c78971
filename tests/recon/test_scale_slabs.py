"""Y-slabs without dask: the plan covers every row once, a slab of frames reconstructs to the same
rows of the volume as the whole series, results written slab by slab read back equal, and the
cluster's version report is turned into one-line errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tiltstream.recon.batch import BatchParams, reconstruct_4d
from tiltstream.recon.dask_batch import parse_scheduler, version_problems
from tiltstream.recon.slabs import Slab, plan_slabs, slab_frames, slab_rows_for
from tiltstream.stream.results import open_result_writer, read_result

N, NY, NU, NZ = 36, 29, 31, 27  # odd, non-square: a transposed axis cannot pass


@pytest.mark.parametrize("ny, rows", [(29, 4), (29, 29), (29, 40), (1, 1), (30, 7)])
def test_plan_covers_every_row_once_in_order(ny, rows):
    slabs = plan_slabs(ny, rows)
    covered = np.concatenate([np.arange(s.y0, s.y1) for s in slabs])
    np.testing.assert_array_equal(covered, np.arange(ny))
    assert [s.index for s in slabs] == list(range(len(slabs)))
    assert all(s.rows == min(rows, ny) for s in slabs[:-1]) and 1 <= slabs[-1].rows <= rows


def test_plan_and_rows_refuse_nonsense():
    with pytest.raises(ValueError, match="slab rows"):
        plan_slabs(10, 0)
    with pytest.raises(ValueError, match="ny"):
        plan_slabs(0, 3)
    with pytest.raises(ValueError, match="workers"):
        slab_rows_for(10, 0)
    assert slab_rows_for(29, 2) == 4  # ≈ 4 slabs per worker
    assert slab_rows_for(3, 8) == 1
    with pytest.raises(ValueError, match="outside"):
        slab_frames(np.zeros((2, 5, 4)), Slab(0, 3, 6))


def test_parse_scheduler():
    assert parse_scheduler("local:3") == 3
    assert parse_scheduler(" tcp://10.0.0.5:8786 ") == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "local:x", ""):
        with pytest.raises(ValueError, match="--scheduler"):
            parse_scheduler(bad)


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(141)
    frames = rng.random((N, NY, NU), dtype=np.float32)
    return frames, np.linspace(-68.0, 71.0, N), np.arange(N) * 0.5


@pytest.mark.parametrize("params", [
    BatchParams(method="sirt", iterations=15, axis_offset_px=0.6, vol_z=NZ),
    BatchParams(method="sirt", iterations=10, window_frames=12, axis_offset_px=-1.3, vol_z=NZ),
    BatchParams(method="fbp", axis_offset_px=0.6, vol_z=NZ),
], ids=["sirt", "windowed-4d", "fbp"])
def test_a_slab_of_frames_gives_the_same_rows_of_the_volume(series, params):
    frames, angles, times = series
    query = [4.0, 9.0, 13.0]
    full = reconstruct_4d(frames, angles, times, query, params, device="cpu")
    for slab in (Slab(0, 0, 5), Slab(3, 11, 19), Slab(6, 28, 29)):
        part = reconstruct_4d(slab_frames(frames, slab), angles, times, query, params, device="cpu")
        assert part.shape == (3, NZ, slab.rows, NU)
        ref = full[:, :, slab.span]
        assert np.abs(part - ref).max() <= 1e-5 * np.abs(ref).max()
    # the check can fail: the neighbouring rows are a different answer
    part = reconstruct_4d(slab_frames(frames, Slab(0, 11, 19)), angles, times, query, params, device="cpu")
    assert np.abs(part - full[:, :, 12:20]).max() > 1e-2 * np.abs(full).max()


@pytest.mark.parametrize("name", ["r.h5", "r.zarr"])
def test_result_written_slab_by_slab_in_any_order_reads_back_equal(tmp_path, rng, name):
    if name.endswith(".zarr"):
        pytest.importorskip("ome_zarr", reason="OME-Zarr results need the [zarr] extra")
    volumes = rng.random((3, 7, NY, 9), dtype=np.float32)
    times = np.array([1.0, 2.5, 4.0])
    slabs = plan_slabs(NY, 4)
    path = tmp_path / name
    with open_result_writer(path, volumes.shape[1:], times, attrs={"method": "sirt"}, chunk_rows=4) as writer:
        for slab in reversed(slabs):
            assert read_result(path)[0].shape[0] == 0  # no volume is complete before its last row
            writer.write_rows(slab.y0, volumes[:, :, slab.span])
        writer.update_provenance({"wall_time_s": 1.5})
    got, t, attrs = read_result(path)
    np.testing.assert_array_equal(got, volumes)
    np.testing.assert_array_equal(t, times)
    assert attrs["method"] == "sirt" and attrs["wall_time_s"] == 1.5 and attrs["n_planned"] == 3


def test_slab_writer_refuses_wrong_blocks_and_mixing(tmp_path, rng):
    vol = rng.random((2, 3, 8, 5), dtype=np.float32)
    with open_result_writer(tmp_path / "a.h5", (3, 8, 5), [0.0, 1.0], attrs={}, chunk_rows=3) as writer:
        with pytest.raises(ValueError, match="expected a block"):
            writer.write_rows(6, vol[:, :, :3])  # runs past Y
        with pytest.raises(ValueError, match="expected a block"):
            writer.write_rows(0, vol[:1, :, :3])  # one time point of two
        writer.write_rows(0, vol[:, :, :3])
        with pytest.raises(ValueError, match="slab by slab"):
            writer.append(vol[0])
    with open_result_writer(tmp_path / "b.h5", (3, 8, 5), [0.0, 1.0], attrs={}) as writer:
        writer.append(vol[0])
        with pytest.raises(ValueError, match="volume by volume"):
            writer.write_rows(0, vol[:, :, :3])


def _versions(n_workers: int = 2) -> dict:
    """What Client.get_versions(packages=["tiltstream", "torch"]) answers on a healthy cluster."""
    packages = {"python": "3.11.7.final.0", "dask": "2026.8.0", "distributed": "2026.8.0", "msgpack": "1.1.0",
                "cloudpickle": "3.1.3", "tornado": "6.6.1", "toolz": "1.0.0", "numpy": "2.4.6", "pandas": None,
                "lz4": None, "tiltstream": "0.1.0", "torch": "2.13.0"}
    scheduler = {k: v for k, v in packages.items() if k not in ("tiltstream", "torch")}
    return {"client": {"packages": dict(packages)}, "scheduler": {"packages": scheduler},
            "workers": {f"tcp://10.0.0.{i}:4000": {"packages": dict(packages)} for i in range(n_workers)}}


def test_version_problems_name_the_worker_and_the_package():
    assert version_problems(_versions()) == ([], [])
    v = copy.deepcopy(_versions())
    v["workers"]["tcp://10.0.0.1:4000"]["packages"]["torch"] = None
    v["workers"]["tcp://10.0.0.0:4000"]["packages"]["distributed"] = "2026.7.0"
    v["workers"]["tcp://10.0.0.0:4000"]["packages"]["tornado"] = "6.5.0"
    v["workers"]["tcp://10.0.0.0:4000"]["packages"]["python"] = "3.11.9.final.0"  # same minor: fine
    errors, notes = version_problems(v)
    assert errors == ["distributed 2026.7.0 on worker tcp://10.0.0.0:4000, 2026.8.0 here",
                      "worker tcp://10.0.0.1:4000 has no torch (install tiltstream there)"]
    assert notes == ["tornado 6.5.0 on worker tcp://10.0.0.0:4000, 6.6.1 here"]
    v = copy.deepcopy(_versions())
    v["scheduler"]["packages"]["python"] = "3.12.1.final.0"
    assert version_problems(v)[0] == ["python 3.12 on scheduler, 3.11 here"]


def test_a_projector_for_fewer_rows_shares_its_matrix(rng):
    from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
    from tiltstream.recon.projector import operator

    angles = np.linspace(-60.0, 65.0, 9)
    A = operator(VolumeGeometry((NZ, NY, NU)), ProjectionGeometry(angles, (NY, NU), 0.4), device="cpu")
    _ = A.T  # a cached adjoint must not leak into the copy
    B = A.for_rows(7)
    fresh = operator(VolumeGeometry((NZ, 7, NU)), ProjectionGeometry(angles, (7, NU), 0.4), device="cpu")
    assert B.matrix is A.matrix and B.domain_shape == (NZ, 7, NU) and B.range_shape == (9, 7, NU)
    x = rng.random((NZ, 7, NU), dtype=np.float32)
    y = rng.random((9, 7, NU), dtype=np.float32)
    np.testing.assert_allclose(B(x), fresh(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(B.T(y), fresh.T(y), rtol=1e-6, atol=1e-6)
    assert A.domain_shape == (NZ, NY, NU) and A.T(rng.random((9, NY, NU), dtype=np.float32)).shape == (NZ, NY, NU)
