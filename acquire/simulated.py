"""A simulated microscope: a dynamic phantom published frame by frame in (scaled) real time.

:class:`SimulatedMicroscope` plans a tilt series with :class:`~tiltstream.acquire.scheduler.TiltScheduler`
(golden ratio and the sim's stage timing model by default), renders each frame of the evolving
phantom with :mod:`tiltstream.sim` (HAADF projection with continuous-tilt blur, drift, Poisson
noise) in a background thread a few frames ahead, and publishes frame k when its exposure has
ended: ``(start_k + exposure_k) / speed`` wall seconds after :meth:`~SimulatedMicroscope.run`
began (``speed=inf``: as fast as frames are rendered and taken).

``start/1`` carries the geometry and, in ``experiment["simulation"]``, the recipe (same keys as
``tiltstream simulate`` writes) from which the ground truth is rebuilt; :meth:`truth` gives it too.
Each ``frame/1`` carries the cumulative dose so far (e⁻/Å², when ``dose`` is set) and the sample
temperature of a :class:`TemperatureRamp` (°C). The phantom and the recipe are those of a
:class:`tiltstream.sim.recipe.Recipe`, the frames rendered as :mod:`tiltstream.sim.series` does: with
the same arguments they equal those of :func:`tiltstream.sim.recipe.simulated_tilt_series` (same
random stream), just delivered live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiltstream.acquire.pacing import Pacer, parse_speed
from tiltstream.acquire.publisher import FramePublisher, publisher_for
from tiltstream.acquire.scheduler import Schedule, TiltScheduler
from tiltstream.acquire.sinks import Sink
from tiltstream.sim import TimingModel
from tiltstream.sim.recipe import EXPONENT, Recipe
from tiltstream.sim.series import default_blur_substeps, render_frames, specimen_shifts

__all__ = ["TemperatureRamp", "SimulatedMicroscope", "RunStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemperatureRamp:
    """Sample temperature ``T(t) = start_C + rate_C_per_s · t`` (°C), held at ``limit_C`` once reached.

    Attributes
    ----------
    start_C : temperature at t = 0, °C.
    rate_C_per_s : heating (> 0) or cooling (< 0) rate, °C/s.
    limit_C : end temperature of the ramp, °C, or None for none.
    """

    start_C: float = 25.0
    rate_C_per_s: float = 0.0
    limit_C: float | None = None

    def __post_init__(self) -> None:
        for name in ("start_C", "rate_C_per_s", "limit_C"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value}")
        if self.start_C < -273.15:
            raise ValueError(f"start_C: expected a temperature >= -273.15 °C, got {self.start_C}")

    def __call__(self, t_s: float) -> float:
        """Temperature (°C) at ``t_s`` seconds."""
        value = self.start_C + self.rate_C_per_s * float(t_s)
        if self.limit_C is not None:
            value = min(value, self.limit_C) if self.rate_C_per_s >= 0 else max(value, self.limit_C)
        return float(value)


@dataclass(frozen=True)
class RunStats:
    """What one :meth:`SimulatedMicroscope.run` did.

    Attributes
    ----------
    stream_id : id of the published series.
    n_frames : frames published.
    wall_s : duration of the run, wall seconds.
    late_frames : frames published more than ``lag_tolerance_s`` after they were due.
    max_lag_s : largest delay behind schedule, wall seconds.
    stopped : True if the stop event ended the run early.
    """

    stream_id: str
    n_frames: int
    wall_s: float
    late_frames: int
    max_lag_s: float
    stopped: bool


class SimulatedMicroscope:
    """Publishes a simulated dynamic tilt series live.

    Parameters
    ----------
    phantom_name : ``"nanorod"``, ``"nanostar"``, ``"core_shell"`` or ``"sintering"``.
    sink : where frames go: a sink, endpoint string(s) (lossless PUSH, see
        :class:`~tiltstream.acquire.publisher.FramePublisher`), a list, or a FramePublisher.
    size : phantom grid edge, voxels (frames are size × size).
    n_frames : frames in the series.
    dose : dose per frame, e⁻/Å²; None for noise-free frames.
    speed : factor of real time; 0, ``math.inf`` or ``"max"`` for as fast as possible.
    seed : seed of the random stream (drift, jitter, noise).
    scheme, tilt_range_deg : tilt scheme and range, degrees.
    exposure_s : exposure per frame, s (used when ``timing`` is None).
    timing : stage/camera timing model (default ``TimingModel(exposure_s=exposure_s)``).
    duration_s : length of the shape change, s (default: the whole acquisition).
    static : freeze the phantom.
    drift_px_per_s, jitter_px, axis_offset_px : specimen drift, jitter and tilt-axis offset, pixels.
    temperature : temperature trace (:class:`TemperatureRamp`) or None for no temperature field.
    supersample, blur, scatter_per_nm : forward-model settings (see :func:`tiltstream.sim.simulate_series`).
    chunk_frames : frames rendered per background step.
    prefetch_chunks : rendered steps kept ready ahead of the schedule.
    lag_tolerance_s : a frame published later than this behind schedule (wall s) counts as late.
    experiment : extra metadata for ``start/1``.
    pub, send_timeout_s : passed to the FramePublisher this creates.
    clock : monotonic clock in seconds of the pacing and of :attr:`RunStats.wall_s` (tests pass a fake).
    """

    def __init__(
        self,
        phantom_name: str = "nanorod",
        *,
        sink: Sink | str | Sequence[Sink | str] | FramePublisher,
        size: int = 64,
        n_frames: int = 240,
        dose: float | None = None,
        speed: float | str = 1.0,
        seed: int = 0,
        scheme: str = "golden",
        tilt_range_deg: tuple[float, float] = (-70.0, 70.0),
        exposure_s: float = 0.1,
        timing: TimingModel | None = None,
        duration_s: float | None = None,
        static: bool = False,
        drift_px_per_s: float = 0.0,
        jitter_px: float = 0.0,
        axis_offset_px: float = 0.0,
        temperature: TemperatureRamp | None = TemperatureRamp(),
        supersample: int = 2,
        blur: bool = True,
        scatter_per_nm: float = 0.02,
        chunk_frames: int = 4,
        prefetch_chunks: int = 2,
        lag_tolerance_s: float = 0.5,
        experiment: Mapping[str, Any] | None = None,
        pub: Sink | str | None = None,
        send_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if int(n_frames) != n_frames or n_frames < 1:
            raise ValueError(f"n_frames: expected a positive integer, got {n_frames!r}")
        if dose is not None and not (math.isfinite(dose) and dose > 0):
            raise ValueError(f"dose: expected e-/A^2 per frame > 0 or None, got {dose}")
        if int(chunk_frames) < 1 or int(prefetch_chunks) < 1:
            raise ValueError(f"chunk_frames, prefetch_chunks: expected >= 1, got {chunk_frames}, {prefetch_chunks}")
        self.speed = parse_speed(speed)
        self.n_frames = int(n_frames)
        self.dose = None if dose is None else float(dose)
        self.seed = int(seed)
        self.clock = clock
        self.timing = TimingModel(exposure_s=exposure_s) if timing is None else timing
        self.schedule: Schedule = TiltScheduler(
            scheme, n_frames=self.n_frames, tilt_range_deg=tilt_range_deg, timing=self.timing
        ).plan()
        lo, hi = (float(v) for v in tilt_range_deg)
        self.spec = Recipe(phantom=phantom_name, size=int(size), scheme=scheme, tilt_range_deg=(lo, hi),
                           dose_e_per_A2=self.dose, duration_s=duration_s, static=static, timing=self.timing,
                           drift_px_per_s=float(drift_px_per_s), jitter_px=float(jitter_px),
                           axis_offset_px=float(axis_offset_px), seed=self.seed)
        self.phantom = self.spec.phantom_for(float(self.schedule.times_s[-1] + 0.5 * self.schedule.exposure_s[-1]))
        self.temperature = temperature
        self.supersample, self.scatter_per_nm = int(supersample), float(scatter_per_nm)
        s = self.schedule
        self.blur_substeps = (default_blur_substeps(s.tilt_speed_deg_s, s.exposure_s)
                              if blur and self.timing.continuous else 1)
        self.chunk_frames, self.prefetch_chunks = int(chunk_frames), int(prefetch_chunks)
        self.lag_tolerance_s = float(lag_tolerance_s)
        self.recipe: dict[str, Any] = self.spec.record(self.phantom)
        metadata = {
            "source": "tiltstream.acquire.SimulatedMicroscope",
            "simulation": self.recipe,
            "speed": "max" if math.isinf(self.speed) else self.speed,
            "n_frames_planned": self.n_frames,
            "dose_e_per_A2_meaning": "cumulative dose after each frame",
            "temperature_ramp": None if temperature is None else dataclasses.asdict(temperature),
            **dict(experiment or {}),
        }
        y, _, x = self.phantom.shape
        self.publisher, self._owns_publisher = publisher_for(
            sink, metadata, frame_shape=(y, x), dtype=np.float32, pixel_nm=self.phantom.voxel_nm,
            scheme=scheme, tilt_range_deg=(lo, hi), pub=pub, send_timeout_s=send_timeout_s,
        )
        if self.publisher.pixel_nm is None:
            self.publisher.pixel_nm = self.phantom.voxel_nm

    def truth(self, t_s: float) -> np.ndarray:
        """Ground-truth contrast volume (Z, Y, X) float32 at ``t_s`` seconds."""
        return self.phantom.contrast(t_s, EXPONENT)

    def _render(self, a: int, b: int, shifts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Frames a … b−1, (b−a, Y, U) float32."""
        s = self.schedule
        return render_frames(
            self.phantom, s.angles_deg[a:b], s.times_s[a:b], s.exposure_s[a:b], s.tilt_speed_deg_s[a:b],
            shifts[a:b], exponent=EXPONENT, blur_substeps=self.blur_substeps, supersample=self.supersample,
            axis_offset_px=self.spec.axis_offset_px, scatter_per_nm=self.scatter_per_nm, rng=rng,
            dose_e_per_A2=None if self.dose is None else np.full(b - a, self.dose),
        )

    def _producer(self, out: queue.Queue, halt: threading.Event) -> None:
        rng = np.random.default_rng(self.seed)
        try:
            shifts = specimen_shifts(self.schedule.times_s, drift_px_per_s=self.spec.drift_px_per_s,
                                     jitter_px=self.spec.jitter_px, rng=rng)
            for a in range(0, self.n_frames, self.chunk_frames):
                item: Any = (a, self._render(a, min(a + self.chunk_frames, self.n_frames), shifts, rng))
                while not halt.is_set():
                    with contextlib.suppress(queue.Full):
                        out.put(item, timeout=0.1)
                        break
                if halt.is_set():
                    return
        except BaseException as exc:  # surfaced by the consumer
            out.put(exc)

    def frames(self, stop_event: threading.Event | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` in order, rendered ahead in a background thread; no pacing, no sending."""
        halt = threading.Event()
        out: queue.Queue = queue.Queue(maxsize=self.prefetch_chunks)
        worker = threading.Thread(target=self._producer, args=(out, halt), name="sim-render", daemon=True)
        worker.start()
        try:
            done = 0
            while done < self.n_frames:
                try:
                    item = out.get(timeout=0.1)
                except queue.Empty:
                    if stop_event is not None and stop_event.is_set():
                        return
                    if not worker.is_alive() and out.empty():
                        raise RuntimeError("simulated microscope: the render thread ended unexpectedly") from None
                    continue
                if isinstance(item, BaseException):
                    what = f"{type(item).__name__}: {item}"
                    raise RuntimeError(f"simulated microscope: rendering failed ({what})") from item
                a, block = item
                for i, frame in enumerate(block):
                    yield a + i, frame
                done = a + len(block)
        finally:
            halt.set()
            worker.join(timeout=5.0)

    def run(self, stop_event: threading.Event | None = None) -> RunStats:
        """Publish the series (``start/1``, every frame on schedule, ``end/1``); blocks until done.

        Setting ``stop_event`` ends it early with ``end/1`` reason ``"stopped"``. Exceptions end the
        series with an ``"error: ..."`` reason and propagate.
        """
        s = self.schedule
        pub = self.publisher
        pub.delivery.stop_event = stop_event
        pacer = Pacer(self.speed, stop_event=stop_event, clock=self.clock)
        dose_so_far = None if self.dose is None else np.cumsum(np.full(self.n_frames, self.dose))
        late, max_lag, stopped, sent = 0, 0.0, False, 0
        stream_id = pub.start()
        began = self.clock()
        frames = self.frames(stop_event)
        try:
            first = next(frames, None)  # the clock starts once the first frame is rendered
            pacer.start()
            for k, frame in itertools.chain([] if first is None else [first], frames):
                if not pacer.wait_until(float(s.starts_s[k] + s.exposure_s[k])):
                    break
                lag = pacer.lag_s(float(s.starts_s[k] + s.exposure_s[k]))
                max_lag = max(max_lag, lag)
                if lag > self.lag_tolerance_s:
                    late += 1
                    if late == 1 or late % 50 == 0:
                        logger.warning("frame %d published %.2f s behind schedule (%d late so far): rendering "
                                       "or the consumer is slower than speed %g", k, lag, late, self.speed)
                t = float(s.times_s[k])
                pub.send_frame(
                    frame, angle_deg=float(s.angles_deg[k]), t_s=t, exposure_s=float(s.exposure_s[k]),
                    dose_e_per_A2=None if dose_so_far is None else float(dose_so_far[k]),
                    temperature_C=None if self.temperature is None else self.temperature(t),
                )
                sent += 1
        except BaseException as exc:
            pub.abort(exc)
            raise
        finally:
            frames.close()
        stopped = stop_event is not None and stop_event.is_set() and sent < self.n_frames
        pub.end("stopped" if stopped else "complete", **({"timeout_s": 5.0} if stopped else {}))
        wall = self.clock() - began
        logger.info("published %d frames in %.1f s (%d late, max lag %.2f s)", sent, wall, late, max_lag)
        return RunStats(stream_id, sent, wall, late, max_lag, stopped)

    def close(self) -> None:
        """Close the sockets of the publisher this microscope created."""
        if self._owns_publisher:
            self.publisher.close()

    def __enter__(self) -> SimulatedMicroscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
