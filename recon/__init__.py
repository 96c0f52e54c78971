"""Reconstruction: geometry, projectors, FBP, SIRT (batch, windowed, streaming), DIP, alignment."""

from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry, projection_geometry, volume_geometry
from tiltstream.recon.projector import (
    Projector,
    available_backends,
    operator,
    resolve_device,
)

__all__ = [
    "ProjectionGeometry",
    "VolumeGeometry",
    "projection_geometry",
    "volume_geometry",
    "Projector",
    "available_backends",
    "operator",
    "resolve_device",
]
