import math

import numpy as np
import pytest

from tiltstream.sim import (
    TimingModel,
    golden_ratio_angles,
    incremental_angles,
    linear_angles,
    tilt_scheme,
)


def test_golden_ratio_formula_and_range():
    phi = (1 + math.sqrt(5)) / 2
    a = golden_ratio_angles(50, lo=-60.0, hi=65.0)
    expected = [-60.0 + 125.0 * ((k * phi) % 1.0) for k in range(50)]
    np.testing.assert_allclose(a, expected, atol=1e-9)
    assert a[0] == -60.0
    assert a.min() >= -60.0 and a.max() < 65.0
    # Golden-ratio property: successive angles are never close, all distinct.
    assert np.unique(np.round(a, 9)).size == 50
    assert golden_ratio_angles(0).shape == (0,)


def test_golden_ratio_rejects_bad_range():
    with pytest.raises(ValueError, match="lo < hi"):
        golden_ratio_angles(5, lo=10, hi=-10)


def test_linear_angles_sweep_back_and_forth():
    a = linear_angles(5, lo=-10, hi=10)
    np.testing.assert_allclose(a, [-10, -5, 0, 5, 10])
    b = linear_angles(11, lo=-10, hi=10, step_deg=5)
    np.testing.assert_allclose(b, [-10, -5, 0, 5, 10, 5, 0, -5, -10, -5, 0])
    steps = np.abs(np.diff(linear_angles(100, lo=-70, hi=70, step_deg=3.0)))
    assert steps.max() <= 3.0 + 1e-9 and np.median(steps) == pytest.approx(3.0)
    assert linear_angles(100, step_deg=3.0).min() >= -70 and linear_angles(100, step_deg=3.0).max() <= 70


def test_incremental_angles_interlace():
    a = incremental_angles(20, lo=-4, hi=4, step_deg=2.0, n_interlace=4)
    np.testing.assert_allclose(a[:5], [-4, -2, 0, 2, 4])
    np.testing.assert_allclose(a[5:9], [-3.5, -1.5, 0.5, 2.5])
    np.testing.assert_allclose(a[9:13], [-3, -1, 1, 3])
    np.testing.assert_allclose(a[13:17], [-2.5, -0.5, 1.5, 3.5])
    np.testing.assert_allclose(a[17:], [-4, -2, 0])  # the interlace pattern repeats
    assert a.min() >= -4 and a.max() <= 4


def test_tilt_scheme_dispatch():
    golden = tilt_scheme("golden", 7, lo=-50, hi=50)
    np.testing.assert_array_equal(golden, golden_ratio_angles(7, lo=-50, hi=50))
    np.testing.assert_array_equal(tilt_scheme("linear", 7), linear_angles(7))
    np.testing.assert_array_equal(tilt_scheme("incremental", 7), incremental_angles(7))
    with pytest.raises(ValueError, match="golden"):
        tilt_scheme("spiral", 5)


def test_timing_step_and_shoot_with_backlash():
    tm = TimingModel(exposure_s=0.1, readout_s=0.05, tilt_speed_deg_s=20.0, backlash_pause_s=0.5,
                     continuous=False)
    starts, mid, exposure = tm.times([0.0, 10.0, 20.0, 10.0, 0.0])
    # Frame gaps: exposure + readout + move (0.5 s) [+ backlash 0.5 s on the reversal at frame 3].
    np.testing.assert_allclose(starts, [0.0, 0.65, 1.30, 2.45, 3.10])
    np.testing.assert_allclose(mid, starts + 0.05)
    np.testing.assert_allclose(exposure, 0.1)


def test_timing_monotonic_and_reversal_costs_time():
    angles = golden_ratio_angles(40)
    for continuous in (True, False):
        _, mid, _ = TimingModel(continuous=continuous).times(angles)
        assert mid[0] == pytest.approx(0.05)
        assert np.all(np.diff(mid) > 0)
    # The same move is slower when it reverses direction.
    tm = TimingModel(continuous=True)
    _, forward, _ = tm.times([0.0, 10.0, 20.0])
    _, reverse, _ = tm.times([0.0, 10.0, 0.0])
    assert reverse[2] - reverse[1] == pytest.approx(forward[2] - forward[1] + tm.backlash_pause_s)


def test_angle_range_during_exposure():
    tm = TimingModel(exposure_s=0.1, readout_s=0.05, tilt_speed_deg_s=20.0, continuous=True)
    r = tm.angle_range_during_exposure([0.0, 10.0, 0.0])
    # 20 deg/s for 0.1 s sweeps 2 degrees, centred on the nominal angle, along the motion.
    np.testing.assert_allclose(r, [[-1, 1], [9, 11], [1, -1]])
    still = TimingModel(continuous=False).angle_range_during_exposure([0.0, 10.0])
    np.testing.assert_allclose(still, [[0, 0], [10, 10]])
