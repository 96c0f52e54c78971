"""Tilt scheduler: golden-ratio angles and planned times, finite and endless."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tiltstream.acquire.scheduler import TiltScheduler, golden_schedule
from tiltstream.sim import GOLDEN_RATIO, TimingModel, tilt_scheme


def test_golden_schedule_pairs():
    pairs = list(golden_schedule(50, tilt_range_deg=(-60.0, 65.0)))
    angles = np.array([a for a, _ in pairs])
    times = np.array([t for _, t in pairs])
    k = np.arange(50)
    np.testing.assert_allclose(angles, -60.0 + 125.0 * np.mod(k * GOLDEN_RATIO, 1.0), atol=1e-9)
    _, mids, _ = TimingModel().times(angles)
    np.testing.assert_array_equal(times, mids)
    assert np.all(np.diff(times) > 0)


@pytest.mark.parametrize(
    "scheme, kw", [("golden", {}), ("incremental", {"step_deg": 3.0}), ("linear", {"step_deg": 7.0})]
)
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_endless_schedule_equals_one_long_plan(scheme, kw, chunk):
    timing = TimingModel(exposure_s=0.2, readout_s=0.05, backlash_pause_s=0.7, settle_s=0.1)
    planned = list(itertools.islice(TiltScheduler(scheme, timing=timing, chunk=chunk, **kw), 300))
    angles = tilt_scheme(scheme, 300, **kw)
    starts, mids, exposure = timing.times(angles)
    assert [f.index for f in planned] == list(range(300))
    np.testing.assert_array_equal([f.angle_deg for f in planned], angles)
    np.testing.assert_allclose([f.t_s for f in planned], mids, rtol=0, atol=1e-9)
    np.testing.assert_allclose([f.start_s for f in planned], starts, rtol=0, atol=1e-9)
    np.testing.assert_allclose([f.tilt_speed_deg_s for f in planned], timing.tilt_speeds(angles), atol=1e-12)
    assert all(f.end_s == f.start_s + f.exposure_s for f in planned)


def test_finite_schedule_stops_and_plans():
    sched = TiltScheduler("golden", n_frames=5)
    assert len(list(sched)) == 5
    assert len(sched.plan()) == 5 and len(sched.plan(3)) == 3
    with pytest.raises(ValueError, match="at most 5"):
        sched.plan(6)
    with pytest.raises(ValueError, match="step_deg"):
        TiltScheduler("linear")
    with pytest.raises(ValueError, match="scheme"):
        TiltScheduler("spiral", n_frames=3)
