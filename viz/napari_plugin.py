"""napari plugin (npe2, manifest ``napari.yaml`` beside this file; the ``[napari]`` extra).

* **Reader** (:func:`get_reader`) for ``.h5``/``.hdf5``/``.nxs``: a tiltstream 4-D result becomes an
  image layer (T, Z, Y, X) with the voxel size as scale (nm) and the result's times and provenance
  in its metadata; a recording (tiltstream or any NXtomo file) becomes a stack of frames (N, Y, U)
  with the tilt angles and times in its metadata. OME-Zarr results (``result.zarr``) are opened by
  napari-ome-zarr, not by this plugin.
* **Dock widget** "Live volume" (:class:`LiveVolumeWidget`): connects to a reconstruction service's
  PUB endpoint and shows its volumes as one layer with a time axis, the newest last. The network
  side is the monitor's :class:`~tiltstream.viz.receiver.StreamReceiver` (a background thread
  filling a :class:`~tiltstream.viz.model.ViewModel`); the GUI thread only takes references on a
  timer (:meth:`LiveVolumeFeed.refresh`), so it never waits on the network.

Importing this module imports neither napari nor Qt; the widget imports qtpy when it is made.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.stream.readers import HDF5_SUFFIXES
from tiltstream.viz.history import VolumeEntry

__all__ = ["get_reader", "read_result_layers", "read_recording_layers", "LiveVolumeFeed",
           "LiveVolumeWidget", "LIVE_LAYER", "DEFAULT_ENDPOINT"]

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
LIVE_LAYER = "tiltstream live"
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5557"  # tiltstream recon --pub default


def _unit(voxel_nm: float | None) -> str:
    """The space unit for napari: nanometer with a known voxel size, else pixel."""
    return "nanometer" if voxel_nm else "pixel"


# -- reader -------------------------------------------------------------------------------------
def _is_result(path: Path) -> bool:
    import h5py  # noqa: PLC0415

    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get("volumes"), h5py.Dataset)
    except OSError:
        return False


def get_reader(path: str | Sequence[str]) -> Callable[[str], list[LayerData]] | None:
    """npe2 reader: a function for a tiltstream result or recording (HDF5), else None."""
    if isinstance(path, (list, tuple)):
        return None  # one file at a time
    p = Path(os.fspath(path))
    if p.suffix.lower() not in HDF5_SUFFIXES or not p.is_file():
        return None
    return read_result_layers if _is_result(p) else read_recording_layers


def read_result_layers(path: str) -> list[LayerData]:
    """A 4-D result as one image layer (T, Z, Y, X): scale (mean time step s, voxel nm ×3)."""
    from tiltstream.stream.results import read_result, result_voxel_nm  # noqa: PLC0415
    from tiltstream.stream.zarr_results import ngff_transforms  # noqa: PLC0415 (no zarr import)

    volumes, times, attrs = read_result(path)
    voxel = result_voxel_nm(attrs)
    scale, translate = (tr[k] for tr, k in zip(ngff_transforms(times, voxel), ("scale", "translation")))
    unit = _unit(voxel)
    meta = {"times_s": times, "tiltstream": attrs}
    kwargs = {"name": Path(path).stem, "scale": scale, "translate": translate, "metadata": meta,
              "axis_labels": ("t", "z", "y", "x"), "units": ("second", unit, unit, unit)}
    return [(volumes, kwargs, "image")]


def read_recording_layers(path: str) -> list[LayerData]:
    """A recorded tilt series as one image layer (N, Y, U) of frames, angles and times in metadata."""
    from tiltstream.stream.readers import read_series  # noqa: PLC0415

    series = read_series(path)
    unit = _unit(series.pixel_nm)
    px = series.pixel_nm or 1.0
    meta = {"angles_deg": np.asarray(series.angles_deg), "times_s": np.asarray(series.times_s),
            "pixel_nm": series.pixel_nm, "tiltstream": dict(series.metadata)}
    kwargs = {"name": Path(path).stem, "scale": (1.0, px, px), "metadata": meta,
              "axis_labels": ("frame", "y", "u"), "units": ("pixel", unit, unit)}
    return [(np.asarray(series.frames), kwargs, "image")]


# -- live volume ---------------------------------------------------------------------------------
def _stack(entries: Sequence[VolumeEntry]) -> Any:
    """(T, Z, Y, X) lazy stack (dask, no copy) of the entries with the newest one's shape."""
    import dask.array as da  # noqa: PLC0415 (napari depends on dask)

    shape = entries[-1].data.shape
    same = [e for e in entries if e.data.shape == shape]
    return da.stack([da.from_array(e.data, chunks=shape) for e in same]), same


class LiveVolumeFeed:
    """Volumes published by a reconstruction service, as one napari image layer (T, Z, Y, X).

    Parameters
    ----------
    viewer : the napari viewer (anything with ``layers`` and ``add_image``, e.g. a ``ViewerModel``).
    endpoint : the service's PUB endpoint (``tiltstream recon --pub``).
    history : volumes kept on the time axis (the oldest are dropped).
    context, curve : ZeroMQ context and CURVE client settings, as for the monitor.

    :meth:`start` starts the receiver thread; call :meth:`refresh` from the GUI thread (a timer):
    it only takes references from the view model and never waits.
    """

    def __init__(self, viewer: Any, endpoint: str, *, history: int = 64, layer_name: str = LIVE_LAYER,
                 context: Any = None, curve: Any = None) -> None:
        from tiltstream.viz.model import ViewModel  # noqa: PLC0415
        from tiltstream.viz.receiver import StreamReceiver  # noqa: PLC0415
        from tiltstream.viz.records import ModelConfig  # noqa: PLC0415

        self.viewer = viewer
        self.endpoint = endpoint
        self.layer_name = layer_name
        self.model = ViewModel(ModelConfig(history_volumes=history, dip_volumes=history), recon_endpoint=endpoint)
        self.receiver = StreamReceiver(self.model, endpoint, context=context, curve=curve)
        self._version = -1
        self.times_s = np.zeros(0)

    def start(self) -> LiveVolumeFeed:
        self.receiver.start()
        return self

    def stop(self) -> None:
        self.receiver.stop()

    @property
    def layer(self) -> Any:
        """The live layer, or None before the first volume (or after the user removed it)."""
        return next((lay for lay in self.viewer.layers if lay.name == self.layer_name), None)

    def refresh(self) -> bool:
        """Put the newest volumes into the layer; True when it changed. Re-raises a receiver error."""
        self.receiver.maybe_raise()
        version = self.model.version
        if version == self._version:
            return False
        self._version = version
        entries = self.model.entries()
        if not entries:
            return False
        data, used = _stack(entries)
        self.times_s = np.array([e.t_s for e in used])
        voxel = used[-1].voxel_nm
        unit = _unit(voxel)
        scale = (1.0, *(3 * (voxel or 1.0,)))
        meta = {"times_s": self.times_s, "source": used[-1].source, "endpoint": self.endpoint}
        layer = self.layer
        if layer is None:
            self.viewer.add_image(data, name=self.layer_name, scale=scale, metadata=meta,
                                  axis_labels=("t", "z", "y", "x"), units=("second", unit, unit, unit))
            follow = True
        else:
            follow = int(self.viewer.dims.current_step[0]) >= layer.data.shape[0] - 1
            layer.data = data
            layer.scale = scale
            layer.metadata = meta
        if follow:  # on the newest volume: stay on the newest
            self.viewer.dims.set_current_step(0, data.shape[0] - 1)
        return True

    def status(self) -> str:
        """One line: endpoint, volumes on the time axis, newest time."""
        n = len(self.times_s)
        newest = f", newest t = {self.times_s[-1]:.1f} s" if n else ""
        return f"{self.endpoint}: {n} volume(s){newest}"


def _widget_class() -> type:
    """The dock widget's class, made on first use (Qt is imported only then)."""
    from qtpy.QtCore import QTimer  # noqa: PLC0415
    from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget  # noqa: PLC0415

    class LiveVolumeWidget(QWidget):
        """npe2 dock widget: an endpoint field, Connect/Disconnect, a status line (see :class:`LiveVolumeFeed`).

        The endpoint field starts with ``endpoint``; the layer is refreshed every ``interval_ms``.
        """

        def __init__(self, napari_viewer: Any, endpoint: str = DEFAULT_ENDPOINT, interval_ms: int = 250) -> None:
            super().__init__()
            self.setObjectName("tiltstream_live_volume")
            self.viewer = napari_viewer
            self.feed: LiveVolumeFeed | None = None
            self.endpoint = QLineEdit(endpoint)
            self.button = QPushButton("Connect")
            self.status = QLabel("not connected")
            self.status.setWordWrap(True)
            row = QHBoxLayout()
            row.addWidget(self.endpoint)
            row.addWidget(self.button)
            box = QVBoxLayout(self)
            box.addLayout(row)
            box.addWidget(self.status)
            box.addStretch(1)
            self.timer = QTimer(self)
            self.timer.setInterval(int(interval_ms))
            self.timer.timeout.connect(self.poll)
            self.button.clicked.connect(self.toggle)

        def toggle(self) -> None:
            if self.feed is None:
                self.connect_feed()
            else:
                self.disconnect_feed()

        def connect_feed(self) -> None:
            try:
                self.feed = LiveVolumeFeed(self.viewer, self.endpoint.text().strip()).start()
            except (ValueError, RuntimeError, OSError) as exc:
                self.feed = None
                self.status.setText(f"cannot connect: {exc}")
                return
            self.button.setText("Disconnect")
            self.endpoint.setEnabled(False)
            self.status.setText(f"{self.feed.endpoint}: waiting for volumes")
            self.timer.start()

        def disconnect_feed(self) -> None:
            self.timer.stop()
            feed, self.feed = self.feed, None
            if feed is not None:
                try:
                    feed.stop()
                except Exception as exc:  # noqa: BLE001 - shown; the widget stays usable
                    self.status.setText(f"receiver failed: {exc}")
                    log.warning("live volume receiver failed: %s", exc)
            self.button.setText("Connect")
            self.endpoint.setEnabled(True)

        def poll(self) -> None:
            if self.feed is None:
                return
            try:
                if self.feed.refresh():
                    self.status.setText(self.feed.status())
            except Exception as exc:  # noqa: BLE001 - a receiver error: say so, stop polling
                self.disconnect_feed()
                self.status.setText(f"receiver failed: {exc}")

        def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
            self.disconnect_feed()
            super().closeEvent(event)

    return LiveVolumeWidget


def __getattr__(name: str) -> Any:
    """``LiveVolumeWidget`` (the npe2 widget command) is made on first access, importing Qt then."""
    if name == "LiveVolumeWidget":
        cls = _widget_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
