import numpy as np
import pytest

from tiltstream.sim import PHANTOMS, make_phantom, z_weight

SHAPE = (21, 17, 25)  # odd, non-square: (Z, Y, X)


def _principal_axes(occ: np.ndarray) -> np.ndarray:
    """Square roots of the eigenvalues (ascending) of the occupancy's second-moment tensor."""
    idx = np.indices(occ.shape).reshape(3, -1).astype(float)
    w = occ.reshape(-1)
    mean = idx @ w / w.sum()
    d = idx - mean[:, None]
    cov = (d * w) @ d.T / w.sum()
    return np.sqrt(np.linalg.eigvalsh(cov))


def _in_fov_cylinder(vol: np.ndarray) -> bool:
    z, _, x = vol.shape
    zz = np.arange(z)[:, None] - (z - 1) / 2
    xx = np.arange(x)[None, :] - (x - 1) / 2
    outside = np.hypot(zz, xx) > min(z, x) / 2
    return not np.any(vol.max(axis=1)[outside] > 0)


@pytest.mark.parametrize("name", sorted(PHANTOMS))
def test_every_phantom_fits_and_is_bounded(name):
    p = make_phantom(name, shape=SHAPE, duration_s=10.0)
    assert p.shape == SHAPE
    for t in (0.0, 5.0, 10.0):
        c = p.contrast(t)
        assert c.shape == SHAPE and c.dtype == np.float32
        assert c.min() >= 0.0 and c.max() <= 1.0 + 1e-6
        assert _in_fov_cylinder(c)
        for f in p.fractions(t).values():
            assert f.shape == SHAPE and f.min() >= 0 and f.max() <= 1 + 1e-6


def test_default_voxel_fills_60_percent():
    p = make_phantom("nanorod", size=40)
    assert 2 * p.extent_radius_nm / (40 * p.voxel_nm) == pytest.approx(0.6)


def test_too_large_particle_is_rejected():
    with pytest.raises(ValueError, match="field of view"):
        make_phantom("nanorod", shape=SHAPE, voxel_nm=1.0)


def test_contrast_is_z_weighted_sum():
    p = make_phantom("core_shell", shape=SHAPE)
    fr = p.fractions(20.0)
    expected = fr["Au"] + (47 / 79) ** 1.5 * fr["Ag"]
    np.testing.assert_allclose(p.contrast(20.0, exponent=1.5), expected, rtol=1e-5, atol=1e-6)
    assert z_weight("Au") == 1.0
    with pytest.raises(ValueError, match="element"):
        z_weight("Xx")


def test_nanorod_volume_constant_and_aspect_falls():
    p = make_phantom("nanorod", size=48, duration_s=60.0)
    times = np.linspace(0.0, 60.0, 7)
    v0 = p.volume_nm3(0.0)
    assert v0 == pytest.approx(np.pi * 6**2 * 28 + 4 / 3 * np.pi * 6**3)
    for t in times:
        assert p.volume_nm3(t) == pytest.approx(v0, rel=1e-9)
    aspect = [p.aspect_ratio(t) for t in times]
    assert aspect[0] == pytest.approx(40 / 12) and aspect[-1] == pytest.approx(1.0)
    assert np.all(np.diff(aspect) < 0)
    # Rasterised volume within 2 % of the analytic one at every time (anti-aliased edges).
    vox3 = p.voxel_nm**3
    ratios = []
    for t in (0.0, 30.0, 60.0):
        occ = p.occupancy(t)
        assert occ.sum() * vox3 == pytest.approx(v0, rel=0.02)
        ax = _principal_axes(occ)
        ratios.append(ax[2] / ax[1])
    assert ratios[0] > ratios[1] > ratios[2]
    assert ratios[2] == pytest.approx(1.0, abs=0.05)


def test_nanostar_tips_retract():
    p = make_phantom("nanostar", shape=SHAPE, duration_s=10.0)
    vols = [p.occupancy(t).sum() for t in (0.0, 5.0, 10.0)]
    assert vols[0] > vols[1] > vols[2]
    assert p.tip_length_nm(10.0) < 0.2 * p.tip_length_nm(0.0)


def test_core_shell_shape_constant_composition_changes():
    p = make_phantom("au_ag", shape=SHAPE, duration_s=10.0)
    assert p.elements == ("Au", "Ag")
    occ0, occ1 = p.occupancy(0.0), p.occupancy(10.0)
    np.testing.assert_allclose(occ0, occ1, atol=1e-6)
    c0, c1 = p.contrast(0.0), p.contrast(10.0)
    assert np.abs(c1 - c0).max() > 0.3  # core dims, shell brightens
    au0, au1 = p.fractions(0.0)["Au"], p.fractions(10.0)["Au"]
    assert au1.sum() == pytest.approx(au0.sum(), rel=0.02)  # Au is conserved
    assert au1.max() < au0.max()


def test_sintering_neck_grows_and_volume_kept():
    p = make_phantom("sintering", size=40, duration_s=10.0)
    times = np.array([0.0, 2.0, 4.0, 6.0])
    necks = [p.neck_radius_nm(t) for t in times]
    assert necks[0] == 0.0 and np.all(np.diff(necks) > 0)
    v0 = p.volume_nm3(0.0)
    for t in np.linspace(0, 10, 6):
        assert p.volume_nm3(t) == pytest.approx(v0, rel=1e-6)  # analytic union (no fillet)
        assert p.occupancy(t).sum() * p.voxel_nm**3 == pytest.approx(v0, rel=0.03)  # fillet included
    # Narrowest rasterised cross-section between the two centres grows.
    idx = np.indices(p.shape).reshape(3, -1).T - (np.array(p.shape) - 1) / 2
    axial = idx @ p.axis * p.voxel_nm
    areas = []
    for t in times:
        occ = p.occupancy(t).reshape(-1)
        c1, c2 = p.centres_nm(t)
        lo, hi = sorted([c1 @ p.axis, c2 @ p.axis])
        bins = np.arange(lo, hi + 1e-9, p.voxel_nm)
        profile = [occ[(axial >= b) & (axial < b + p.voxel_nm)].sum() for b in bins[:-1]]
        areas.append(min(profile))
    assert np.all(np.diff(areas) > 0)


def test_frozen_and_static():
    p = make_phantom("nanostar", shape=SHAPE, duration_s=10.0)
    frozen = p.frozen(5.0)
    assert frozen.is_static and not p.is_static
    np.testing.assert_array_equal(frozen.contrast(0.0), frozen.contrast(10.0))
    np.testing.assert_array_equal(frozen.contrast(0.0), p.contrast(5.0))
    s = make_phantom("nanostar", shape=SHAPE, duration_s=10.0, static=True)
    np.testing.assert_array_equal(s.contrast(9.0), p.contrast(0.0))


def test_unknown_phantom():
    with pytest.raises(ValueError, match="nanorod"):
        make_phantom("blob")


def test_supersampled_fractions_agree():
    # The one-voxel SDF ramp overestimates a sphere's volume by ~(voxel/radius)²/4: use ~1.5 nm voxels.
    p = make_phantom("sintering", shape=(41, 37, 45))
    a, b = p.contrast(0.0), p.contrast(0.0, supersample=3)
    assert np.abs(a.sum() - b.sum()) / b.sum() < 0.02
    assert np.abs(a - b).max() < 0.35
