"""Folder watch: frames that acquisition software writes as files, one frame per file, as a stream.

:class:`FolderWatcher` polls a folder for files matching ``pattern`` (TIFF ``.tif``/``.tiff`` or
MRC ``.mrc``/``.mrcs``/``.st``, one 2-D frame each) and sends each complete file exactly once, in
order of appearance (files that appear in the same poll: by modification time, then name).

**Complete** means: its size and modification time have not changed for ``settle_s`` seconds and
it reads as a whole image (:func:`tiltstream.stream.readers.read_image`: a truncated TIFF/MRC fails
to read). A file that is still unreadable
after settling is reported (logged with the reason) and skipped; if it changes later it is looked
at again. A file that changes after it was sent is not sent again.

**Angle** (``angle_from``):

* ``"sidecar"``: a file beside the frame with the same stem, ``frame_0001.json`` or
  ``frame_0001.txt`` (also ``frame_0001.tif.json``/``.txt``). JSON: an object with ``angle_deg``
  and optionally ``t_s``, ``exposure_s``, ``dose_e_per_A2``, ``temperature_C``, ``stage_xyz``,
  ``focus_index``, ``pixel_nm``. Text: the same keys as ``key = value`` (or ``key: value``) lines,
  ``#`` comments allowed, or just the angle as the only number. SerialEM's per-frame files come with
  their own ``frame_0001.mrc.mdoc`` (or ``frame_0001.mdoc``): its one ``[ZValue = 0]`` section gives
  the angle, ``TimeStamp``/``DateTime`` (as seconds after the first frame's), exposure, dose and
  pixel size (:mod:`tiltstream.stream.serialem`; needs ``mdocfile``). A frame waits up to
  ``sidecar_wait_s`` for its sidecar, then is reported and skipped.
* ``"filename"``: the angle is read from the file name (without its extension), see
  :func:`angle_from_name`: a number followed by ``deg`` (``tilt_+12.50deg_0007.tif`` → 12.5), else
  the one number that has an explicit sign or a decimal point and does not touch other digits or
  dots (``series_0007_-3.2.tif`` → −3.2, ``scan_12.5.tif`` → 12.5). A plain unsigned integer
  (``frame_0007``) is an index, never an angle. No or several candidates: reported and skipped.

**Time**: ``t_s`` from the sidecar, else the file's modification time in seconds after that of the
first frame sent. The exposure is the sidecar's ``exposure_s``, else ``exposure_s`` (0 = unknown).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.acquire.publisher import FRAME_EXTRA_FIELDS, FramePublisher, publisher_for
from tiltstream.acquire.sinks import Sink
from tiltstream.stream.errors import FileFormatError
from tiltstream.stream.readers import read_image

__all__ = ["FolderWatcher", "angle_from_name", "read_sidecar", "ANGLE_DEG_RE", "ANGLE_NUMBER_RE"]

logger = logging.getLogger(__name__)

#: A number directly followed by "deg" ("+12.50deg", "-3deg", "7.5 degrees"), not glued to digits before.
ANGLE_DEG_RE = re.compile(r"(?<![\d.])([-+]?\d+(?:\.\d+)?)\s*deg(?:rees?)?(?![a-z])", re.IGNORECASE)
#: A number with an explicit sign or a decimal point ("-3.2", "+5", "12.5"), not touching digits or dots.
ANGLE_NUMBER_RE = re.compile(r"(?<![\d.])([-+]\d+(?:\.\d+)?|\d+\.\d+)(?![\d.])")

_KEY_VALUE_RE = re.compile(r"^([A-Za-z_]\w*)\s*[=:]\s*(.*)$")
_SIDECAR_SUFFIXES = (".json", ".txt", ".mdoc")
_SIDECAR_KEYS = {"angle_deg", "t_s", "exposure_s", "dose_e_per_A2", "temperature_C", *FRAME_EXTRA_FIELDS}
_TIFF = (".tif", ".tiff")
_MRC = (".mrc", ".mrcs", ".st")


def angle_from_name(name: str) -> float:
    """Tilt angle (degrees) in a file name; ValueError saying why there is none."""
    stem = Path(name).stem if Path(name).suffix.lower() in _TIFF + _MRC else Path(name).name
    for regex, what in ((ANGLE_DEG_RE, "numbers followed by 'deg'"), (ANGLE_NUMBER_RE, "signed/decimal numbers")):
        found = {float(m.group(1)) for m in regex.finditer(stem)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            raise ValueError(f"ambiguous angle in file name {name!r}: {what} {sorted(found)}")
    raise ValueError(
        f"no angle in file name {name!r} (expected e.g. 'tilt_+12.50deg_0007.tif' or 'series_0007_-3.2.tif'; "
        "an unsigned integer is taken as an index)"
    )


def read_sidecar(path: Path) -> dict[str, Any]:
    """Fields of a ``.json``, ``.txt`` or SerialEM ``.mdoc`` sidecar (``angle_deg`` required); ValueError if unusable.

    An ``.mdoc`` gives ``timestamp_s`` (absolute) instead of ``t_s``.
    """
    if Path(path).suffix.lower() == ".mdoc":
        from tiltstream.stream.serialem import mdoc_frame_fields  # noqa: PLC0415

        return mdoc_frame_fields(Path(path))
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    fields: dict[str, Any]
    if Path(path).suffix.lower() == ".json":
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"sidecar {path.name}: expected JSON, got a parse error ({exc})") from None
        if not isinstance(fields, dict):
            raise ValueError(f"sidecar {path.name}: expected a JSON object, got {type(fields).__name__}")
    else:
        fields = {}
        lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        if len(lines) == 1 and not re.search(r"[=:]", lines[0]):
            fields["angle_deg"] = lines[0]
        else:
            for ln in lines:
                match = _KEY_VALUE_RE.match(ln)
                if match is None:
                    raise ValueError(f"sidecar {path.name}: expected 'key = value' lines, got {ln!r}")
                fields[match.group(1)] = match.group(2).strip()
    if "angle_deg" not in fields and "angle" in fields:
        fields["angle_deg"] = fields.pop("angle")
    if "angle_deg" not in fields:
        raise ValueError(f"sidecar {path.name}: expected an angle_deg entry, found keys {sorted(fields)}")
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in _SIDECAR_KEYS:
            continue  # other entries are the acquisition software's business
        if key in ("stage_xyz", "tilt_range_deg"):
            items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
            out[key] = tuple(_number(path, key, v) for v in items)
        elif key == "focus_index":
            out[key] = int(_number(path, key, value))
        else:
            out[key] = _number(path, key, value)
    return out


def _number(path: Path, key: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"sidecar {path.name}: {key}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"sidecar {path.name}: {key}: expected a finite number, got {value!r}")
    return out


@dataclass
class _Pending:
    path: Path
    signature: tuple[int, int]  # (size in bytes, mtime in ns)
    changed_at: float  # monotonic time the signature last changed


class FolderWatcher:
    """Turns frame files appearing in a folder into a stream (see the module docstring).

    Parameters
    ----------
    folder : the folder to watch (not its subfolders).
    sink : a sink, endpoint string(s), a list of them, or a FramePublisher.
    pattern : glob pattern(s) of frame files, e.g. ``"*.tif"`` or ``("*.tif", "*.mrc")``.
    angle_from : ``"sidecar"`` or ``"filename"``.
    poll_s : time between scans, s.
    settle_s : a file counts as complete when unchanged this long, s.
    sidecar_wait_s : how long a complete frame waits for its sidecar, s.
    exposure_s : exposure when the sidecar gives none, s (0 = unknown).
    pixel_nm, scheme, tilt_range_deg, experiment : for ``start/1``.
    tilt_axis_angle_deg : in-plane tilt-axis angle of the stored frames (IMOD convention, see
        :mod:`tiltstream.stream.orient`); frames are rotated so it runs along the rows.
    include_existing : also stream files already in the folder when the watcher is made.
    send_timeout_s : longest wait for a lossless sink to take one message, s (None: no limit).
    clock : monotonic clock, s.

    Attributes
    ----------
    sent : paths sent, in order.
    rejected : path -> reason, for files reported and skipped.
    publisher : the :class:`~tiltstream.acquire.publisher.FramePublisher` in use.
    """

    def __init__(
        self,
        folder: str | Path,
        sink: Sink | str | Sequence[Sink | str] | FramePublisher,
        *,
        pattern: str | Sequence[str] = "*.tif",
        angle_from: str = "sidecar",
        poll_s: float = 0.2,
        settle_s: float = 0.5,
        sidecar_wait_s: float = 5.0,
        exposure_s: float = 0.0,
        pixel_nm: float | None = None,
        scheme: str = "unknown",
        tilt_range_deg: tuple[float, float] | None = None,
        tilt_axis_angle_deg: float = 0.0,
        include_existing: bool = True,
        experiment: Mapping[str, Any] | None = None,
        send_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"folder: expected an existing folder, got {str(folder)!r}")
        if angle_from not in ("sidecar", "filename"):
            raise ValueError(f"angle_from: expected 'sidecar' or 'filename', got {angle_from!r}")
        for name, value in (("poll_s", poll_s), ("settle_s", settle_s), ("sidecar_wait_s", sidecar_wait_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected seconds >= 0, got {value}")
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        self.angle_from = angle_from
        self.poll_s, self.settle_s, self.sidecar_wait_s = float(poll_s), float(settle_s), float(sidecar_wait_s)
        self.exposure_s = float(exposure_s)
        self.tilt_axis_angle_deg = float(tilt_axis_angle_deg)
        self.clock = clock
        metadata = {"source": "tiltstream.acquire.FolderWatcher", "folder": str(self.folder.resolve()),
                    "pattern": self.patterns, "angle_from": angle_from, **dict(experiment or {})}
        self.publisher, self._owns_publisher = publisher_for(
            sink, metadata, pixel_nm=pixel_nm, scheme=scheme, tilt_range_deg=tilt_range_deg, exposure_s=exposure_s,
            send_timeout_s=send_timeout_s,
        )
        self.sent: list[Path] = []
        self.rejected: dict[Path, str] = {}
        self._sent_changed: set[Path] = set()
        self._sent_sig: dict[Path, tuple[int, int]] = {}
        self._rejected_sig: dict[Path, tuple[int, int]] = {}
        self._pending: list[_Pending] = []
        self._ignored: set[Path] = set() if include_existing else {p for p, _ in self._scan()}
        self._mtime_ref_ns: int | None = None
        self._stamp_ref_s: float | None = None

    # -- scanning --------------------------------------------------------------------------------
    def _scan(self) -> list[tuple[Path, tuple[int, int]]]:
        found: dict[Path, tuple[int, int]] = {}
        for pattern in self.patterns:
            for path in self.folder.glob(pattern):
                if path.name.startswith(".") or path.suffix.lower() in _SIDECAR_SUFFIXES:
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue  # vanished between listing and stat
                if path.is_file():
                    found[path] = (st.st_size, st.st_mtime_ns)
        return sorted(found.items(), key=lambda item: (item[1][1], _natural_key(item[0].name)))

    def _update(self, now: float) -> None:
        pending = {p.path: p for p in self._pending}
        for path, sig in self._scan():
            if path in self._ignored:
                continue
            if path in self._sent_sig:
                if path not in self._sent_changed and sig != self._sent_sig[path]:
                    self._sent_changed.add(path)
                    logger.info("%s changed after it was sent; it is not sent again", path)
                continue
            if self._rejected_sig.get(path) == sig:
                continue
            entry = pending.get(path)
            if entry is None:
                self._rejected_sig.pop(path, None)
                self._pending.append(_Pending(path, sig, now))
            elif entry.signature != sig:
                entry.signature, entry.changed_at = sig, now

    def _reject(self, entry: _Pending, reason: str) -> None:
        self._pending.remove(entry)
        self._rejected_sig[entry.path] = entry.signature
        self.rejected[entry.path] = reason
        logger.warning("%s: not streamed: %s", entry.path, reason)

    def _sidecar(self, path: Path) -> Path | None:
        for base in (path.with_suffix(""), path):
            for suffix in _SIDECAR_SUFFIXES:
                candidate = base.with_name(base.name + suffix)
                if candidate.is_file():
                    return candidate
        return None

    def _fields(self, entry: _Pending, now: float) -> dict[str, Any] | None:
        """Angle and other per-frame fields; None to wait; raises ValueError to reject."""
        if self.angle_from == "filename":
            return {"angle_deg": angle_from_name(entry.path.name)}
        sidecar = self._sidecar(entry.path)
        waited = now - entry.changed_at - self.settle_s
        if sidecar is None:
            if waited < self.sidecar_wait_s:
                return None
            names = " or ".join(entry.path.with_suffix(s).name for s in _SIDECAR_SUFFIXES)
            raise ValueError(f"no angle: no sidecar {names} after {self.sidecar_wait_s:g} s")
        try:
            return read_sidecar(sidecar)
        except (ValueError, OSError):
            age = time.time() - sidecar.stat().st_mtime
            if age < self.settle_s or waited < self.sidecar_wait_s:
                return None  # perhaps still being written
            raise

    # -- sending ---------------------------------------------------------------------------------
    def poll(self) -> list[Path]:
        """Scan once and send every frame that is complete; returns the paths sent now."""
        now = self.clock()
        if not self.publisher.is_open:
            self.publisher.start()
        self._update(now)
        sent_now: list[Path] = []
        for entry in list(self._pending):
            if entry.signature[0] == 0 or now - entry.changed_at < self.settle_s:
                break  # not complete yet; later files wait to keep the order of appearance
            try:
                data = read_image(entry.path)
            except FileFormatError as exc:
                if self._changed(entry, now):
                    break
                self._reject(entry, f"unreadable ({exc.field}: expected {exc.expected}, got {exc.found})")
                continue
            if self._changed(entry, now):
                break
            try:
                fields = self._fields(entry, now)
            except (ValueError, OSError) as exc:
                self._reject(entry, str(exc))
                continue
            if fields is None:
                break
            try:
                self._send(entry, data, fields)
            except (ValueError, TypeError) as exc:  # the publisher's validation (shape, dtype, values)
                self._reject(entry, str(exc))
                continue
            self._pending.remove(entry)
            self._sent_sig[entry.path] = entry.signature
            self.sent.append(entry.path)
            sent_now.append(entry.path)
        return sent_now

    def _changed(self, entry: _Pending, now: float) -> bool:
        """Re-stat ``entry``; True (and its clock restarted) if it changed since the last scan."""
        try:
            st = entry.path.stat()
        except OSError:
            return False
        sig = (st.st_size, st.st_mtime_ns)
        if sig != entry.signature:
            entry.signature, entry.changed_at = sig, now
            return True
        return False

    def _send(self, entry: _Pending, data: np.ndarray, fields: dict[str, Any]) -> None:
        if self.tilt_axis_angle_deg:
            from tiltstream.stream.orient import orient_frames

            data = orient_frames(data[None], self.tilt_axis_angle_deg)[0][0]
        fields = dict(fields)
        angle = fields.pop("angle_deg")
        t_s = fields.pop("t_s", None)
        stamp = fields.pop("timestamp_s", None)
        if t_s is None and stamp is not None:
            if self._stamp_ref_s is None:
                self._stamp_ref_s = stamp
            t_s = stamp - self._stamp_ref_s
        if t_s is None:
            if self._mtime_ref_ns is None:
                self._mtime_ref_ns = entry.signature[1]
            t_s = (entry.signature[1] - self._mtime_ref_ns) / 1e9
        seq = self.publisher.send_frame(data, angle_deg=angle, t_s=t_s, **fields)
        logger.debug("%s -> seq %d (angle %g deg, t %.3f s)", entry.path.name, seq, angle, t_s)

    def run(
        self,
        stop_event: threading.Event | None = None,
        *,
        max_frames: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> int:
        """Watch until ``stop_event`` is set, ``max_frames`` were sent, or nothing new arrived for
        ``idle_timeout_s`` seconds; then send ``end/1``. Returns the number of frames sent."""
        stop_event = stop_event or threading.Event()
        self.publisher.delivery.stop_event = stop_event
        last_activity = self.clock()
        reason = "stopped"
        try:
            while not stop_event.is_set():
                if self.poll() or self._pending:
                    last_activity = self.clock()
                if max_frames is not None and len(self.sent) >= max_frames:
                    reason = "complete"
                    break
                if idle_timeout_s is not None and self.clock() - last_activity >= idle_timeout_s:
                    reason = "idle"
                    break
                stop_event.wait(self.poll_s)
        finally:
            if self.publisher.is_open:
                self.publisher.end(reason, timeout_s=5.0)
        return len(self.sent)

    def close(self) -> None:
        """End an open series (reason ``"stopped"``) and close the sockets this watcher opened."""
        if self.publisher.is_open:
            self.publisher.end("stopped", timeout_s=5.0)
        if self._owns_publisher:
            self.publisher.close()

    def __enter__(self) -> FolderWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]
