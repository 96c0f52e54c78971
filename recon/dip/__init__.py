"""Deep-image-prior space-time reconstruction (after DIP-STER, Craig, Bals et al. 2026).

A small generator maps (time, tilt-axis position[, angle]) to (Z, X) slices; it is fitted, with no
training data, so that its projections match the measured frames. The volume can then be asked for
at any time::

    volumes, info = reconstruct_dip(frames, angles_deg, times_s, query_times_s, DipParams(steps=2000))
"""

from tiltstream.recon.dip.checkpoint import load_generator, read_checkpoint
from tiltstream.recon.dip.data import heldout_split
from tiltstream.recon.dip.fit import DipState, DipTrainer, default_query_times, reconstruct_dip
from tiltstream.recon.dip.model import DipGeometry, SpaceTimeGenerator, build_generator
from tiltstream.recon.dip.params import DipParams
from tiltstream.recon.dip.projection import frame_matrices, project_frames

__all__ = [
    "DipGeometry",
    "DipParams",
    "DipState",
    "DipTrainer",
    "SpaceTimeGenerator",
    "build_generator",
    "default_query_times",
    "frame_matrices",
    "heldout_split",
    "load_generator",
    "project_frames",
    "read_checkpoint",
    "reconstruct_dip",
]
