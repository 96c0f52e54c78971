"""The monitor's plot panels: tilt-angle coverage (polar) and residual/temperature/dose traces.

Importing this module imports Qt; ``import tiltstream.viz`` does not.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from tiltstream.viz.records import TRACE_LABELS, CoverageData, trace_group
from tiltstream.viz.theme import THEME, html

__all__ = ["CoveragePanel", "TracesPanel"]


class CoveragePanel(pg.GraphicsLayoutWidget):
    """Polar plot of the beam directions sampled so far (0° = beam along Z at zero tilt, up).

    Each received tilt is a spoke; spokes in the reconstruction window are bright, older ones dim,
    the newest is highlighted. The missing wedge (outside the tilt range) is hatched.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setBackground(THEME["panel"])
        self.ci.setContentsMargins(4, 4, 4, 4)
        self.title = self.ci.addLabel(html("<b>Tilt coverage</b>"), row=0, col=0, justify="left")
        self.vb = pg.ViewBox(lockAspect=True, enableMouse=False, enableMenu=False)
        self.ci.addItem(self.vb, row=1, col=0)
        self.footer = self.ci.addLabel("", row=2, col=0, justify="left")
        self.vb.setRange(xRange=(-1.22, 1.22), yRange=(-0.12, 1.16), padding=0)
        self._frame_items()
        self.old = pg.PlotCurveItem(pen=pg.mkPen(QtGui.QColor(THEME["old"]), width=1), connect="pairs")
        self.window = pg.PlotCurveItem(pen=pg.mkPen(QtGui.QColor(THEME["window"]), width=1.4), connect="pairs")
        self.newest = pg.PlotCurveItem(pen=pg.mkPen(QtGui.QColor(THEME["accent"]), width=3))
        self.newest_dot = pg.ScatterPlotItem(size=9, brush=pg.mkBrush(THEME["accent"]), pen=pg.mkPen(None))
        for item in (self.old, self.window, self.newest, self.newest_dot):
            self.vb.addItem(item)
        self.wedges: list[QtWidgets.QGraphicsPathItem] = []
        self._range: tuple[float, float] | None = None

    def _frame_items(self) -> None:
        t = np.radians(np.linspace(-90, 90, 181))
        rim = pg.PlotCurveItem(np.sin(t), np.cos(t), pen=pg.mkPen(THEME["dim"], width=1))
        base = pg.PlotCurveItem([-1, 1], [0, 0], pen=pg.mkPen(THEME["dim"], width=1))
        self.vb.addItem(rim)
        self.vb.addItem(base)
        for deg in range(-90, 91, 10):
            a = math.radians(deg)
            r0 = 1.0 if deg % 30 else 0.96
            tick = pg.PlotCurveItem([r0 * math.sin(a), 1.04 * math.sin(a)], [r0 * math.cos(a), 1.04 * math.cos(a)],
                                    pen=pg.mkPen(THEME["dim"], width=1))
            self.vb.addItem(tick)
            if deg % 30 == 0:
                label = pg.TextItem(f"{deg:+d}°" if deg else "0°", color=THEME["dim"], anchor=(0.5, 0.5))
                label.setPos(1.12 * math.sin(a), 1.10 * math.cos(a) if abs(deg) < 90 else -0.05)
                self.vb.addItem(label)

    def _set_wedges(self, sectors: tuple[tuple[float, float], ...]) -> None:
        for item in self.wedges:
            self.vb.removeItem(item)
        self.wedges = []
        for a0, a1 in sectors:
            path = QtGui.QPainterPath(QtCore.QPointF(0, 0))
            for a in np.radians(np.linspace(a0, a1, 32)):
                path.lineTo(math.sin(a), math.cos(a))
            path.closeSubpath()
            item = QtWidgets.QGraphicsPathItem(path)
            color = QtGui.QColor(THEME["wedge"])
            item.setPen(pg.mkPen(color, width=1))
            item.setBrush(QtGui.QBrush(color, QtCore.Qt.BrushStyle.BDiagPattern))
            item.setOpacity(0.75)
            self.vb.addItem(item)
            self.wedges.append(item)

    def set_coverage(self, cov: CoverageData) -> None:
        if cov.wedge_deg != self._range:
            self._range = cov.wedge_deg
            self._set_wedges(cov.wedge_deg)
        a = np.radians(cov.angles_deg)
        for curve, mask in ((self.old, ~cov.in_window), (self.window, cov.in_window)):
            sel = a[mask]
            xs = np.stack([np.zeros_like(sel), np.sin(sel)], axis=1).ravel()
            ys = np.stack([np.zeros_like(sel), np.cos(sel)], axis=1).ravel()
            curve.setData(xs, ys)
        if cov.newest_deg is not None:
            r = math.radians(cov.newest_deg)
            tip = (math.sin(r), math.cos(r))
            self.newest.setData([0, tip[0]], [0, tip[1]])
            self.newest_dot.setData([tip[0]], [tip[1]])
        n = cov.angles_deg.size
        n_win = int(cov.in_window.sum())
        of = f" of {cov.frames_total}" if cov.frames_total is not None and cov.frames_total > n else ""
        parts = [f"{n}{of} angles received"]
        if n_win < n:
            parts.append(f"<span style='color:{THEME['window']}'>{n_win} in window</span>")
        if cov.max_gap_deg is not None:
            parts.append(f"largest gap {cov.max_gap_deg:.1f}°")
        if cov.tilt_range_deg is not None:
            lo, hi = cov.tilt_range_deg
            parts.append(f"<span style='color:{THEME['wedge']}'>range {lo:+.0f}…{hi:+.0f}°</span>")
        self.footer.setText(html(" · ".join(parts), size="8pt"))
        newest = "" if cov.newest_deg is None else (
            f" &nbsp;<span style='color:{THEME['accent']}'>newest {cov.newest_deg:+.1f}°</span>")
        self.title.setText(html("<b>Tilt coverage</b> (beam directions)" + newest))


class TracesPanel(pg.GraphicsLayoutWidget):
    """Residual/loss, change (each new frame against the model, in noise units: it rises when the
    particle starts to transform), temperature and dose against stream time, with a marker at the
    shown time.

    The DIP's held-out scores (group ``"dip"``) share the loss plot's time axis but
    get their own y axis on the right, in the DIP's colour, shown once the stream carries them: they
    are on another scale than the SIRT residual, and a shared axis would flatten one or the other.
    """

    _GROUPS = (("loss", "Residual / loss"), ("change", "Change (new frame vs model, σ)"),
               ("temperature", "Temperature (°C)"), ("dose", "Dose (e⁻/Å²)"))
    _PENS = ("#4fb3ff", "#ffb000", "#3ecf6b", "#e056fd", "#ff7979")

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setBackground(THEME["panel"])
        self.ci.setContentsMargins(4, 2, 4, 2)
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.markers: list[pg.InfiniteLine] = []
        self.empty: dict[str, pg.TextItem] = {}
        for col, (group, title) in enumerate(self._GROUPS):
            p = self.ci.addPlot(row=0, col=col)
            p.setTitle(html(title, size="9pt"))
            p.showGrid(x=True, y=True, alpha=0.15)
            p.setLabel("bottom", "t (s)")
            for side in ("left", "bottom"):
                ax = p.getAxis(side)
                ax.setPen(pg.mkPen(THEME["dim"]))
                ax.setTextPen(pg.mkPen(THEME["dim"]))
            p.setMenuEnabled(False)
            p.setDownsampling(auto=True, mode="peak")  # long experiments: draw ~one point per pixel
            p.setClipToView(True)
            marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(THEME["accent"], width=1,
                                                                            style=QtCore.Qt.PenStyle.DashLine))
            marker.setVisible(False)
            p.addItem(marker, ignoreBounds=True)
            self.markers.append(marker)
            empty = pg.TextItem(f"no {group} in the stream yet", color=THEME["dim"], anchor=(0.5, 0.5))
            empty.setParentItem(p.vb)
            self.empty[group] = empty
            self.plots[group] = p
            p.vb.sigResized.connect(lambda *a, g=group: self._centre_empty(g))
        self.legend = self.plots["loss"].addLegend(offset=(-4, 4), labelTextColor=THEME["text"],
                                                   labelTextSize="8pt")
        self._dip_axis()

    def _dip_axis(self) -> None:
        """A second ViewBox over the loss plot, x-linked, with the right axis as its y axis."""
        p = self.plots["loss"]
        self.dip_vb = pg.ViewBox(enableMenu=False)
        self.dip_vb.setMouseEnabled(x=False, y=False)
        p.scene().addItem(self.dip_vb)
        self.dip_vb.setXLink(p.vb)
        right = p.getAxis("right")
        right.linkToView(self.dip_vb)
        right.setPen(pg.mkPen(THEME["dip"]))
        right.setTextPen(pg.mkPen(THEME["dip"]))
        right.setLabel(html("DIP", color=THEME["dip"], size="8pt"))
        right.enableAutoSIPrefix(False)  # an NRMSE of 0.02 reads 0.02, not 20 (×0.001)
        p.showAxis("right", False)

        def sync(*args: object) -> None:
            self.dip_vb.setGeometry(p.vb.sceneBoundingRect())
            self.dip_vb.linkedViewChanged(p.vb, self.dip_vb.XAxis)

        p.vb.sigResized.connect(sync)
        sync()

    def _centre_empty(self, group: str) -> None:
        r = self.plots[group].vb.rect()
        self.empty[group].setPos(r.width() / 2, r.height() / 2)

    def set_traces(self, traces: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        seen = set()
        for name, (t, v) in traces.items():
            group = trace_group(name) or "loss"
            label = TRACE_LABELS.get(name, (group, name))[1]
            curve = self.curves.get(name)
            if curve is None:
                curve = self.curves[name] = self._new_curve(name, group, label)
            curve.setData(t, v)
            seen.add("loss" if group == "dip" else group)
        for group, text in self.empty.items():
            text.setVisible(group not in seen)
            if group not in seen:
                self._centre_empty(group)

    def _new_curve(self, name: str, group: str, label: str) -> pg.PlotDataItem:
        n = sum(1 for k in self.curves if (trace_group(k) or "loss") == group)
        if group != "dip":
            pen = pg.mkPen(self._PENS[n % len(self._PENS)], width=1.6)
            return self.plots[group].plot(name=label, pen=pen)
        # DIP scores come once per estimate (every few seconds): a line with a dot per estimate
        color = QtGui.QColor(THEME["dip"])
        style = QtCore.Qt.PenStyle.SolidLine if n == 0 else QtCore.Qt.PenStyle.DashLine
        curve = pg.PlotDataItem(pen=pg.mkPen(color, width=1.6, style=style), symbol="o", symbolSize=5,
                                symbolBrush=pg.mkBrush(color), symbolPen=pg.mkPen(None))
        curve.setDownsampling(auto=True, method="peak")
        curve.setClipToView(True)
        self.dip_vb.addItem(curve)
        self.legend.addItem(curve, label)
        self.plots["loss"].showAxis("right", True)
        if n == 0:
            self.plots["loss"].getAxis("right").setLabel(html(label, color=THEME["dip"], size="8pt"))
        return curve

    def set_marker(self, t_s: float | None) -> None:
        for m in self.markers:
            m.setVisible(t_s is not None)
            if t_s is not None:
                m.setValue(t_s)

    def reset(self) -> None:
        """Empty every curve (a new series starts)."""
        for curve in self.curves.values():
            curve.setData([], [])
