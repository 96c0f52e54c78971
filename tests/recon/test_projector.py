import numpy as np
import pytest
import torch

from tiltstream.recon import (
    available_backends,
    operator,
    projection_geometry,
    volume_geometry,
)

VOL = (21, 17, 25)  # (Z, Y, X): odd, non-square, so transposes fail


def _op(backend="torch", device="cpu", angles=None, det_u=29, offset=1.3):
    angles = np.linspace(-70, 70, 11) if angles is None else angles
    return operator(
        volume_geometry(VOL),
        projection_geometry(angles, det_shape=(VOL[1], det_u), axis_offset_px=offset),
        backend=backend,
        device=device,
    )


@pytest.mark.parametrize("backend", available_backends())
def test_adjointness_every_backend(backend, rng):
    device = "cuda" if backend == "astra" else "cpu"
    A = _op(backend, device, angles=rng.uniform(-70, 70, 13))
    tol = 1e-5 if backend == "torch" else 5e-2  # ASTRA's BP is matched only up to interpolation
    assert A.adjointness_test(rng) < tol


def test_adjointness_on_device(device, rng):
    assert _op("torch", device).adjointness_test(rng) < 1e-5


def test_adjointness_test_detects_a_wrong_adjoint(rng):
    A = _op()
    A._adjoint_impl_orig = A._adjoint_impl
    A._adjoint_impl = lambda y: 1.01 * A._adjoint_impl_orig(y)
    assert A.adjointness_test(rng) > 1e-3


def test_point_lands_where_the_convention_says():
    # a single voxel at (z, x) must land at u = x·cosθ + z·sinθ (centred), row y unchanged
    z_i, y_i, x_i = 4, 11, 19
    vol = np.zeros(VOL, np.float32)
    vol[z_i, y_i, x_i] = 1.0
    angles = np.array([0.0, 30.0, 90.0, -60.0])
    A = _op(angles=angles, offset=0.0)
    p = A(vol)
    zc, xc = z_i - (VOL[0] - 1) / 2, x_i - (VOL[2] - 1) / 2
    cols = np.arange(29) - 14.0
    for k, th in enumerate(np.deg2rad(angles)):
        row = p[k, y_i]
        assert np.allclose(p[k].sum(axis=1)[np.arange(VOL[1]) != y_i], 0)
        centroid = (row * cols).sum() / row.sum()
        # binning a trapezoid moves its discrete centroid by < 0.05 px; a wrong convention moves it by pixels
        assert centroid == pytest.approx(xc * np.cos(th) + zc * np.sin(th), abs=0.05)
        assert row.sum() == pytest.approx(1.0, abs=1e-5)


def test_axis_offset_shifts_projection_right():
    vol = np.zeros(VOL, np.float32)
    vol[10, 5, 12] = 1.0
    cols = np.arange(29)
    c0 = (_op(offset=0.0)(vol)[0, 5] * cols).sum()
    c1 = (_op(offset=2.5)(vol)[0, 5] * cols).sum()
    assert c1 - c0 == pytest.approx(2.5, abs=1e-4)


def test_mass_conserved_inside_detector(rng):
    vol = np.zeros(VOL, np.float32)
    vol[6:15, :, 8:17] = rng.random((9, VOL[1], 9), dtype=np.float32)
    p = _op(angles=rng.uniform(-90, 90, 17), offset=0.0)(vol)
    np.testing.assert_allclose(p.sum(axis=(1, 2)), vol.sum(), rtol=1e-5)


def test_strip_model_matches_line_integral_of_a_block():
    # a 9-voxel-thick slab along z projects to 9 at 0°, and to ~9/cos(30°) through its middle at 30°
    vol = np.zeros((31, 3, 61), np.float32)
    vol[11:20] = 1.0
    A = operator(volume_geometry(vol.shape), projection_geometry([0.0, 30.0], det_shape=(3, 61)))
    p = A(vol)
    assert p[0, 1, 30] == pytest.approx(9.0, abs=1e-4)
    assert p[1, 1, 30] == pytest.approx(9.0 / np.cos(np.deg2rad(30.0)), rel=0.02)


def test_numpy_in_numpy_out_and_torch_in_torch_out(rng):
    A = _op()
    x = rng.random(VOL, dtype=np.float32)
    assert isinstance(A(x), np.ndarray)
    y = A(torch.as_tensor(x))
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == A.range_shape
    np.testing.assert_allclose(A.T(y).numpy(), A.adjoint(A(x)), rtol=1e-5)


def test_batch_axis_matches_loop(rng):
    A = _op()
    xb = rng.random((3, *VOL), dtype=np.float32)
    yb = A(xb)
    for i in range(3):
        np.testing.assert_allclose(yb[i], A(xb[i]), rtol=1e-5, atol=1e-6)


def test_shape_errors_name_expected_and_actual():
    A = _op()
    with pytest.raises(ValueError, match=r"expected shape \(21, 17, 25\).*got \(21, 25, 17\)"):
        A(np.zeros((21, 25, 17), np.float32))
    with pytest.raises(ValueError, match="detector rows"):
        operator(volume_geometry(VOL), projection_geometry([0.0], det_shape=(16, 25)))
    with pytest.raises(ValueError, match="NaN"):
        projection_geometry([0.0, np.nan], det_shape=(17, 25))


def test_gradient_is_the_adjoint(rng):
    A = _op()
    x = torch.tensor(rng.random(VOL, dtype=np.float32), requires_grad=True)
    v = torch.tensor(rng.random(A.range_shape, dtype=np.float32))
    (A(x) * v).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), A.T(v.numpy()), rtol=1e-5, atol=1e-6)


def test_gradcheck_float64():
    A = operator(volume_geometry((5, 2, 6)), projection_geometry([-40.0, 10.0, 75.0], det_shape=(2, 7)),
                 dtype=torch.float64)
    x = torch.rand(5, 2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: A(t), (x,))


@pytest.mark.parametrize("idx", [3, slice(2, 7), np.array([9, 0, 4]), np.array([5, 5])])
def test_sliced_projector_equals_the_full_one_on_its_frames(idx, rng):
    angles = rng.uniform(-70, 70, 11)
    A = _op(angles=angles, offset=0.7)
    sub = A[idx]
    frames = np.atleast_1d(np.arange(11)[idx])
    assert sub.range_shape == (frames.size, VOL[1], 29) and sub.domain_shape == A.domain_shape
    np.testing.assert_array_equal(sub.proj_geom.angles_deg, angles[frames])
    vol = rng.random(VOL, dtype=np.float32)
    np.testing.assert_allclose(sub(vol), A(vol)[frames], rtol=1e-6, atol=1e-6)
    # the adjoint of the slice is the full adjoint of data that is zero on every other frame
    y = rng.random(sub.range_shape, dtype=np.float32)
    full = np.zeros(A.range_shape, np.float32)
    np.add.at(full, frames, y)
    np.testing.assert_allclose(sub.T(y), A.T(full), rtol=1e-5, atol=1e-5)
    assert sub.adjointness_test(rng) < 1e-5
    other = A[(frames + 1) % 11]  # and slicing picks those frames, not any
    assert not np.allclose(other(vol), sub(vol), atol=1e-3)


def test_astra_backend_refused_cleanly_without_gpu():
    if "astra" in available_backends():
        pytest.skip("GPU present")
    with pytest.raises(RuntimeError, match="astra"):
        _op(backend="astra")


@pytest.mark.gpu
@pytest.mark.skipif("astra" not in available_backends(), reason="needs astra-toolbox with a CUDA GPU")
def test_astra_matches_torch_backend(rng):
    angles = rng.uniform(-70, 70, 9)
    vol = np.zeros(VOL, np.float32)
    vol[5:16, 3:14, 6:19] = rng.random((11, 11, 13), dtype=np.float32)
    pa = _op("astra", "cuda", angles=angles, offset=1.3)(torch.as_tensor(vol, device="cuda")).cpu().numpy()
    pt = _op("torch", "cpu", angles=angles, offset=1.3)(vol)
    assert np.corrcoef(pa.ravel(), pt.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(pa.sum(axis=(1, 2)), pt.sum(axis=(1, 2)), rtol=0.02)


def _sorted_csr(rows, cols, vals, shape):
    """CSR arrays of COO triplets by a full sort (the plain construction strip_csr must equal)."""
    order = torch.argsort(rows * shape[1] + cols)
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
    return crow, cols[order], vals[order]


@pytest.mark.parametrize("chunk_pairs", [1, 37 * 31 * 2 + 5, 1 << 30])
def test_strip_csr_is_the_sorted_csr_of_the_whole_footprint_and_of_its_transpose(chunk_pairs, monkeypatch, rng):
    """strip_csr evaluates the footprint a few angles at a time and builds both CSR layouts without
    a global sort (a stable sort by row within each chunk; the transpose's chunks placed voxel by
    voxel): the result must be the CSR of the sorted nonzeros of the footprint of every angle at
    once, bit for bit, whatever the chunking, also for one angle and for none."""
    from tiltstream.recon import footprint

    monkeypatch.setattr(footprint, "_CHUNK_PAIRS", chunk_pairs)
    nz, nx, n_det = 37, 31, 45
    for n_ang in (0, 1, 7, 40):
        angles = torch.as_tensor(np.deg2rad(rng.uniform(-80, 80, n_ang)), dtype=torch.float64)
        bins, w = footprint.strip_footprint(angles, nz, nx, n_det, -2.5)
        rows = (torch.arange(n_ang).reshape(-1, 1, 1) * n_det + bins).reshape(-1)
        cols = torch.arange(nz * nx).expand(n_ang, footprint.N_TAPS, -1).reshape(-1)
        keep = w.reshape(-1) > 0
        rows, cols, w = rows[keep], cols[keep], w.reshape(-1)[keep].to(torch.float32)
        shape = (n_ang * n_det, nz * nx)
        matrix, transpose, got_shape = footprint.strip_csr(angles, nz, nx, n_det, -2.5)
        assert got_shape == shape
        for got, want in ((matrix, _sorted_csr(rows, cols, w, shape)),
                          (transpose, _sorted_csr(cols, rows, w, shape[::-1]))):
            assert [g.dtype for g in got] == [torch.int32, torch.int32, torch.float32]
            for g, x in zip(got, want):
                assert torch.equal(g.to(x.dtype), x), n_ang
