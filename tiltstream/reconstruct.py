"""``tiltstream reconstruct`` and ``tiltstream score``: glue between files, recon and the user."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tiltstream._args import refuse_same_file
from tiltstream.recon.batch import BatchParams, default_times, reconstruct_4d
from tiltstream.recon.windowed import Window

log = logging.getLogger(__name__)


def _params(args: argparse.Namespace) -> BatchParams:
    window = Window.parse(args.window) if args.window else None
    return BatchParams(
        method=args.method,
        iterations=args.iterations,
        window_frames=None if window is None else window.frames,
        window_seconds=None if window is None else window.seconds,
        axis_offset_px=args.axis_offset,
        vol_z=args.height,
    )


def run(args: argparse.Namespace) -> str:
    """Read, reconstruct at the requested times with a progress bar, write, and return a summary.

    ``args.out`` names the result's format: ``*.zarr`` OME-Zarr, anything else HDF5.
    """
    from tiltstream.stream.readers import read_series  # noqa: PLC0415
    from tiltstream.stream.results import is_zarr_path, write_result  # noqa: PLC0415

    refuse_same_file(args.out, args.input)
    if is_zarr_path(args.out):  # fail before the work, not after it
        from tiltstream.stream.zarr_results import require_zarr  # noqa: PLC0415

        require_zarr()
    if getattr(args, "scheduler", None):
        if args.method == "dip":
            raise ValueError("--scheduler: runs fbp and sirt in slabs; the DIP trains on several processes "
                             "with --nproc N (or torchrun)")
        from tiltstream.recon.dask_batch import parse_scheduler, require_distributed  # noqa: PLC0415

        parse_scheduler(args.scheduler)
        require_distributed()
    if getattr(args, "align", False):
        series = _aligned_series(args)
    else:
        series = read_series(args.input, tilt_axis_angle_deg=args.tilt_axis_angle)
        series.check_finite()  # a NaN pixel makes every voxel NaN (--align checks its own input)
        _check_axis_offset(args.axis_offset, series.frame_shape[1])
    _check_times(args.times, series.times_s)
    _check_seconds_window(args.window, series)
    series = _binned_series(args, series)
    if not getattr(args, "scheduler", None):  # slabs: the workers' memory, not this machine's
        _check_volumes_fit(args, series, 1 if args.times is None else len(args.times))
    if args.method == "dip":
        return _run_dip(args, series)
    if getattr(args, "nproc", None):
        raise ValueError(f"--nproc: trains the DIP on several processes (--method dip), not {args.method}; "
                         "use --scheduler for slab-parallel fbp/sirt")
    params = _params(args)
    times = np.asarray(args.times if args.times else default_times(series.times_s, params.window), dtype=np.float64)
    if getattr(args, "scheduler", None):
        return _run_slabs(args, series, params, times)
    t0 = time.perf_counter()
    with tqdm(total=len(times), desc=f"{params.method} {series.n_frames} frames", unit="vol",
              disable=None) as bar:
        volumes = reconstruct_4d(series.frames, series.angles_deg, series.times_s, times, params,
                                 device=args.device, progress=bar.update)
    wall = time.perf_counter() - t0
    write_result(args.out, volumes, times, attrs=_attrs(args, series, params, wall), overwrite=True)
    return (f"wrote {len(times)} volume(s) {volumes.shape[1:]} at t = "
            f"{', '.join(f'{t:.1f}' for t in times)} s to {args.out} ({wall:.1f} s)")


def _check_axis_offset(offset_px: float, width_px: int) -> None:
    """ValueError unless the tilt axis lies on the detector: |``--axis-offset``| < half the frame width
    (pixels of the frames as stored); beyond it no ray of the frames passes through the volume."""
    if not abs(offset_px) < width_px / 2:
        raise ValueError(f"--axis-offset: expected pixels within half the frame width (|offset| < {width_px / 2:g} "
                         f"for frames {width_px} px wide), got {offset_px:g}")


def _check_times(times: list[float] | None, series_times_s: np.ndarray) -> None:
    """ValueError unless every ``--times`` lies within the series' span (as ``export --time``)."""
    if not times:
        return
    lo, hi = float(np.min(series_times_s)), float(np.max(series_times_s))
    bad = [t for t in times if not lo <= t <= hi]
    if bad:
        raise ValueError(f"--times: expected times within the series' span [{lo:g}, {hi:g}] s, "
                         f"got {', '.join(f'{t:g}' for t in bad)} s")


def _check_seconds_window(window: str | None, series) -> None:
    """ValueError for a window in seconds over a series whose times are frame indices (a file with
    angles but no acquisition times): the window would silently count frames as seconds."""
    if window and Window.parse(window).seconds is not None and series.metadata.get("time_source") == "frame_index":
        raise ValueError(f"--window: expected frames (e.g. '--window 40') for {series.source}, whose times are "
                         f"frame indices (no acquisition times in the file), got {window!r}")


def _check_volumes_fit(args: argparse.Namespace, series, n_times: int) -> None:
    """ValueError naming ``--height`` when the volumes asked for (float32) exceed the machine's memory,
    before an allocation that would fail."""
    from tiltstream.stream.budget import _physical_memory_bytes  # noqa: PLC0415

    physical = _physical_memory_bytes()
    ny, nu = series.frame_shape
    nz = args.height or nu
    need = n_times * nz * ny * nu * 4
    if physical and need > physical:
        raise ValueError(f"--height: expected volumes that fit in memory ({physical / 2**30:.1f} GiB here), got "
                         f"{n_times} × {nz}×{ny}×{nu} voxels ({need / 2**30:.1f} GiB as float32)")


def _attrs(args: argparse.Namespace, series, params, wall: float | None) -> dict:
    return {
        "method": args.method,
        "parameters": params.as_dict(),
        "input_path": str(args.input),
        "device": args.device,
        "wall_time_s": wall,
        "voxel_nm": series.pixel_nm if series.pixel_nm is not None else float("nan"),
        "tilt_axis_angle_deg": series.metadata.get("tilt_axis_angle_deg", 0.0),
        "alignment": series.metadata.get("alignment"),
        "bin": series.metadata.get("bin", 1),
    }


def _run_slabs(args: argparse.Namespace, series, params: BatchParams, times: np.ndarray) -> str:
    """``--scheduler``: Y-slabs reconstructed on a dask cluster, written into the result as they arrive."""
    from tiltstream.recon.dask_batch import dask_client, default_slab_rows, reconstruct_slabs  # noqa: PLC0415
    from tiltstream.stream.results import open_result_writer  # noqa: PLC0415

    n, ny, nu = series.frames.shape
    shape = (params.vol_z or nu, ny, nu)
    t0 = time.perf_counter()
    with dask_client(args.scheduler) as client:
        rows = args.slab_rows or default_slab_rows(client, ny)
        attrs = _attrs(args, series, params, None) | {"scheduler": args.scheduler, "slab_rows": rows}
        with open_result_writer(args.out, shape, times, attrs=attrs, overwrite=True, chunk_rows=rows) as writer, \
                tqdm(total=ny, desc=f"{params.method} {n} frames in slabs of {rows}", unit="row",
                     disable=None) as bar:
            slabs = reconstruct_slabs(client, series.frames, series.angles_deg, series.times_s, times, params,
                                      write=lambda slab, block: writer.write_rows(slab.y0, block),
                                      device=args.device, slab_rows=rows, progress=bar.update)
            wall = time.perf_counter() - t0
            writer.update_provenance({"wall_time_s": wall})
    return (f"wrote {len(times)} volume(s) {shape} at t = {', '.join(f'{t:.1f}' for t in times)} s to "
            f"{args.out} in {len(slabs)} slab(s) on {args.scheduler} ({wall:.1f} s)")


def _aligned_series(args: argparse.Namespace):
    """``--align``: the series aligned (one resampling), its tilt-axis offset put into the geometry
    (``args.axis_offset``, used by every method) rather than into the frames."""
    from tiltstream.cmd_align import read_and_align, summary  # noqa: PLC0415
    from tiltstream.recon.align import apply_alignment  # noqa: PLC0415

    if args.axis_offset:
        log.warning("--axis-offset %g is replaced by the estimated offset with --align", args.axis_offset)
    series, alignment = read_and_align(args.input, args)
    args.axis_offset = alignment.axis_offset_px
    log.info("aligned: %s", summary(alignment))
    return apply_alignment(series, alignment, centre_axis=False)


def _binned_series(args: argparse.Namespace, series):
    """``--bin N``: the frames block-averaged N×N (:func:`~tiltstream.recon.binning.bin_frame`), the
    pixel size N× larger, ``args.axis_offset`` and ``args.height`` turned into binned pixels."""
    factor = getattr(args, "bin", 1)
    if factor == 1:
        return series
    from tiltstream.recon.binning import bin_frame, binned_geometry  # noqa: PLC0415

    _, args.axis_offset = binned_geometry(series.frame_shape, factor, args.axis_offset)
    args.height = None if args.height is None else -(-args.height // factor)
    log.info("frames %s binned by %d", series.frame_shape, factor)
    return replace(series, frames=bin_frame(series.frames, factor), metadata={**series.metadata, "bin": factor},
                   pixel_nm=None if series.pixel_nm is None else series.pixel_nm * factor)


def _dip_params(args: argparse.Namespace):
    """DipParams from the command line; with ``--resume`` the checkpoint's, with only ``steps`` changed."""
    from tiltstream.recon.dip import DipParams, read_checkpoint  # noqa: PLC0415

    if args.resume is not None:
        saved = DipParams.from_dict(read_checkpoint(args.resume)["params"])
        steps = args.steps if args.steps is not None else saved.steps
        return replace(saved, steps=steps, time_limit_s=args.time_limit, device=args.device)
    return DipParams(steps=args.steps or DipParams.steps, seed=args.seed, device=args.device,
                     time_limit_s=args.time_limit, axis_offset_px=args.axis_offset, vol_z=args.height)


class _DipBar:
    """The DIP's progress bar (loss, held-out score) as a picklable callable: with ``--nproc`` it runs
    in rank 0's process, so the bar is made there on the first call."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self._bar = total, desc, None

    def __call__(self, n: int, *, loss: float, heldout: float | None) -> None:
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc=self.desc, unit="step", disable=None)
        self._bar.set_postfix(loss=f"{loss:.4g}", heldout="–" if heldout is None else f"{heldout:.4f}", refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __getstate__(self) -> dict:
        return {"total": self.total, "desc": self.desc, "_bar": None}


def _fit_dip(args: argparse.Namespace, series, params, times: np.ndarray, checkpoint: Path, bar: _DipBar):
    """``(volumes, info, stopped)`` of the fit on this process, on ``--nproc`` spawned processes or
    as one rank under torchrun (where every rank but 0 gets no volumes)."""
    from tiltstream.recon.dip import DipTrainer  # noqa: PLC0415
    from tiltstream.recon.dip.distributed import torchrun_world  # noqa: PLC0415

    data = (series.frames, series.angles_deg, series.times_s)
    ranked = torchrun_world()
    if ranked is not None and ranked[1] > 1:
        from tiltstream.recon.dip.distributed import fit_in_group, process_group  # noqa: PLC0415

        if args.nproc:
            log.warning("--nproc %d ignored: torchrun started %d processes", args.nproc, ranked[1])
        with process_group(params.device) as dev:
            return fit_in_group(*data, times, params, device=dev, checkpoint=checkpoint, resume=args.resume,
                                progress=bar)
    if args.nproc and args.nproc > 1:
        from tiltstream.recon.dip.distributed import reconstruct_dip_ddp  # noqa: PLC0415

        return reconstruct_dip_ddp(args.nproc, *data, times, params, checkpoint=checkpoint, resume=args.resume,
                                   progress=bar)
    if args.resume is not None:
        trainer = DipTrainer.from_checkpoint(args.resume, *data, params)
    else:
        trainer = DipTrainer(*data, params)
    stopped = trainer.fit(progress=bar, checkpoint=checkpoint)
    return trainer.best_model().volumes(times), trainer.info(), stopped


def _run_dip(args: argparse.Namespace, series) -> str:
    """Fit (or continue) the DIP with a progress bar of loss and held-out score, write the volumes."""
    from tiltstream.recon.dip import default_query_times  # noqa: PLC0415
    from tiltstream.stream.results import write_result  # noqa: PLC0415

    if args.window:
        raise ValueError("--window: the DIP fits all frames at once (time is a model input); drop --window")
    params = _dip_params(args)
    checkpoint = args.checkpoint or Path(args.out).with_suffix(".dip.pt")
    t0 = time.perf_counter()
    times = np.asarray(args.times if args.times else default_query_times(series.times_s), dtype=np.float64)
    bar = _DipBar(params.steps, f"dip {series.n_frames} frames")
    try:
        volumes, info, stopped = _fit_dip(args, series, params, times, checkpoint, bar)
    finally:
        bar.close()
    if volumes is None:  # a torchrun rank other than 0: rank 0 writes
        return (f"one rank of a {info['world_size']}-process DIP fitted {info['step']} steps; "
                f"rank 0 writes {args.out}")
    wall = time.perf_counter() - t0
    attrs = _attrs(args, series, params, wall) | {
        "device": info["device"],
        "checkpoint": str(checkpoint),
        "dip_steps": info["step"],
        "dip_best_step": info["best_step"],
        "dip_heldout_nrmse": info["heldout_nrmse"] if info["heldout_nrmse"] is not None else float("nan"),
        "dip_heldout_indices": info["heldout_indices"],
        "dip_stopped": stopped,
        "dip_processes": info.get("world_size", 1),
    }
    write_result(args.out, volumes, times, attrs=attrs, overwrite=True)
    held = info["heldout_nrmse"]
    procs = f" on {info['world_size']} processes" if info.get("world_size", 1) > 1 else ""
    return (f"wrote {len(times)} volume(s) {volumes.shape[1:]} at t = {', '.join(f'{t:.1f}' for t in times)} s "
            f"to {args.out} ({wall:.1f} s); DIP step {info['step']} ({stopped}){procs}, best step {info['best_step']}"
            + (f", held-out NRMSE {held:.4f}" if held is not None else "") + f"; checkpoint {checkpoint}")


def score(result_path: Path, truth_from: Path | None = None) -> str:
    """NRMSE of every volume in a result against the simulation's ground truth at the same times."""
    from tiltstream.recon.scoring import nrmse_over_time  # noqa: PLC0415
    from tiltstream.simulate import truth_from_recording  # noqa: PLC0415
    from tiltstream.stream.results import read_result  # noqa: PLC0415

    volumes, times, attrs = read_result(result_path)
    source = Path(truth_from) if truth_from is not None else recorded_input(result_path, attrs)
    truth = truth_from_recording(source)
    try:
        errs = nrmse_over_time(volumes, times, truth)
    except ValueError as exc:
        raise ValueError(f"{result_path}: {exc}") from None
    lines = [f"{'t (s)':>8}  {'NRMSE':>7}", *(f"{t:8.2f}  {e:7.4f}" for t, e in zip(times, errs))]
    lines.append(f"{'mean':>8}  {np.mean(errs):7.4f}")
    return "\n".join(lines)


def recorded_input(result_path: Path, attrs: dict) -> Path:
    """The recording a result came from: its ``input_path``, a relative one looked for beside the
    result first and then in the working folder, checked against ``input_sha256`` where recorded.

    Raises ValueError naming the result when there is no ``input_path``, no such file, or only a
    file with other contents.
    """
    from tiltstream.stream.results import sha256_file  # noqa: PLC0415

    recorded = attrs.get("input_path")
    if not recorded:
        raise ValueError(f"{result_path}: input_path: expected the recording the result came from, got none "
                         "(pass --truth-from SIM.h5)")
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [Path(result_path).parent / path, path]
    found = [c for c in dict.fromkeys(candidates) if c.is_file()]
    if not found:
        raise ValueError(f"{result_path}: input_path: expected an existing recording, got {recorded} "
                         f"(looked for {', '.join(map(str, dict.fromkeys(candidates)))}; pass --truth-from SIM.h5)")
    sha = attrs.get("input_sha256")
    if not sha:
        return found[0]
    for c in found:
        if sha256_file(c) == sha:
            return c
    raise ValueError(f"{result_path}: input_sha256: expected {recorded} with SHA-256 {sha[:12]}…, got a file with "
                     f"other contents ({', '.join(map(str, found))}); pass --truth-from SIM.h5")
