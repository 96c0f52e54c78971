"""Alignment (tiltstream.recon.align) on simulated series with known misalignment.

Simulated truth: random shifts of ±8 px, the tilt axis 3 px right of the centre and turned 2° in the
image plane. Shifts are compared without their unmeasurable part: a common dy, and du along 1,
cosθ, sinθ (a translated particle or a moved axis look exactly like those), so the simulated du is
drawn orthogonal to them and the axis offset is unambiguous.
"""

import numpy as np
import pytest

from tiltstream.recon import operator, projection_geometry, volume_geometry
from tiltstream.recon.align import (
    AlignParams,
    Alignment,
    LiveAligner,
    MatchingParams,
    RegistrationFilter,
    align_series,
    axis_angle_from_bands,
    carry_alignment,
    centre_of_mass_drift,
    neighbour_drift,
    normalize_frames,
    projection_matching,
    register,
    rotate_shifts,
    specimen_track,
    split_gauge,
    transform_frames,
)
from tiltstream.recon.align.drift import axis_drift, gauge_basis
from tiltstream.recon.align.matching import shift_frames
from tiltstream.recon.align.pipeline import _refine_rotation
from tiltstream.recon.align.xcorr import fourier_shift
from tiltstream.recon.engine import EngineConfig, ReconEngine
from tiltstream.recon.sirt import sirt
from tiltstream.recon.streaming import StreamingParams
from tiltstream.sim import (
    TimingModel,
    make_phantom,
    poisson_noise,
    project,
    rotate_tilt_axis,
    simulate_series,
    tilt_scheme,
)
from tiltstream.stream.protocol import FrameMsg, MetricsMsg, StartMsg

SIZE, N_FRAMES, OFFSET, ROTATION, AMP = 64, 60, 3.0, 2.0, 8.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rms(e):
    return float(np.sqrt(np.mean(np.square(e))))


def measurable_shifts(angles, rng, amp=AMP):
    """(N, 2) shifts uniform in ±amp, with the unmeasurable part (see module docstring) removed."""
    n = angles.size
    du = rng.uniform(-amp, amp, n)
    b = gauge_basis(angles)
    du -= b @ np.linalg.lstsq(b, du, rcond=None)[0]
    dy = rng.uniform(-amp, amp, n)
    return np.stack([dy - dy.mean(), du], axis=1)


def misaligned(rng, *, phantom="nanorod", dynamic=False, size=SIZE, n=N_FRAMES, amp=AMP, offset=OFFSET, dose=None):
    """Frames (axis along rows, shifted, offset; Poisson noise at ``dose`` e/Å²) and the phantom,
    angles, times, shifts."""
    timing = TimingModel()
    angles = tilt_scheme("golden", n, lo=-70, hi=70)
    _, times, _ = timing.times(angles)
    ph = make_phantom(phantom, size=size, duration_s=float(times[-1]) if dynamic else 60.0, static=not dynamic)
    shifts = measurable_shifts(angles, rng, amp)
    frames = project(ph, angles, times, axis_offset_px=offset, shifts_px=shifts)
    if dose is not None:
        frames = poisson_noise(frames, dose_e_per_A2=dose, pixel_nm=ph.voxel_nm, voxel_nm=ph.voxel_nm, rng=rng)
    return frames, ph, angles, times, shifts


@pytest.fixture(scope="module")
def static_case(one_torch_thread):
    rng = np.random.default_rng(61)
    frames, ph, angles, times, shifts = misaligned(rng, dose=3000.0)
    recorded = rotate_tilt_axis(frames, ROTATION)
    alignment = align_series(recorded, angles, times)
    return dict(frames=frames, recorded=recorded, truth=ph.contrast(0.0), angles=angles, times=times, shifts=shifts,
                alignment=alignment)


# -- building blocks --------------------------------------------------------------------------------
def test_register_recovers_subpixel_shifts(rng):
    from scipy import ndimage

    y, x = np.mgrid[:37, :45]
    img = np.exp(-((y - 18) ** 2 / 40 + (x - 20) ** 2 / 90)) + 0.6 * np.exp(-((y - 12) ** 2 + (x - 28) ** 2) / 6)
    errors = []
    for _ in range(8):
        s = rng.uniform(-5, 5, 2)
        moved = ndimage.shift(img, s, order=3)
        est, quality = register(img, moved)
        errors.append(est - s)
        assert quality > 0.5
    assert rms(errors) < 0.05
    est, _ = register(img, img[::-1, ::-1])  # no common content: still a valid answer, not a crash
    assert np.all(np.isfinite(est))


def test_normalize_signed_int_data_with_offset_and_gain(rng):
    clean = np.zeros((12, 40, 44))
    blob = rng.uniform(50, 200, (20, 18))
    for i in range(12):  # the same total intensity in every frame, as in projections of one particle
        clean[i, 10:30, 12:30] = rng.permuted(blob.reshape(-1)).reshape(blob.shape)
    gain = rng.uniform(0.7, 1.3, 12)
    offset = rng.uniform(-31900, -31800, 12)  # as in a real int16 FEI stack
    raw = np.round(clean * gain[:, None, None] + offset[:, None, None] + rng.normal(0, 2, clean.shape))
    stored = raw.astype(np.int16)
    assert stored.min() < -31000 and np.array_equal(stored, raw)  # no wrap-around in the test data
    out, norm = normalize_frames(stored)
    assert out.dtype == np.float32
    np.testing.assert_allclose(norm.offsets, offset, atol=3.0)
    # frames agree with each other once normalised: gain differences are gone
    ratio = out.sum(axis=(1, 2)) / clean.sum(axis=(1, 2))
    assert np.ptp(ratio) / ratio.mean() < 0.01
    assert abs(np.median(out[:, :5, :])) < 3.0  # background at 0
    # a broken normaliser (no offset removal) would leave -31850 in the background
    assert abs(np.median(normalize_frames(stored, subtract_background=False, scale="none")[0][:, :5, :])) > 30000


def test_transform_undoes_a_simulated_axis_rotation():
    y, x = np.mgrid[:41, :53]
    img = np.exp(-((y - 20) ** 2 / 30 + (x - 30) ** 2 / 60)) + 0.5 * np.exp(-((y - 12) ** 2 + (x - 22) ** 2) / 8)
    img = img[None]
    for angle in (2.0, -3.5, 92.0):
        back = transform_frames(rotate_tilt_axis(img, angle), tilt_axis_angle_deg=angle)
        assert back.shape == img.shape
        assert np.abs(back - img).max() < 2e-3
    wrong = transform_frames(rotate_tilt_axis(img, 2.0), tilt_axis_angle_deg=-2.0)
    assert np.abs(wrong - img).max() > 0.02


def test_centre_of_mass_and_profiles_give_absolute_drift(rng):
    frames, _, angles, _, shifts = misaligned(rng, size=48, n=40, amp=4.0, offset=-2.0)
    dy = axis_drift(frames)
    du, offset, _ = centre_of_mass_drift(frames, angles)
    assert rms(dy - shifts[:, 0]) < 0.1
    assert rms(du - shifts[:, 1]) < 0.1
    assert abs(offset - (-2.0)) < 0.1


def test_neighbour_chain_runs_in_angle_order(rng):
    frames, _, angles, _, shifts = misaligned(rng, size=48, n=40, amp=4.0, offset=0.0)
    assert np.any(np.abs(np.diff(angles)) > 30)  # golden ratio: consecutive frames jump across the range
    chained = split_gauge(neighbour_drift(frames, angles), angles)[0]
    assert rms(chained - shifts) < 0.3


# -- in-plane angle from the axis offsets of bands of rows ------------------------------------------
def test_band_offsets_measure_a_residual_rotation_with_its_sign(rng):
    frames, _, angles, _, _ = misaligned(rng, size=48, n=40, amp=0.0, offset=1.5)
    for turned in (1.5, -2.5):
        recorded = rotate_tilt_axis(frames, turned)
        delta, stderr, info = axis_angle_from_bands(recorded, angles, axis_offset_px=1.5)
        assert 0.5 * abs(turned) < delta * np.sign(turned) < 1.5 * abs(turned), (turned, delta)  # the sign is right
        assert abs(np.mean(info["band_offsets_px"]) - 1.5) < 0.3
        # a turned axis also tilts the slice each row sees, so an estimate falls short by ~30 %;
        # used as align_series uses it (turn the frames by it, measure again, 3 rounds) it converges
        total = delta
        for _ in range(2):
            step, stderr, _ = axis_angle_from_bands(transform_frames(recorded, tilt_axis_angle_deg=total), angles,
                                                    axis_offset_px=1.5)
            total += step
        assert abs(total - turned) < 0.3, (turned, delta, total)  # the bar for the axis angle
        assert stderr < 0.3
    delta, _, _ = axis_angle_from_bands(frames, angles, axis_offset_px=1.5)
    assert abs(delta) < 0.3  # nothing turned: nothing found (within the precision of a 48² series)


def test_rotated_shifts_compose_and_carry_keeps_the_specimen_in_place():
    angles = np.linspace(-60, 60, 25)
    s = np.random.default_rng(3).normal(0, 2, (25, 2))
    np.testing.assert_allclose(rotate_shifts(rotate_shifts(s, 1.5), 2.0), rotate_shifts(s, 3.5), atol=1e-12)
    # a still specimen off the axis (no drift): at the angle it was seen at, its trajectory is the
    # track; carried by δ, the drift-free specimen must stay drift-free, and the axis moves with it
    a = np.deg2rad(angles)
    track = np.stack([np.full(25, 6.0), 2.0 + 5.0 * np.cos(a) + 3.0 * np.sin(a)], axis=1)
    moved, offset = carry_alignment(np.zeros((25, 2)), 2.0, track, angles, 1.0)
    np.testing.assert_allclose(moved, 0.0, atol=0.12)  # δ·(x₀cosθ + z₀sinθ) ≈ 0.1 px left as dy, 2nd order
    assert offset == pytest.approx(2.0 + 6.0 * np.sin(np.deg2rad(1.0)), abs=0.01)  # the axis at the specimen's row
    plain, _ = carry_alignment(np.zeros((25, 2)), 2.0, np.zeros((25, 2)), angles, 1.0)
    np.testing.assert_allclose(plain, 0.0, atol=1e-12)


def test_band_refinement_finds_the_angle_from_a_wrong_start_and_keeps_a_trusted_one(static_case, one_torch_thread):
    c = static_case
    start = 0.5  # 1.5° off, as the tilt-axis profiles may be on real data
    at_start = align_series(c["recorded"], c["angles"], c["times"],
                            params=AlignParams(tilt_axis_angle_deg=start, estimate_rotation=False))
    work, _ = normalize_frames(c["recorded"])
    p = AlignParams()
    mp = p.matching_params
    angle, shifts, offset, rounds = _refine_rotation(work, c["angles"], c["times"], start, at_start.shifts_px,
                                                     at_start.axis_offset_px, p, mp, None, False)
    assert abs(angle - ROTATION) <= 0.3, [r["delta_deg"] for r in rounds]
    assert rms(split_gauge(shifts, c["angles"])[0] - c["shifts"]) <= 0.5
    assert abs(offset - OFFSET) <= 0.5
    al = c["alignment"]  # the profiles' angle, trusted: the bands agree and it stands
    kept, _, _, rounds = _refine_rotation(work, c["angles"], c["times"], al.tilt_axis_angle_deg, al.shifts_px,
                                          al.axis_offset_px, p, mp, None, True)
    assert kept == al.tilt_axis_angle_deg and "kept" in rounds[0]
    track = specimen_track(transform_frames(work, tilt_axis_angle_deg=al.tilt_axis_angle_deg, shifts_px=al.shifts_px),
                           c["angles"])
    assert track.shape == (N_FRAMES, 2) and np.all(np.isfinite(track))


# -- the whole alignment on a misaligned static series --------------------------------------------
def test_shifts_and_tilt_axis_are_recovered(static_case):
    al, shifts = static_case["alignment"], static_case["shifts"]
    assert rms(al.shifts_px[:, 0] - shifts[:, 0]) <= 0.5
    assert rms(al.shifts_px[:, 1] - shifts[:, 1]) <= 0.5
    assert abs(al.axis_offset_px - OFFSET) <= 0.5
    assert abs(al.tilt_axis_angle_deg - ROTATION) <= 0.3
    assert al.frame_shape == (SIZE, SIZE)


def _sirt_error(frames, angles, offset, truth):
    A = operator(volume_geometry(truth.shape), projection_geometry(angles, det_shape=frames.shape[1:],
                                                                    axis_offset_px=offset), device="cpu")
    vol = sirt(A, np.ascontiguousarray(frames, dtype=np.float32), 40)
    return float(np.linalg.norm(vol - truth) / np.linalg.norm(truth))


def test_aligned_reconstruction_is_as_good_as_a_perfectly_aligned_one(static_case):
    c = static_case
    al = c["alignment"]
    perfect = shift_frames(c["frames"], c["shifts"])
    err_perfect = _sirt_error(perfect, c["angles"], OFFSET, c["truth"])
    err_aligned = _sirt_error(al.apply(c["recorded"]), c["angles"], al.axis_offset_px, c["truth"])
    err_raw = _sirt_error(c["recorded"], c["angles"], 0.0, c["truth"])
    assert err_aligned <= 1.10 * err_perfect
    assert err_raw > 1.5 * err_perfect  # the misalignment matters: without alignment it is far worse


def test_quarter_turn_is_found_when_the_file_does_not_say(static_case):
    recorded = rotate_tilt_axis(static_case["frames"], 90.0 + ROTATION)  # tilt axis along the columns
    al = align_series(recorded, static_case["angles"], static_case["times"], params=AlignParams(matching=False))
    assert abs(al.tilt_axis_angle_deg - (90.0 + ROTATION)) <= 0.3
    assert abs(al.axis_offset_px - OFFSET) <= 0.5
    assert al.info["axis"]["orientation_residuals"][1] < al.info["axis"]["orientation_residuals"][0]


def test_projection_matching_converges_from_a_poor_start(rng):
    frames, _, angles, times, shifts = misaligned(rng, size=48, n=48, amp=4.0, offset=2.0)
    start = shifts + rng.normal(0, 1.5, shifts.shape)
    res = projection_matching(frames, angles, shifts_px=start, axis_offset_px=0.0, times_s=times,
                              params=MatchingParams(max_rounds=10, tol_px=0.1))
    assert res.converged and res.max_update_px[-1] < 0.1
    assert rms(res.shifts_px - shifts) < 0.3
    assert abs(res.axis_offset_px - 2.0) < 0.3


def test_a_reshaping_particle_does_not_pull_the_drift_estimate(rng):
    frames, ph, angles, times, shifts = misaligned(rng, dynamic=True)
    assert ph.aspect_ratio(times[0]) > 3 > 1.2 > ph.aspect_ratio(times[-1])  # the rod really reshapes
    al = align_series(frames, angles, times)
    assert al.info["matching"]["dynamic"]  # golden ratio: matched against time windows
    assert rms(al.shifts_px - shifts) <= 0.5
    assert abs(al.axis_offset_px - OFFSET) <= 0.5
    # the scenario is a real test: matching against one reconstruction of all the shapes (the rod as
    # it never was) starts to follow the shape change and fails the same bar within a few rounds
    fooled = projection_matching(frames, angles, shifts_px=al.shifts_px, axis_offset_px=al.axis_offset_px,
                                 times_s=times, params=MatchingParams(time_window_frames=None, max_rounds=4))
    assert rms(fooled.shifts_px - shifts) > 0.5


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors():
    angles = np.linspace(-60, 60, 10)
    frames = np.ones((10, 32, 32), dtype=np.float32)
    nan = frames.copy()
    nan[4, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf in frame\(s\) \[4\]"):
        align_series(nan, angles)
    with pytest.raises(ValueError, match="expected 10 angles .* got 9"):
        align_series(frames, angles[:9])
    with pytest.raises(ValueError, match=r"expected a 3-D array \(N, Y, X\), got shape \(32, 32\)"):
        align_series(frames[0], angles)
    with pytest.raises(ValueError, match="NaN/Inf"):
        normalize_frames(nan)
    with pytest.raises(ValueError, match="scale: expected one of"):
        normalize_frames(frames, scale="max")
    with pytest.raises(ValueError, match=r"frame: expected shape \(32, 32\) \(Y, U\), got \(31, 32\)"):
        LiveAligner((32, 32)).correct(np.ones((31, 32)), 0.0)
    with pytest.raises(ValueError, match="coarse: expected one of"):
        AlignParams(coarse="magic")


def test_alignment_metadata_round_trip(static_case):
    al = static_case["alignment"]
    back = Alignment.from_metadata(al.to_metadata())
    np.testing.assert_allclose(back.shifts_px, al.shifts_px, atol=1e-4)
    assert back.tilt_axis_angle_deg == pytest.approx(al.tilt_axis_angle_deg, abs=1e-4)
    assert back.axis_offset_px == pytest.approx(al.axis_offset_px, abs=1e-4)
    np.testing.assert_allclose(back.apply(static_case["recorded"][:3].repeat(20, 0)[:N_FRAMES]),
                               al.apply(static_case["recorded"][:3].repeat(20, 0)[:N_FRAMES]), atol=1e-3)
    with pytest.raises(ValueError, match=r"expected shape \(60, 64, 64\)"):
        al.apply(static_case["recorded"][:, :, :63])


# -- live -----------------------------------------------------------------------------------------
def test_live_engine_corrects_drift_and_publishes_shifts():
    rng = np.random.default_rng(8)
    ph = make_phantom("nanorod", size=32, static=True)
    s = simulate_series(ph, n_frames=72, blur=False, drift_px_per_s=0.05, jitter_px=1.0, rng=rng)
    still = simulate_series(ph, n_frames=72, blur=False)

    def run(series, align):
        eng = ReconEngine(EngineConfig(streaming=StreamingParams(window_frames=72, subset_size=12, steps_per_update=2),
                                       device="cpu", align=align))
        eng.handle(StartMsg(stream_id="a" * 32, frame_shape=series.frames.shape[1:], dtype="float32",
                            scheme="golden", pixel_nm=1.0))
        published = []
        for i in range(len(series)):
            eng.handle(FrameMsg(seq=i, stream_id="a" * 32, angle_deg=float(series.angles_deg[i]),
                                t_s=float(series.times_s[i]), exposure_s=0.1, data=series.frames[i]))
            metrics = [m for m in eng.step() if isinstance(m, MetricsMsg)][-1].values
            published.append((metrics.get("align_dy_px", np.nan), metrics.get("align_du_px", np.nan)))
        eng.estimator.update(steps=40)
        return eng.estimator.volume(), np.array(published)

    truth = s.truth(0.0)
    vol_still, _ = run(still, False)
    vol_raw, none = run(s, False)
    vol_aligned, published = run(s, True)
    assert np.isnan(none).all()  # shifts are published only with align on
    true = s.shifts_px - s.shifts_px[0]
    est, tru = split_gauge(published, s.angles_deg)[0], split_gauge(true, s.angles_deg)[0]
    assert rms(est - tru) < 0.5
    assert rms(tru) > 1.0  # there was drift to correct

    def err(v):  # up to a translation of the whole particle: live, the first frames define where it is
        shift, _ = register(truth, v, RegistrationFilter(low_cut=0.0, high_cut=0.5, whiten=0.0, taper=0.0))
        return float(np.linalg.norm(fourier_shift(v, -shift) - truth) / np.linalg.norm(truth))

    # drift makes the live estimate ~6× worse than a still particle's; corrected, it is within 2×
    # (the first frames, before any reference exists, go in uncorrected and stay in the window)
    assert err(vol_aligned) < 0.4 * err(vol_raw)
    assert err(vol_aligned) < 2.0 * err(vol_still)
