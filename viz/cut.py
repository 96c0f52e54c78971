"""Where the slices are cut: the reference grid, the crosshair and slab on it, the service's live slices.

:class:`CutState` has no lock and no Qt: the :class:`~tiltstream.viz.model.ViewModel` calls it under
its lock, and :func:`compose_view` (array work) outside it. See the model's module docstring for the
reference grid and follow-live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tiltstream.stream.messages import SlicesMsg, VolumeMsg
from tiltstream.viz.history import VolumeEntry
from tiltstream.viz.records import ViewData
from tiltstream.viz.slicing import SliceBuffers, cut_slices, grid_index

__all__ = ["CutState", "CutRequest", "compose_view"]

#: Reference-grid priority: the service's full-resolution slices, else its SIRT volumes, else DIP volumes.
_REF_SLICES, _REF_VOLUME, _REF_DIP = 2, 1, 0


@dataclass(frozen=True)
class CutRequest:
    """Everything :func:`compose_view` needs, taken at one instant under the model's lock."""

    shape: tuple[int, int, int]
    crosshair: tuple[int, int, int]
    slab: int
    live: tuple[SlicesMsg, float] | None
    entry: VolumeEntry | None
    source: str
    follow_live: bool
    position: tuple[int, int] | None


class CutState:
    """Reference grid (Z, Y, X) and its voxel size, crosshair, slab, and the newest live slices."""

    def __init__(self) -> None:
        self.slab = 1
        self.reset()

    def reset(self) -> None:
        """A new series: no grid, no crosshair, no live slices (the slab stays)."""
        self._rank = -1
        self.shape: tuple[int, int, int] | None = None
        self.voxel_nm: float | None = None
        self.crosshair: tuple[int, int, int] | None = None
        self.moved = False
        self.live: tuple[SlicesMsg, float] | None = None

    def _set_reference(self, shape: tuple[int, int, int], voxel_nm: float | None, rank: int) -> None:
        if rank < self._rank:
            return
        self._rank = rank
        if self.shape != shape:
            old = self.shape
            if self.crosshair is None or old is None:
                self.crosshair = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
            else:
                self.crosshair = tuple(  # type: ignore[assignment]
                    min(n - 1, int((c + 0.5) * n / o)) for c, n, o in zip(self.crosshair, shape, old)
                )
            self.shape = shape
        self.voxel_nm = voxel_nm

    def on_volume(self, msg: VolumeMsg) -> None:
        self._set_reference(tuple(msg.data.shape), msg.voxel_nm, _REF_DIP if msg.source == "dip" else _REF_VOLUME)

    def on_slices(self, msg: SlicesMsg, now: float) -> None:
        self.live = (msg, now)
        shape = (int(msg.xz.shape[0]), int(msg.xy.shape[0]), int(msg.xy.shape[1]))
        self._set_reference(shape, msg.voxel_nm, _REF_SLICES)
        if not self.moved:  # until the operator moves it, follow the service's cut
            self.crosshair = tuple(int(i) for i in msg.index)  # type: ignore[assignment]

    def move(self, z: float | None, y: float | None, x: float | None) -> None:
        """Move the crosshair to reference-grid voxel coordinates (floats are floored, then clipped)."""
        if self.shape is None or self.crosshair is None:
            return
        self.crosshair = tuple(  # type: ignore[assignment]
            old if value is None else min(max(int(math.floor(value)), 0), n - 1)
            for value, old, n in zip((z, y, x), self.crosshair, self.shape)
        )
        self.moved = True

    def set_slab(self, planes: int) -> None:
        """Average ``planes`` (≥ 1) neighbouring planes in each panel."""
        if int(planes) < 1:
            raise ValueError(f"slab: expected at least 1 plane, got {planes}")
        self.slab = int(planes)


def compose_view(req: CutRequest, buffers: SliceBuffers) -> ViewData | None:
    """The slices to draw for ``req``: the service's live slices when following live at their cut
    with a slab of 1 (and they are not older than the volume), else a cut of ``req.entry``."""
    cross, entry = req.crosshair, req.entry
    if req.live is not None and req.follow_live and req.slab == 1:
        msg, received = req.live
        if tuple(msg.index) == cross and (entry is None or msg.seq >= entry.seq):
            return ViewData(xy=msg.xy, xz=msg.xz, yz=msg.yz, index=cross, scale=(1.0, 1.0, 1.0),
                            crosshair=cross, slab=1, live=True, seq=int(msg.seq), t_s=float(msg.t_s),
                            source=msg.source, received_s=received, key=("live", msg.seq, cross))
    if entry is None:
        return None
    shape = entry.data.shape
    index = grid_index(cross, shape, req.shape)
    scale = tuple(n / m for n, m in zip(req.shape, shape))
    xy, xz, yz = cut_slices(entry.data, index, req.slab, buffers=buffers)
    key = ("volume", req.source, entry.seq, index, req.slab, shape)
    return ViewData(xy=xy, xz=xz, yz=yz, index=index, scale=scale, crosshair=cross,  # type: ignore[arg-type]
                    slab=req.slab, live=False, seq=entry.seq, t_s=entry.t_s, source=entry.source,
                    received_s=entry.received_s, key=key, n_frames_used=entry.n_frames_used, position=req.position)
