"""The DIP on 2 gloo processes (DistributedDataParallel) takes the same steps as one process with the
same global batch; rank 0 alone writes checkpoints; the CLI's --nproc."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiltstream.cli import main
from tiltstream.recon.dip import DipParams, DipTrainer, read_checkpoint, reconstruct_dip
from tiltstream.recon.dip.distributed import DistributedDipTrainer, reconstruct_dip_ddp
from tiltstream.stream.results import read_result

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

SMALL = dict(steps=20, eval_every=1, mlp_width=32, mlp_depth=2, decoder_width=16, decoder_min_width=8,
             device="cpu", heldout_fraction=0.15)


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(77)
    n = 15
    return rng.random((n, 13, 16), dtype=np.float32), np.linspace(-60.0, 62.0, n), np.arange(n) * 1.5


@pytest.mark.parametrize("extra", [
    dict(batch_frames=5),  # 3 + 2 frames: unequal shares
    dict(batch_frames=4, batch_rows=6, tv_time_weight=0.02, frame_shifts=True),
], ids=["whole-frames", "rows-temporal-tv-shifts"])
def test_two_gloo_processes_take_the_same_steps_as_one(series, tmp_path, extra):
    params = DipParams(**SMALL, **extra)
    query = [3.0, 15.0]
    one, info1 = reconstruct_dip(*series, query, params)
    ckpt = tmp_path / "ddp.dip.pt"
    two, info2, stopped = reconstruct_dip_ddp(2, *series, query, params, checkpoint=ckpt)
    assert stopped == "steps" and info2["world_size"] == 2 and info2["step"] == 20
    loss1, loss2 = (np.array(i["loss_history"])[:, 1] for i in (info1, info2))
    assert loss1.shape == loss2.shape == (20,)  # eval_every=1: every step's loss
    assert np.abs(loss2 - loss1).max() <= 1e-5 * np.abs(loss1).max()
    held1, held2 = (np.array(i["heldout_history"])[:, 1] for i in (info1, info2))
    assert np.abs(held2 - held1).max() <= 1e-5 * held1.max()  # held-out scoring unchanged
    assert np.abs(two - one).max() <= 1e-4 * np.abs(one).max()
    assert read_checkpoint(ckpt)["step"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.dip.pt"]  # rank 0's, no second writer's leftovers


def test_the_comparison_can_fail(series):
    """A different global batch (seed) gives different losses: the ≤ 1e-5 agreement above means something."""
    a = reconstruct_dip(*series, [3.0], DipParams(**SMALL, batch_frames=5))[1]["loss_history"]
    b = reconstruct_dip(*series, [3.0], DipParams(**SMALL, batch_frames=5, seed=1))[1]["loss_history"]
    assert np.abs(np.array(a)[:, 1] - np.array(b)[:, 1]).max() > 1e-3 * np.abs(np.array(a)[:, 1]).max()


def test_too_small_a_batch_and_no_group_are_refused(series):
    with pytest.raises(RuntimeError, match="batch_frames: expected at least one frame per process"):
        reconstruct_dip_ddp(2, *series, [3.0], DipParams(**SMALL, batch_frames=1))
    with pytest.raises(RuntimeError, match="no torch.distributed process group"):
        DistributedDipTrainer(*series, DipParams(**SMALL))
    assert isinstance(DipTrainer(*series, DipParams(**SMALL)).train_step(), float)


def test_cli_nproc_writes_the_result_and_resumes(tmp_path, capsys, simulated_recording):
    rec = simulated_recording(size=16, frames=30, seed=2)
    out = tmp_path / "dip.h5"
    assert main(["reconstruct", str(rec), "--method", "dip", "--nproc", "2", "--steps", "10", "--device", "cpu",
                 "--times", "20,60", "--out", str(out)]) == 0
    assert "on 2 processes" in capsys.readouterr().out
    vols, times, attrs = read_result(out)
    assert vols.shape == (2, 16, 16, 16) and np.isfinite(vols).all()
    assert attrs["dip_processes"] == 2 and attrs["dip_steps"] == 10
    assert main(["reconstruct", str(rec), "--method", "dip", "--nproc", "2", "--resume", str(out.with_suffix(".dip.pt")),
                 "--steps", "15", "--device", "cpu", "--times", "20", "--out", str(tmp_path / "more.h5")]) == 0
    assert read_result(tmp_path / "more.h5")[2]["dip_steps"] == 15
    assert main(["reconstruct", str(rec), "--method", "sirt", "--nproc", "2", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--nproc" in capsys.readouterr().err
