"""What the microscope sent: the latest raw frame and the tilt angles so far (coverage).

:class:`AcquisitionState` has no lock and no Qt; the :class:`~tiltstream.viz.model.ViewModel` calls
it under its lock.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from tiltstream.stream.messages import FrameMsg, StartMsg
from tiltstream.viz.records import FrameView

__all__ = ["AcquisitionState"]


class AcquisitionState:
    """The newest :class:`FrameView`, the last ``coverage_points`` angles and the scheme's tilt range."""

    def __init__(self, coverage_points: int) -> None:
        self.frame: FrameView | None = None
        self.angles: deque[float] = deque(maxlen=coverage_points)
        self.tilt_range: tuple[float, float] | None = None

    def on_start(self, msg: StartMsg | FrameMsg) -> None:
        """The scheme's tilt range, when ``msg`` (a ``start/1``, or a frame) carries it."""
        if msg.tilt_range_deg is not None:
            self.tilt_range = (float(msg.tilt_range_deg[0]), float(msg.tilt_range_deg[1]))

    def on_frame(self, msg: FrameMsg, now: float) -> None:
        self.frame = FrameView(data=msg.data, seq=int(msg.seq), angle_deg=float(msg.angle_deg),
                               t_s=float(msg.t_s), dose_e_per_A2=msg.dose_e_per_A2,
                               temperature_C=msg.temperature_C, received_s=now)
        self.angles.append(float(msg.angle_deg))
        self.on_start(msg)

    def coverage_args(self) -> tuple[np.ndarray, tuple[float, float] | None]:
        """A copy of the angles (degrees, arrival order) and the tilt range, for :meth:`~tiltstream.viz.records.CoverageData.from_angles`."""
        return np.array(self.angles, dtype=np.float64), self.tilt_range
