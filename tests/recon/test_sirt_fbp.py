import numpy as np
import pytest
import torch

from tiltstream.recon import operator, projection_geometry, volume_geometry
from tiltstream.recon.fbp import angular_weights, fbp
from tiltstream.recon.sirt import sirt


def _disk_volume(n=41, ny=5, r=12):
    z, _, x = np.mgrid[:n, :ny, :n] - (n - 1) / 2
    return ((x**2 + z**2) < r**2).astype(np.float32) * np.ones((1, ny, 1), np.float32)


def test_fbp_recovers_disk_value():
    vol = _disk_volume()
    ang = np.linspace(0, 180, 90, endpoint=False)
    A = operator(volume_geometry(vol.shape), projection_geometry(ang, det_shape=(5, 41)))
    r = fbp(A, A(vol))
    inner = r[:, 2][(_disk_volume(r=9)[:, 2]) > 0]
    assert inner.mean() == pytest.approx(1.0, abs=0.03)
    outer = r[:, 2][(_disk_volume(r=15)[:, 2]) == 0]
    assert np.abs(outer).mean() < 0.05


def test_angular_weights_cover_range_and_handle_order():
    a = np.array([10.0, -70.0, 70.0, 0.0, -30.0])
    w = angular_weights(a)
    assert w.sum() == pytest.approx(np.deg2rad(140 + 20 + 40) / 1, rel=0.5)  # ends get a full gap
    assert w[np.argmax(a)] == pytest.approx(np.deg2rad(60.0))
    np.testing.assert_allclose(angular_weights(np.linspace(0, 180, 10, endpoint=False)), np.pi / 10)


def test_warm_start_equals_one_long_run(rng):
    vol = rng.random((13, 4, 15), dtype=np.float32)
    A = operator(volume_geometry(vol.shape), projection_geometry(rng.uniform(-70, 70, 9), det_shape=(4, 17)))
    y = A(vol)
    x30 = sirt(A, y, 30)
    x = None
    for _ in range(3):
        x = sirt(A, y, 10, x_init=x)
    np.testing.assert_allclose(x, x30, rtol=1e-6, atol=1e-7)
    assert not np.allclose(sirt(A, y, 10), x30, atol=1e-4)  # the comparison can fail


def test_sirt_positivity_support_and_callbacks(rng):
    vol = _disk_volume(n=21, ny=3, r=6)
    A = operator(volume_geometry(vol.shape), projection_geometry(np.linspace(-60, 60, 15), det_shape=(3, 21)))
    y = A(vol) - 0.5  # pushes the unconstrained solution negative somewhere
    assert sirt(A, y, 20, min_value=None).min() < 0
    assert sirt(A, y, 20).min() >= 0
    support = _disk_volume(n=21, ny=3, r=8) > 0
    assert np.all(sirt(A, A(vol), 20, support=support)[~support] == 0)
    seen = []

    def stop_at_5(state):
        seen.append(state.residual)
        return state.iteration == 5

    sirt(A, A(vol), 50, callbacks=[stop_at_5])
    assert len(seen) == 5 and seen[-1] < seen[0]


def test_sirt_torch_in_torch_out(device, rng):
    vol = rng.random((9, 3, 11), dtype=np.float32)
    A = operator(volume_geometry(vol.shape), projection_geometry([-50.0, 0.0, 50.0], det_shape=(3, 11)),
                 device=device)
    out = sirt(A, torch.as_tensor(A(vol), device=device), 3)
    assert isinstance(out, torch.Tensor) and out.device.type == device
