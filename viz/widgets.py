"""pyqtgraph panels of the monitor. They only draw: the state lives in :class:`~tiltstream.viz.model.ViewModel`.

Orientation (the same in every panel and in exported movies): images are shown with row 0 at the
top. XY shows X to the right and Y (the tilt axis) down, like the raw frames (U right, Y down). XZ
sits under XY and shares its X; YZ sits right of XY and shares its Y, so it shows Z to the right.
Panel coordinates are reference-grid voxels (see the model); the scale bar converts to nm.

Importing this module imports Qt; ``import tiltstream.viz`` does not.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from tiltstream.viz import _qtfix
from tiltstream.viz.colormaps import anchors, lut
from tiltstream.viz.plots import CoveragePanel, TracesPanel
from tiltstream.viz.records import SOURCES, FrameView, ViewData
from tiltstream.viz.slicing import histogram, percentile_levels
from tiltstream.viz.texts import SOURCE_LABELS
from tiltstream.viz.theme import THEME, html

__all__ = ["OrthoPanel", "FramePanel", "SourceSelector", "CoveragePanel", "TracesPanel"]

_qtfix.install()  # a no-op unless this PySide6 build has the None-refcount bug (see _qtfix)

_CROSS_PEN = pg.mkPen(QtGui.QColor(255, 176, 0, 200), width=1)
_CROSS_HOVER = pg.mkPen(QtGui.QColor(255, 210, 90), width=2)


def _nice_length(target: float) -> float:
    """1, 2 or 5 × 10^k closest below ``target``."""
    if not target > 0:
        return 1.0
    k = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**k <= target:
            return m * 10**k
    return 10**k


def _image_view(*, invert_y: bool = True) -> pg.ViewBox:
    return pg.ViewBox(lockAspect=True, invertY=invert_y, enableMenu=False, defaultPadding=0.0)


class _ScaleBar(pg.GraphicsObject):
    """A bar of ``length`` view units labelled ``text``, pinned to the bottom-left of its ViewBox."""

    def __init__(self, vb: pg.ViewBox) -> None:
        super().__init__()
        self.vb = vb
        self.setParentItem(vb)
        self.bar = QtWidgets.QGraphicsRectItem(self)
        self.bar.setPen(pg.mkPen(None))
        self.bar.setBrush(pg.mkBrush(THEME["text"]))
        self.label = pg.TextItem("", color=THEME["text"], anchor=(0.5, 1.0))
        self.label.setParentItem(self)
        self.length = 0.0
        vb.sigRangeChanged.connect(self._update)
        vb.sigResized.connect(self._update)

    def set_length(self, length: float, text: str) -> None:
        self.length = float(length)
        self.label.setText(text)
        self.setVisible(length > 0)
        self._update()

    def _update(self, *args: object) -> None:
        if self.length <= 0:
            return
        p0 = self.vb.mapViewToDevice(QtCore.QPointF(0, 0))
        p1 = self.vb.mapViewToDevice(QtCore.QPointF(self.length, 0))
        if p0 is None or p1 is None:
            return
        width = abs(p1.x() - p0.x())
        rect = self.vb.rect()
        x, y = 12.0, rect.height() - 12.0
        self.bar.setRect(x, y - 4, width, 4)
        self.label.setPos(x + width / 2, y - 6)

    def boundingRect(self) -> QtCore.QRectF:
        return QtCore.QRectF()

    def paint(self, *args: object) -> None:
        pass


class OrthoPanel(pg.GraphicsLayoutWidget):
    """XY, XZ and YZ slices with a linked, draggable crosshair and a histogram/LUT.

    Signals
    -------
    crosshairMoved(object) : (z, y, x) reference-grid floats (None for axes not moved) after a drag
        or click.
    levelsEdited(object) : (low, high) the user set by dragging the histogram region.
    """

    crosshairMoved = QtCore.Signal(object)
    levelsEdited = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setBackground(THEME["panel"])
        lay = self.ci
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(3)
        self.title_xy = lay.addLabel("", row=0, col=0, justify="left")
        self.title_yz = lay.addLabel("", row=0, col=1, justify="left")
        self.vb_xy, self.vb_yz, self.vb_xz = _image_view(), _image_view(), _image_view()
        lay.addItem(self.vb_xy, row=1, col=0)
        lay.addItem(self.vb_yz, row=1, col=1)
        self.title_xz = lay.addLabel("", row=2, col=0, justify="left")
        self.info = lay.addLabel("", row=2, col=1, rowspan=2, justify="left")
        lay.addItem(self.vb_xz, row=3, col=0)
        self.hist = pg.HistogramLUTItem(fillHistogram=True)
        self.hist.plot.setPen(pg.mkPen((200, 200, 200, 160)))
        self.hist.fillHistogram(True, color=(150, 160, 175, 80))
        self.hist.gradient.showTicks(False)
        self.hist.gradient.setAcceptedMouseButtons(QtCore.Qt.MouseButton.NoButton)
        self.hist.setFixedWidth(self._HIST_W)
        self.hist.region.setBrush(pg.mkBrush(255, 176, 0, 28))
        self.hist.axis.setPen(pg.mkPen(THEME["dim"]))
        self.hist.axis.setTextPen(pg.mkPen(THEME["dim"]))
        lay.addItem(self.hist, row=0, col=2, rowspan=4)

        self.images = {}
        for name, vb in (("xy", self.vb_xy), ("xz", self.vb_xz), ("yz", self.vb_yz)):
            img = pg.ImageItem(axisOrder="row-major")
            img.setAutoDownsample(False)
            vb.addItem(img)
            self.images[name] = img
        # Crosshair: XY shows (x, y); XZ shows (x, z); YZ shows (z, y).
        self.lines = {
            "xy": (self._line(self.vb_xy, 90, "x"), self._line(self.vb_xy, 0, "y")),
            "xz": (self._line(self.vb_xz, 90, "x"), self._line(self.vb_xz, 0, "z")),
            "yz": (self._line(self.vb_yz, 90, "z"), self._line(self.vb_yz, 0, "y")),
        }
        for vb in (self.vb_xy, self.vb_xz, self.vb_yz):
            vb.setMouseEnabled(x=False, y=False)  # drag the crosshair, click to move it; no pan/zoom
            vb.sigResized.connect(self._fit_ranges)
        self.scalebar = _ScaleBar(self.vb_xy)
        self._shape: tuple[int, int, int] | None = None
        self._crosshair: tuple[int, int, int] | None = None
        self._texts: dict[int, str] = {}
        self._syncing = False
        self._setting_levels = False
        self._colormap: str | None = None
        self.hist.sigLevelChangeFinished.connect(self._on_hist_levels)
        self.scene().sigMouseClicked.connect(self._on_click)

    # -- geometry --------------------------------------------------------------------------------
    def _line(self, vb: pg.ViewBox, angle: float, axis: str) -> pg.InfiniteLine:
        line = pg.InfiniteLine(angle=angle, movable=True, pen=_CROSS_PEN, hoverPen=_CROSS_HOVER)
        line.axis = axis
        line.sigPositionChanged.connect(self._on_line)
        vb.addItem(line, ignoreBounds=True)
        return line

    def set_geometry(self, shape: tuple[int, int, int], voxel_nm: float | None) -> None:
        """Lay the views out for a reference grid of ``shape`` (Z, Y, X) voxels of ``voxel_nm`` nm."""
        if shape == self._shape:
            return
        self._shape = shape
        nz, ny, nx = shape
        self._fit_layout()
        self._fit_ranges()
        for (a, b), (na, nb) in zip(self.lines.values(), ((nx, ny), (nx, nz), (nz, ny))):
            a.setBounds((0, na))
            b.setBounds((0, nb))
        if voxel_nm:
            length_nm = _nice_length(0.25 * nx * voxel_nm)
            self.scalebar.set_length(length_nm / voxel_nm, f"{length_nm:g} nm")
        else:
            self.scalebar.set_length(0, "")

    _TITLE_H = 20
    _HIST_W = 110

    def _fit_layout(self) -> None:
        """Size the cells so XY, YZ and XZ share one pixel scale and line up (XZ under XY, YZ beside)."""
        shape = getattr(self, "_shape", None)
        if shape is None:
            return
        nz, ny, nx = shape
        grid = self.ci.layout
        spacing = grid.horizontalSpacing() if grid.horizontalSpacing() >= 0 else 3
        w = self.width() - 8 - self._HIST_W - 2 * spacing - 4
        h = self.height() - 8 - 2 * self._TITLE_H - 3 * spacing - 4
        s = max(0.1, min(w / (nx + nz), h / (ny + nz)))
        grid.setColumnFixedWidth(0, s * nx)
        grid.setColumnFixedWidth(1, s * nz)
        grid.setRowFixedHeight(0, self._TITLE_H)
        grid.setRowFixedHeight(1, s * ny)
        grid.setRowFixedHeight(2, self._TITLE_H)
        grid.setRowFixedHeight(3, s * nz)

    def _fit_ranges(self, *args: object) -> None:
        """Show each slice whole (called again whenever a view is resized)."""
        shape = getattr(self, "_shape", None)
        if shape is None:
            return
        nz, ny, nx = shape
        self.vb_xy.setRange(xRange=(0, nx), yRange=(0, ny), padding=0)
        self.vb_xz.setRange(xRange=(0, nx), yRange=(0, nz), padding=0)
        self.vb_yz.setRange(xRange=(0, nz), yRange=(0, ny), padding=0)

    def preferred_width(self) -> int | None:
        """Width at which the slices fill this panel's height exactly (None before any data)."""
        shape = getattr(self, "_shape", None)
        if shape is None:
            return None
        nz, ny, nx = shape
        h = self.height() - 8 - 2 * self._TITLE_H - 3 * 3 - 4
        s = h / (ny + nz)
        return int(s * (nx + nz) + self._HIST_W + 8 + 2 * 3 + 6)

    def resizeEvent(self, ev: QtGui.QResizeEvent) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(ev)
        self._fit_layout()

    # -- drawing ---------------------------------------------------------------------------------
    def set_view(self, view: ViewData, levels: tuple[float, float] | None) -> None:
        """Draw ``view``'s slices (with ``levels``) and move the crosshair to its position."""
        _qtfix.top_up()
        sz, sy, sx = view.scale
        kw = {"autoLevels": False} if levels is None else {"autoLevels": False, "levels": levels}
        transforms = {"xy": QtGui.QTransform.fromScale(sx, sy), "xz": QtGui.QTransform.fromScale(sx, sz),
                      "yz": QtGui.QTransform(0, sy, sz, 0, 0, 0)}  # YZ: (row Z, col Y) -> (x = Z, y = Y)
        for name, img in self.images.items():
            img.setImage(getattr(view, name), **kw)
            img.setTransform(transforms[name])
        if view.crosshair != self._crosshair:
            self.set_crosshair(view.crosshair)
        self._titles(view)

    def _set_label(self, label: pg.LabelItem, html: str) -> None:
        if self._texts.get(id(label)) != html:  # re-layout of rich text is not free: only on change
            self._texts[id(label)] = html
            label.setText(html)

    def _titles(self, view: ViewData) -> None:
        cz, cy, cx = view.crosshair
        nz, ny, nx = self._shape or (0, 0, 0)
        slab = f" · slab {view.slab}" if view.slab > 1 else ""
        dip = view.source == "dip"
        tag = f" &nbsp;<b style='color:{THEME['dip']}'>DIP</b>" if dip else ""
        self._set_label(self.title_xy, html(f"<b>XY</b>  z = {cz}/{nz}{slab}{tag}", size="9pt"))
        self._set_label(self.title_yz, html(f"<b>YZ</b>  x = {cx}/{nx}{tag}", size="9pt"))
        self._set_label(self.title_xz, html(f"<b>XZ</b>  y = {cy}/{ny}{tag}", size="9pt"))
        if dip:
            where = "" if view.position is None else f" · time point {view.position[0]}/{view.position[1]}"
            what = (html("DIP space-time estimate", color=THEME["dip"], bold=True) + "<br>"
                    + html(f"fitted to {view.n_frames_used} frames{where}", color=THEME["dim"]))
        else:
            kind = "live slices" if view.live else "volume"
            what = html(f"{view.source} {kind} #{view.seq}", color=THEME["dim"])
        info = (html(f"t = {view.t_s:.1f} s", bold=True, size="11pt") + "<br>" + what + "<br>"
                + html("XY: x →, y ↓ (tilt axis) &nbsp;·&nbsp; XZ: z ↓ &nbsp;·&nbsp; YZ: z →",
                        color=THEME["dim"], size="8pt"))
        self._set_label(self.info, info)

    def set_crosshair(self, crosshair: tuple[int, int, int]) -> None:
        self._crosshair = crosshair
        cz, cy, cx = (c + 0.5 for c in crosshair)
        self._syncing = True
        try:
            pos = {"x": cx, "y": cy, "z": cz}
            for a, b in self.lines.values():
                a.setValue(pos[a.axis])
                b.setValue(pos[b.axis])
        finally:
            self._syncing = False

    def set_levels(self, levels: tuple[float, float] | None) -> None:
        """Apply ``levels`` to the three images and the histogram region."""
        if levels is None:
            return
        for img in self.images.values():
            img.setLevels(levels)
        self._setting_levels = True
        try:
            self.hist.setLevels(*levels)
        finally:
            self._setting_levels = False

    def set_colormap(self, name: str) -> None:
        if name == self._colormap:
            return
        self._colormap = name
        table = lut(name)
        for img in self.images.values():
            img.setLookupTable(table)
        pos, colors = anchors(name)
        self.hist.gradient.setColorMap(pg.ColorMap(pos, colors))

    def update_histogram(self, view: ViewData, levels: tuple[float, float] | None) -> None:
        """Recompute the histogram of the shown slices (callers rate-limit this)."""
        if levels is None:
            return
        lo, hi = levels
        pad = 0.5 * (hi - lo)
        data = (view.xy, view.xz, view.yz)
        full = percentile_levels(data, 0.0, 100.0)
        rng = (min(lo - pad, full[0]), max(hi + pad, full[1])) if full else (lo - pad, hi + pad)
        centres, counts = histogram(data, bins=160, value_range=rng)
        if centres.size:
            self.hist.plot.setData(centres, np.log1p(counts))
            self.hist.setHistogramRange(rng[0], rng[1], padding=0.02)
        self.set_levels(levels)

    # -- interaction -----------------------------------------------------------------------------
    def _on_line(self, line: pg.InfiniteLine) -> None:
        if self._syncing:
            return
        self.crosshairMoved.emit(tuple(float(line.value()) if axis == line.axis else None for axis in "zyx"))

    def _on_click(self, ev) -> None:  # noqa: ANN001 (pyqtgraph mouse event)
        if ev.button() != QtCore.Qt.MouseButton.LeftButton or ev.double():
            return
        pos = ev.scenePos()
        for name, vb in (("xy", self.vb_xy), ("xz", self.vb_xz), ("yz", self.vb_yz)):
            if vb.sceneBoundingRect().contains(pos):
                p = vb.mapSceneToView(pos)
                a, b = p.x(), p.y()
                move = {"xy": (None, b, a), "xz": (b, None, a), "yz": (a, b, None)}[name]
                self.crosshairMoved.emit(move)
                return

    def _on_hist_levels(self, *args: object) -> None:
        if self._setting_levels:
            return
        lo, hi = self.hist.getLevels()
        if hi > lo:
            for img in self.images.values():
                img.setLevels((lo, hi))
            self.levelsEdited.emit((float(lo), float(hi)))

    def panel_rect(self, name: str) -> QtCore.QRect:
        """Where the image of panel ``name`` (``"xy"``, ``"xz"``, ``"yz"``) is, in this widget's pixels."""
        img = self.images[name]
        scene_rect = img.mapRectToScene(img.boundingRect())
        return self.mapFromScene(scene_rect).boundingRect()


class FramePanel(pg.GraphicsLayoutWidget):
    """The latest raw frame (Y down, U right) with its angle, time, seq, dose and temperature."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setBackground(THEME["panel"])
        self.ci.setContentsMargins(4, 4, 4, 4)
        self.title = self.ci.addLabel(html("<b>Raw frame</b> &nbsp; waiting…"), row=0, col=0, justify="left")
        self.vb = _image_view()
        self.ci.addItem(self.vb, row=1, col=0)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.image)
        self.axis_hint = pg.TextItem("", color=THEME["dim"], anchor=(0, 0))
        self.axis_hint.setParentItem(self.vb)
        self.axis_hint.setPos(6, 4)
        self._shape: tuple[int, ...] | None = None

    def set_frame(self, frame: FrameView) -> None:
        levels = percentile_levels(frame.data, 0.5, 99.8) or (0.0, 1.0)
        self.image.setImage(frame.data, autoLevels=False, levels=levels)
        if frame.data.shape != self._shape:
            self._shape = frame.data.shape
            self.vb.setRange(xRange=(0, frame.data.shape[1]), yRange=(0, frame.data.shape[0]), padding=0)
        parts = [f"<b>Raw frame</b> #{frame.seq}",
                 f"<b style='color:{THEME['accent']}'>θ = {frame.angle_deg:+.1f}°</b>",
                 f"t = {frame.t_s:.2f} s"]
        if frame.dose_e_per_A2 is not None:
            parts.append(f"dose {_si(frame.dose_e_per_A2)} e⁻/Å²")
        if frame.temperature_C is not None:
            parts.append(f"{frame.temperature_C:.0f} °C")
        self.title.setText(html(" &nbsp;·&nbsp; ".join(parts)))
        self.axis_hint.setText("tilt axis ↕")

    def panel_rect(self) -> QtCore.QRect:
        scene_rect = self.image.mapRectToScene(self.image.boundingRect())
        return self.mapFromScene(scene_rect).boundingRect()


class SourceSelector(QtWidgets.QWidget):
    """Two exclusive buttons, "SIRT live | DIP", choosing the reconstruction shown; hidden until
    :meth:`set_state` says a DIP estimate is there.

    Signals
    -------
    sourceChosen(str) : the operator clicked ``"sirt"`` or ``"dip"``.
    """

    sourceChosen = QtCore.Signal(str)

    TIPS = {
        "sirt": "Streaming SIRT: updated with every frame (sliding window); the slider runs over its history",
        "dip": "Deep-image-prior space-time estimate, refined in the background over the whole series; "
               "the slider runs over the time points of its newest estimate",
    }

    def __init__(self, shown: str = "sirt", parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.group = QtWidgets.QButtonGroup(self)
        self.group.setExclusive(True)
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        for i, name in enumerate(SOURCES):
            b = QtWidgets.QPushButton(SOURCE_LABELS[name])
            b.setCheckable(True)
            b.setToolTip(self.TIPS[name])
            b.setChecked(name == shown)
            color = THEME[name]
            side = "left" if i == 0 else "right"
            b.setStyleSheet(
                f"QPushButton {{ background: #262a30; color: {THEME['dim']}; border: 1px solid #3a3f47;"
                f" padding: 3px 10px; border-radius: 0px; border-top-{side}-radius: 3px;"
                f" border-bottom-{side}-radius: 3px; }}"
                f"QPushButton:checked {{ background: {color}; color: #101214; border-color: {color}; }}")
            b.clicked.connect(lambda _=False, n=name: self.sourceChosen.emit(n))
            self.group.addButton(b)
            self.buttons[name] = b
            lay.addWidget(b)
        self.setVisible(False)

    def set_state(self, available: bool, shown: str) -> None:
        """Visible when a DIP estimate is ``available``; the button of the reconstruction ``shown`` checked."""
        if self.isHidden() == available:
            self.setVisible(available)
        for name, button in self.buttons.items():
            if button.isChecked() != (name == shown):
                with QtCore.QSignalBlocker(button):
                    button.setChecked(name == shown)


def _si(value: float) -> str:
    if value >= 1e4:
        return f"{value / 1e3:.0f} k"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"
