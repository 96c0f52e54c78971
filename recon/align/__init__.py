"""Alignment of tilt series: drift, tilt-axis offset and direction, projection matching; offline and live.

Offline::

    from tiltstream.recon.align import align_series, apply_alignment
    alignment = align_series(series)              # a TiltSeries, or frames + angles (+ times)
    aligned = apply_alignment(series, alignment)  # frames resampled once, axis centred

Live: :class:`LiveAligner` corrects each new frame against the reprojection of the streaming
estimate (``EngineConfig(align=True)``, ``tiltstream recon --align``).

Conventions: shifts are (dy, du) pixels in aligned coordinates (tilt axis along the rows), the
drift of a frame's content (it is corrected by moving the frame by −shift); tilt-axis angles follow
:mod:`tiltstream.stream.orient` (IMOD); ``axis_offset_px`` is where the axis projects, right of the
detector centre, as in :class:`~tiltstream.recon.geometry.ProjectionGeometry`.
"""

from tiltstream.recon.align.axis import AxisDirection, estimate_axis_direction, estimate_axis_offset
from tiltstream.recon.align.drift import (
    axis_drift,
    centre_of_mass_drift,
    neighbour_drift,
    reference_drift,
    split_gauge,
)
from tiltstream.recon.align.live import LiveAligner, LiveAlignParams, LiveShift
from tiltstream.recon.align.matching import MatchingParams, MatchingResult, projection_matching
from tiltstream.recon.align.normalize import Normalization, normalize_frames
from tiltstream.recon.align.pipeline import AlignParams, Alignment, align_series, apply_alignment
from tiltstream.recon.align.rotation import (
    RotationParams,
    axis_angle_from_bands,
    carry_alignment,
    rotate_shifts,
    specimen_track,
)
from tiltstream.recon.align.transform import transform_frames
from tiltstream.recon.align.xcorr import RegistrationFilter, register

__all__ = [
    "AlignParams",
    "Alignment",
    "AxisDirection",
    "LiveAlignParams",
    "LiveAligner",
    "LiveShift",
    "MatchingParams",
    "MatchingResult",
    "Normalization",
    "RegistrationFilter",
    "RotationParams",
    "align_series",
    "apply_alignment",
    "axis_angle_from_bands",
    "axis_drift",
    "carry_alignment",
    "centre_of_mass_drift",
    "estimate_axis_direction",
    "estimate_axis_offset",
    "neighbour_drift",
    "normalize_frames",
    "projection_matching",
    "reference_drift",
    "register",
    "rotate_shifts",
    "specimen_track",
    "split_gauge",
    "transform_frames",
]
