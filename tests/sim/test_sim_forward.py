import numpy as np
import pytest

from tiltstream.sim import Phantom, make_phantom, project
from tiltstream.sim.shapes import occupancy, sd_sphere

SHAPE = (21, 17, 25)  # (Z, Y, X); detector U = X = 25


class TwoBalls(Phantom):
    """Asymmetric static test object: a big ball off-centre in z, y and x and a smaller one."""

    name = "two_balls"
    elements = ("Au", "Ag")

    @property
    def extent_radius_nm(self) -> float:
        return 7.8

    def _fractions_nm(self, t_s, z, y, x, spacing_nm):
        big = occupancy(sd_sphere(z, y, x, (3.0, -2.0, 2.0), 3.5), spacing_nm)
        small = occupancy(sd_sphere(z, y, x, (-3.5, 2.5, -3.0), 2.5), spacing_nm)
        return {"Au": big, "Ag": small}


@pytest.fixture
def balls() -> TwoBalls:
    return TwoBalls(SHAPE, 1.0, 10.0)


def _centroid(frame: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(frame.shape)
    return np.array([(rows * frame).sum(), (cols * frame).sum()]) / frame.sum()


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_mass_is_conserved_at_every_angle(balls):
    angles = np.array([-70.0, -45.0, -10.0, 0.0, 23.0, 60.0, 70.0, 90.0])
    frames = project(balls, angles, 0.0)
    assert frames.shape == (angles.size, 17, 25) and frames.dtype == np.float32
    total = balls.contrast(0.0, supersample=4).sum()
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), total, rtol=0.03)


def test_zero_degrees_is_sum_over_z(balls):
    vol = balls.contrast(0.0, supersample=4)
    frame = project(balls, [0.0], 0.0)[0]
    assert _rel_err(frame, vol.sum(axis=0)) < 0.05
    # A flipped or wrongly summed reference must fail the same check.
    assert _rel_err(frame, vol.sum(axis=0)[:, ::-1]) > 0.3
    assert _rel_err(frame, vol.sum(axis=0)[::-1, :]) > 0.3


def test_ninety_degrees_is_sum_over_x_with_u_equal_z(balls):
    vol = balls.contrast(0.0, supersample=4)
    frames = project(balls, [90.0, -90.0], 0.0)
    off = (SHAPE[2] - SHAPE[0]) // 2  # detector column of z index 0
    ref = np.zeros((17, 25))
    ref[:, off : off + SHAPE[0]] = vol.sum(axis=2).T  # (Y, Z): u = z at 90 degrees
    assert _rel_err(frames[0], ref) < 0.05
    assert _rel_err(frames[1], ref[:, ::-1]) < 0.05  # u = -z at -90 degrees
    assert _rel_err(frames[0], ref[:, ::-1]) > 0.3


def test_projection_centroid_follows_u_formula(balls):
    vol = balls.contrast(0.0, supersample=2)
    zc, yc, xc = (np.indices(SHAPE).reshape(3, -1) @ vol.reshape(-1)) / vol.sum()
    zc, xc = zc - (SHAPE[0] - 1) / 2, xc - (SHAPE[2] - 1) / 2
    angles = np.array([-65.0, -30.0, 0.0, 15.0, 50.0, 80.0])
    frames = project(balls, angles, 0.0)
    for theta, frame in zip(np.deg2rad(angles), frames):
        row, col = _centroid(frame)
        assert row == pytest.approx(yc, abs=0.05)
        assert col - (SHAPE[2] - 1) / 2 == pytest.approx(xc * np.cos(theta) + zc * np.sin(theta), abs=0.05)


def test_opposite_angles_mirror(balls):
    f = project(balls, [30.0, 210.0], 0.0)
    np.testing.assert_allclose(f[1], f[0][:, ::-1], atol=2e-3)


def test_shifts_move_the_frame_the_right_way(balls):
    base, moved = project(balls, [20.0, 20.0], 0.0, shifts_px=np.array([[0.0, 0.0], [2.0, 3.0]]))
    # Integer shift: rows +2 and columns +3, content stays inside the frame.
    np.testing.assert_allclose(moved[2:, 3:], base[:-2, :-3], atol=1e-5)
    frames = project(balls, [20.0, 20.0], 0.0, shifts_px=np.array([[0.0, 0.0], [1.3, -0.7]]))
    np.testing.assert_allclose(_centroid(frames[1]) - _centroid(frames[0]), [1.3, -0.7], atol=0.03)


def test_axis_offset_convention(balls):
    # j = u + (U-1)/2 + axis_offset_px (as in recon): the tilt axis lands right of the centre.
    f0, f1 = project(balls, [0.0], 0.0), project(balls, [0.0], 0.0, axis_offset_px=1.5)
    np.testing.assert_allclose(_centroid(f1[0]) - _centroid(f0[0]), [0.0, 1.5], atol=0.03)
    # At 90 degrees the image is the X-sum placed by z; the axis offset still adds to the column.
    g0, g1 = project(balls, [90.0], 0.0), project(balls, [90.0], 0.0, axis_offset_px=-2.0)
    np.testing.assert_allclose(_centroid(g1[0]) - _centroid(g0[0]), [0.0, -2.0], atol=0.03)


def test_wider_detector(balls):
    narrow = project(balls, [35.0], 0.0)[0]
    wide = project(balls, [35.0], 0.0, detector_cols=29)[0]
    assert wide.shape == (17, 29)
    np.testing.assert_allclose(wide[:, 2:27], narrow, atol=1e-5)
    assert np.abs(wide[:, :2]).max() == 0 and np.abs(wide[:, 27:]).max() == 0


def test_dynamic_frames_use_their_own_time():
    p = make_phantom("nanostar", shape=SHAPE, duration_s=10.0)
    frames = project(p, [10.0, 10.0, 10.0], [0.0, 10.0, 0.0])
    np.testing.assert_array_equal(frames[0], frames[2])
    assert frames[0].sum() > 1.1 * frames[1].sum()  # tips retracted
    np.testing.assert_allclose(frames[1], project(p.frozen(10.0), [10.0], 0.0)[0], atol=1e-6)


def test_continuous_tilt_blur_averages_sub_angles(balls):
    blurred = project(balls, [40.0], 0.0, exposure_s=0.1, tilt_speed_deg_s=40.0, blur_substeps=4)[0]
    subs = project(balls, 40.0 + np.array([-1.5, -0.5, 0.5, 1.5]), 0.0)
    np.testing.assert_allclose(blurred, subs.mean(axis=0), atol=1e-5)
    assert np.abs(blurred - project(balls, [40.0], 0.0)[0]).max() > 1e-2
    with pytest.raises(ValueError, match="exposure_s"):
        project(balls, [40.0], 0.0, blur_substeps=4)


def test_supersampling_converges(balls):
    a = project(balls, [33.0], 0.0, supersample=2)[0]
    b = project(balls, [33.0], 0.0, supersample=4)[0]
    assert _rel_err(a, b) < 0.03


def test_bad_shifts_shape(balls):
    with pytest.raises(ValueError, match="shifts_px"):
        project(balls, [0.0, 1.0], 0.0, shifts_px=np.zeros((3, 2)))
