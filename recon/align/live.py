"""Live drift correction: estimate and remove each new frame's drift before it is folded in.

A frame arriving during an experiment is compared with what the reconstruction already knows:

* along the tilt axis (dy), its tilt-axis profile is registered to the mean profile of the frames
  already corrected: the profile is the same at every tilt angle, so this is an absolute
  estimate from the second frame on;
* across the axis (du), the frame is registered to the reprojection of the current streaming
  estimate at its angle once that estimate rests on enough frames, before that to the corrected
  frame nearest in angle (if one is close enough), else left alone (the first frames define the
  reference; the drift of a random walk starts at 0).

Frames are registered on a background-free copy but corrected as they came (shifted with edge
extension, one cubic-spline resampling), so the estimator sees the detector's own values.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from tiltstream.recon.align.matching import shift_frames
from tiltstream.recon.align.normalize import background_level
from tiltstream.recon.align.profiles import PROFILE_FILTER, axis_profiles, register_profiles
from tiltstream.recon.align.xcorr import RegistrationFilter, register

__all__ = ["LiveAlignParams", "LiveAligner", "LiveShift"]


@dataclass(frozen=True)
class LiveAlignParams:
    """Live drift-correction settings.

    min_frames_for_reprojection : use the streaming estimate's reprojection as the reference once
        its window holds this many frames (earlier: the nearest frame in angle).
    max_neighbour_gap_deg : a corrected frame at most this far in angle may serve as reference.
    history : corrected frames kept for profiles and neighbour references.
    max_shift_fraction : largest drift searched, as a fraction of the frame size.
    filt : registration settings for frame-to-reference correlation.
    """

    min_frames_for_reprojection: int = 16
    max_neighbour_gap_deg: float = 8.0
    history: int = 64
    max_shift_fraction: float = 0.25
    filt: RegistrationFilter = field(default_factory=lambda: RegistrationFilter(low_cut=0.02, high_cut=0.3,
                                                                                 whiten=0.3, taper=0.1, upsample=20))

    def __post_init__(self) -> None:
        if self.min_frames_for_reprojection < 1 or self.history < 1:
            raise ValueError(f"min_frames_for_reprojection, history: expected ≥ 1, got "
                             f"{self.min_frames_for_reprojection}, {self.history}")
        if not (0 < self.max_shift_fraction <= 0.5):
            raise ValueError(f"max_shift_fraction: expected 0 < f ≤ 0.5, got {self.max_shift_fraction}")


@dataclass(frozen=True)
class LiveShift:
    """The drift removed from one frame: (dy, du) pixels, and what it was measured against
    (``"none"``, ``"neighbour"`` or ``"reprojection"``)."""

    dy: float
    du: float
    reference: str
    quality: float = float("nan")


class LiveAligner:
    """Per-frame drift correction for a stream of frames with the tilt axis along the rows.

    Not thread-safe; one per series. ``shifts`` maps each corrected frame's seq to its
    :class:`LiveShift`.
    """

    def __init__(self, frame_shape: tuple[int, int], params: LiveAlignParams | None = None):
        self.params = params or LiveAlignParams()
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=self.params.history)
        self._profiles: deque[np.ndarray] = deque(maxlen=self.params.history)
        self.shifts: dict[int, LiveShift] = {}
        self._n = 0
        self._filt = replace(self.params.filt, max_shift=self.params.max_shift_fraction * min(self.frame_shape))

    def estimate(self, frame: np.ndarray, angle_deg: float, reprojection: np.ndarray | None = None) -> LiveShift:
        """Drift of ``frame`` (Y, U) relative to what is known, without changing any state."""
        f = self._clean(frame)
        dy = 0.0
        if self._profiles:
            ref_profile = np.mean(np.asarray(self._profiles), axis=0)
            dy = float(register_profiles(ref_profile, axis_profiles(f[None]), PROFILE_FILTER)[0])
            dy = float(np.clip(dy, -self._filt.max_shift, self._filt.max_shift))
        ref, kind = None, "none"
        if reprojection is not None:
            ref, kind = self._clean(reprojection), "reprojection"
        elif self._history:
            gaps = [abs(a - angle_deg) for a, _ in self._history]
            j = int(np.argmin(gaps))
            if gaps[j] <= self.params.max_neighbour_gap_deg:
                ref, kind = self._history[j][1], "neighbour"
        if ref is None:
            return LiveShift(dy, 0.0, kind)
        # register with dy already removed, so the 2-D search only has du (and a small dy) to find
        (ddy, du), quality = register(ref, shift_frames(f[None], np.array([[dy, 0.0]]))[0], self._filt)
        if kind == "reprojection":
            # the reprojection may refine dy by a fraction of a pixel; a larger disagreement means the
            # (angle-invariant, absolute) profile estimate is the one to trust
            dy += float(ddy) if abs(ddy) < 1.0 else 0.0
        return LiveShift(dy, float(du), kind, float(quality))

    def correct(self, frame: np.ndarray, angle_deg: float, *, reprojection: np.ndarray | None = None,
                seq: int | None = None) -> tuple[np.ndarray, LiveShift]:
        """Estimate the drift of ``frame``, remember it, and return the corrected frame (float32)."""
        arr = np.asarray(frame)
        if arr.shape != self.frame_shape:
            raise ValueError(f"frame: expected shape {self.frame_shape} (Y, U), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"frame: expected finite pixel values, got {int((~np.isfinite(arr)).sum())} NaN/Inf")
        if reprojection is not None and np.shape(reprojection) != self.frame_shape:
            raise ValueError(f"reprojection: expected shape {self.frame_shape}, got {np.shape(reprojection)}")
        shift = self.estimate(arr, float(angle_deg), reprojection)
        s = np.array([[shift.dy, shift.du]])
        corrected = shift_frames(arr[None].astype(np.float32), s)[0]
        clean = shift_frames(self._clean(arr)[None], s)[0]
        self._history.append((float(angle_deg), clean))
        self._profiles.append(axis_profiles(clean[None])[0])
        self.shifts[self._n if seq is None else int(seq)] = shift
        self._n += 1
        return corrected, shift

    @staticmethod
    def _clean(frame: np.ndarray) -> np.ndarray:
        f = np.asarray(frame, dtype=np.float64)
        return (f - background_level(f)).astype(np.float32)
