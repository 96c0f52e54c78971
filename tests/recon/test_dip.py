"""DIP space-time model: projection layer and gradients, split, seeding, checkpoints, and quality on a
small simulated dynamic phantom against static SIRT."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tiltstream.recon import operator, projection_geometry, volume_geometry
from tiltstream.recon.batch import BatchParams, reconstruct_4d
from tiltstream.recon.dip import (
    DipGeometry,
    DipParams,
    DipTrainer,
    build_generator,
    frame_matrices,
    heldout_split,
    load_generator,
    project_frames,
    reconstruct_dip,
)
from tiltstream.recon.dip.projection import shift_rows
from tiltstream.sim import make_phantom, simulate_series

# tiny, fast settings; Z, Y, X all different so transposed axes fail
TINY = DipParams(steps=20, batch_frames=4, eval_every=5, mlp_width=32, mlp_depth=2, decoder_width=16,
                 decoder_min_width=8, t_frequencies=2, y_frequencies=3, device="cpu", seed=3)


def nrmse(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def tiny_series():
    rng = np.random.default_rng(7)
    n, ny, nu = 30, 7, 11
    frames = rng.random((n, ny, nu), dtype=np.float32)
    angles = rng.uniform(-70, 70, n)
    times = np.sort(rng.uniform(0, 30, n))
    return frames, angles, times


# -- projection layer ---------------------------------------------------------------------------
def _frame_projectors(angles, nz, r, nx, nu, offset=0.0):
    """The volume projector of the same frames: (Z, R, X) volumes with R rows, one frame each."""
    geom = projection_geometry(angles, det_shape=(r, nu), axis_offset_px=offset)
    return operator(volume_geometry((nz, r, nx)), geom, device="cpu", dtype=torch.float64)


def test_frame_projection_equals_the_projector_on_each_frame(rng):
    f, r, nz, nx, nu = 3, 5, 9, 11, 13
    slices = torch.as_tensor(rng.random((f, r, nz, nx)), dtype=torch.float64)
    angles = rng.uniform(-70, 70, f)
    mats = frame_matrices(angles, (nz, nx), nu, axis_offset_px=0.7, dtype=torch.float64)
    ours = project_frames(slices, mats)
    A = _frame_projectors(angles, nz, r, nx, nu, 0.7)
    for k in range(f):  # frame k's rows are A[k] applied to its own (Z, R, X) volume
        ref = A[k](slices[k].permute(1, 0, 2).contiguous())[0]
        torch.testing.assert_close(ours[k], ref, rtol=1e-12, atol=1e-12)
    # and it is not trivially equal: another angle gives other rows
    other = project_frames(slices, frame_matrices(angles + 5, (nz, nx), nu, axis_offset_px=0.7, dtype=torch.float64))
    assert not torch.allclose(other, ours, atol=1e-3)


def test_loss_gradient_wrt_slices_is_backprojected_residual(rng):
    f, r, nz, nx, nu = 2, 4, 8, 10, 12
    angles = rng.uniform(-70, 70, f)
    slices = torch.as_tensor(rng.random((f, r, nz, nx)), dtype=torch.float64).requires_grad_(True)
    meas = torch.as_tensor(rng.random((f, r, nu)), dtype=torch.float64)
    pred = project_frames(slices, frame_matrices(angles, (nz, nx), nu, dtype=torch.float64))
    loss = 0.5 * (pred - meas).square().sum()
    (grad,) = torch.autograd.grad(loss, slices)
    resid = (pred - meas).detach()
    A = _frame_projectors(angles, nz, r, nx, nu)
    for k in range(f):
        expect = A[k].T(resid[k][None]).permute(1, 0, 2)  # (Z, R, X) → (R, Z, X)
        torch.testing.assert_close(grad[k], expect, rtol=1e-10, atol=1e-10)


def _tiny_generator(shape=(6, 3, 5)):
    geom = DipGeometry(shape, (0.0, 10.0), 1.0)
    params = replace(TINY, mlp_width=8, mlp_depth=1, decoder_width=4, decoder_min_width=2, decoder_base=3)
    return build_generator(geom, params, generator=torch.Generator().manual_seed(0), start_value=0.5).double()


def test_gradcheck_projection_through_generator():
    model = _tiny_generator()
    nz, ny, nx = model.geom.shape
    nu = 7
    angles = np.array([-40.0, 25.0])
    mats = frame_matrices(angles, (nz, nx), nu, axis_offset_px=0.3, dtype=torch.float64)
    t = torch.tensor([1.0, 1.0, 1.0, 7.0, 7.0, 7.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    names = ["mapping.0.weight", "head.0.weight"]
    base = dict(model.named_parameters())

    def frames_of(*weights):
        p = {**base, **dict(zip(names, weights))}
        slices = torch.func.functional_call(model, p, (t, y))
        return project_frames(slices.reshape(2, ny, nz, nx), mats)

    inputs = tuple(base[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(frames_of, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_frame_shift():
    rows = torch.rand(2, 3, 9, dtype=torch.float64, requires_grad=True)
    du = torch.tensor([0.3, -1.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(shift_rows, (rows, du))
    whole = shift_rows(rows.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(whole[0, :, 1:], rows.detach()[0, :, :-1])
    torch.testing.assert_close(whole[1, :, :-2], rows.detach()[1, :, 2:])


# -- held-out split -----------------------------------------------------------------------------
def _spread_over_time(times, held):
    """Held-out frames are in every 1/n_held-long stretch of acquisition order (no big gaps)."""
    order = np.argsort(times, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    bins = np.floor(rank[held] * held.size / times.size).astype(int)
    return np.array_equal(np.sort(bins), np.arange(held.size))


def test_heldout_split_is_spread_over_time_and_disjoint(rng):
    times = np.cumsum(rng.uniform(0.05, 0.5, 97))
    train, held = heldout_split(times, 0.1)
    assert held.size == 10 and train.size == 87
    assert np.intersect1d(train, held).size == 0
    assert np.array_equal(np.union1d(train, held), np.arange(97))
    assert _spread_over_time(times, held)
    assert not _spread_over_time(times, np.arange(10))  # the check can fail: the first 10 frames are not spread
    assert heldout_split(times, 0.0)[1].size == 0


def test_heldout_frames_are_never_fitted(tiny_series):
    frames, angles, times = tiny_series
    tr = DipTrainer(frames, angles, times, TINY)
    seen = set()
    for _ in range(40):
        idx, rows = tr.sampler.next()
        seen.update(idx.tolist())
        assert rows.shape == (idx.numel(), frames.shape[1])
    assert seen == set(tr.data.train_idx.tolist())
    assert not seen & set(tr.data.heldout_idx.tolist())


# -- determinism, checkpoints -------------------------------------------------------------------
def _state(tr):
    return {k: v.clone() for k, v in tr.model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_results(tiny_series):
    frames, angles, times = tiny_series
    va, ia = reconstruct_dip(frames, angles, times, [3.0, 17.5], TINY)
    vb, ib = reconstruct_dip(frames, angles, times, [3.0, 17.5], TINY)
    assert np.array_equal(va, vb)
    assert ia["heldout_history"] == ib["heldout_history"]
    vc, _ = reconstruct_dip(frames, angles, times, [3.0, 17.5], replace(TINY, seed=4))
    assert not np.array_equal(va, vc)


def test_resume_is_exact(tiny_series, tmp_path):
    frames, angles, times = tiny_series
    params = replace(TINY, frame_shifts=True, batch_rows=4)
    full = DipTrainer(frames, angles, times, params)
    full.fit()
    ckpt = tmp_path / "half.pt"
    half = DipTrainer(frames, angles, times, replace(params, steps=10))
    half.fit(checkpoint=ckpt)
    resumed = DipTrainer.from_checkpoint(ckpt, frames, angles, times, params)
    assert resumed.step == 10
    resumed.fit()
    assert _same(_state(full), _state(resumed))
    assert _same(full.best_state, resumed.best_state)
    assert torch.equal(full.shifts, resumed.shifts)
    assert full.heldout_history == resumed.heldout_history and full.best_step == resumed.best_step
    # a resume that went wrong would show: one step more is a different model
    more = DipTrainer.from_checkpoint(ckpt, frames, angles, times, replace(params, steps=11))
    more.fit()
    assert not _same(_state(more), _state(full))


def test_checkpoint_holds_the_best_model_and_refuses_other_data(tiny_series, tmp_path):
    frames, angles, times = tiny_series
    ckpt = tmp_path / "run.pt"
    calls = []
    vols, info = reconstruct_dip(frames, angles, times, [5.0, 20.0], TINY, checkpoint=ckpt,
                                 progress=lambda n, **kw: calls.append((n, kw)))
    assert sum(n for n, _ in calls) == TINY.steps
    assert all(set(kw) == {"loss", "heldout"} for _, kw in calls)
    assert info["heldout_nrmse"] == min(s for _, s in info["heldout_history"])
    model = load_generator(ckpt)
    np.testing.assert_array_equal(model.volumes([5.0, 20.0]), vols)
    with pytest.raises(ValueError, match="other data"):
        DipTrainer.from_checkpoint(ckpt, frames * 2, angles, times)
    with pytest.raises(ValueError, match="changed parameter"):
        DipTrainer.from_checkpoint(ckpt, frames, angles, times, replace(TINY, lr=1.0))
    # resuming with more steps, from the CLI's point of view
    calls.clear()
    _, info2 = reconstruct_dip(frames, angles, times, [5.0], replace(TINY, steps=25), resume=ckpt,
                               progress=lambda n, **kw: calls.append((n, kw)))
    assert info2["start_step"] == 20 and info2["step"] == 25
    assert sum(n for n, _ in calls) == 25  # a bar with total=steps ends full


def test_volume_at_any_time_has_the_volume_shape(tiny_series):
    frames, angles, times = tiny_series
    tr = DipTrainer(frames, angles, times, replace(TINY, vol_z=9))
    tr.fit()
    model = tr.best_model()
    between = 0.5 * (times[3] + times[4])
    v = model.volume(between)
    assert v.shape == (9, 7, 11) and v.dtype == np.float32 and np.all(v >= 0)
    assert np.allclose(model.volume(between + 1e-4), v, atol=1e-4 * max(1.0, float(v.max())))
    # a row of the volume is the slice the generator makes for that row
    with torch.no_grad():
        sl = model(torch.tensor([between], dtype=torch.float32), torch.tensor([2.0]))
    np.testing.assert_allclose(v[:, 2, :], sl[0].numpy(), rtol=1e-5, atol=1e-6)


def test_invalid_parameters_name_the_problem():
    with pytest.raises(ValueError, match="heldout_fraction"):
        DipParams(heldout_fraction=0.7)
    with pytest.raises(ValueError, match="loss"):
        DipParams(loss="l7")
    with pytest.raises(ValueError, match="unknown"):
        DipParams.from_dict({"stepz": 3})


# -- quality on a dynamic phantom ---------------------------------------------------------------
@pytest.fixture(scope="module")
def dynamic_rod():
    n = 80
    probe = simulate_series(make_phantom("nanorod", size=20, static=True), n_frames=n, blur=False)
    ph = make_phantom("nanorod", size=20, duration_s=float(probe.times_s[-1]))
    return simulate_series(ph, n_frames=n, blur=False)


def test_dip_error_falls_and_beats_static_sirt(dynamic_rod):
    s = dynamic_rod
    tq = np.linspace(s.times_s[0], s.times_s[-1], 6)
    truth = np.stack([s.truth(t) for t in tq])
    assert nrmse(truth[0], truth[-1]) > 0.5  # the particle really changes

    def err(vols):
        return float(np.mean([nrmse(v, r) for v, r in zip(vols, truth)]))

    params = DipParams(steps=300, batch_frames=8, lr=3e-3, eval_every=50, mlp_width=64, mlp_depth=2,
                       decoder_width=32, device="cpu", seed=0)
    errs = []
    vols, info = reconstruct_dip(s.frames, s.angles_deg, s.times_s, tq, params,
                                 callbacks=[lambda st: errs.append(err(st.model.volumes(tq)))])
    static = reconstruct_4d(s.frames, s.angles_deg, s.times_s, tq, BatchParams(iterations=100))
    assert errs[-1] < 0.7 * errs[0], errs
    assert err(vols) < err(static), (err(vols), err(static))
    assert info["heldout_nrmse"] < 0.2 and math.isfinite(info["steps_per_s"])


# -- GPU paths ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_mixed_precision_and_compile(tiny_series, amp):
    frames, angles, times = tiny_series
    params = replace(TINY, device="cuda", amp=amp, compile=amp == "bf16")
    vols, info = reconstruct_dip(frames, angles, times, [3.0, 20.0], params)
    assert info["amp"] == {"bf16": "bfloat16", "fp16": "float16"}[amp]
    assert np.all(np.isfinite(vols)) and info["heldout_nrmse"] < 1.0


def test_doubling_the_time_span_keeps_what_the_model_learnt():
    """After (t0, t1) → (t0, 2 t1 − t0) every old time maps to (x − 1)/2: moving the time octaves
    keeps the model's volumes exactly (once the old highest octave, which has no place, is zero); the
    plain stretch the online DIP used to do changes them (it then had to re-fit)."""
    params = DipParams(mlp_width=16, mlp_depth=2, decoder_width=8, t_frequencies=4)
    geom = DipGeometry((8, 4, 8), (5.0, 25.0), 1.0)
    model = build_generator(geom, params, generator=torch.Generator().manual_seed(1), start_value=0.5).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t = torch.linspace(5.0, 25.0, 9, dtype=torch.float64)
    y = torch.full_like(t, 1.5)
    model(t, y).square().sum().backward()
    opt.step()  # the first layer has Adam moments now
    k = model.enc_t.freqs.numel()
    first = model.mapping[0]
    with torch.no_grad():
        first.weight[:, k].zero_()  # the old highest octave (sin, cos) has no place after doubling
        first.weight[:, 2 * k].zero_()
    before = model(t, y).detach()
    model.geom = DipGeometry((8, 4, 8), (5.0, 45.0), 1.0)  # the old way: only the span changes
    assert (model(t, y).detach() - before).abs().max() > 1e-2
    model.geom = geom
    model.double_time_span(opt)
    assert model.geom.t_range_s == (5.0, 45.0)
    torch.testing.assert_close(model(t, y).detach(), before, rtol=1e-6, atol=1e-7)  # (float32 octave constants)
    assert torch.isfinite(opt.state[first.weight]["exp_avg_sq"]).all()
