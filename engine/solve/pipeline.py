"""The camera solve on numpy arrays: track selection, background segmentation, model selection
(tripod vs general motion), focal self-calibration, reconstruction and the solve report.

Entry point: :func:`solve_cameras`. Cameras come back as ``cam_to_world`` (T, 4, 4) in OpenCV
axes and ``K`` (T, 3, 3) in pixels, in the *solver's* frame (first reconstructed camera at the
origin); :mod:`engine.lift.world` then chooses the documented world frame.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .camera import pose_to_c2w
from .incremental import SolveFailure, solve_general
from .models import estimate_noise, focal_from_fundamentals, gric_pair
from .rotation import SPHERE_RADIUS, solve_rotation
from .segment import frame_pairs, multibody_labels, rigid_bodies, static_belief
from .grow import anchor_frames, static_segments
from .select import select_keyframes, select_tracks
from ..progress import stage_of

MIN_FRAMES = 2
DIST_MODELS = {"none": 0, "k1": 1, "k1k2": 2}
# rounds (>= 1) of growing the static set by consistent track segments (engine.solve.grow).
# Measured on the 15 benchmark clips: 1 round took the focal error of deform_0/deform_2 from
# 11/10 % (whole consistent tracks, the growth before it) to 4.1/0.25 %; 3 rounds gave 3.0/0.4 %
# but drifted static_0 from 0.8 to 2.2 % (the focal valley is flat: each round re-fits the
# tracker's drift)
GROW_ROUNDS = 1
#: below this fraction of the sampled tracks, the clustering's background is taken to be
#: fragmented and the per-pair vote decides (every benchmark clip clusters >= 15 %; a forward
#: driving shot clusters ~2 %)
MIN_CLUSTER_BACKGROUND = 0.10
SEGMENTATION_CLUSTERS = "rigid-body preference clustering"
#: runs of a self-calibrated solve (:func:`solve_cameras`); measured with benchmarks.stability
#: (6 jittered runs per clip): keeping the lowest focal uncertainty of 3 took the mean focal
#: error of zoom_0 6.5 -> 2.7 %, dynamic_2 6.7 -> 0.7 %, deform_2 2.1 -> 1.2 %, static_0
#: 0.64 -> 0.28 %, tripod_2 0.37 -> 0.22 %
SOLVE_RESTARTS = 3
#: a restart is kept only if its focal uncertainty is below this fraction of the kept run's.
#: KITTI (forward driving, every run poorly constrained): the unjittered run's ATE 0.64 % at
#: +-5.05 %, a restart's 14.6 % at +-4.73 %. On the 6-run data (ordered triples) 0.75 still cuts
#: the tails (zoom_0 worst 3.4 %, dynamic_2 3.75 %, deform_2 2.2 %)
RESTART_SIGMA_MARGIN = 0.75
#: px of Gaussian jitter on the sampled tracks of restarts 2, 3, ...: far below any tracker's
#: noise (no information changes), enough to flip the solve's rounding-level choices
RESTART_JITTER_PX = 0.001
#: the restarts' focal lengths differ by more than this fraction: a warning
RESTART_SPREAD_WARN = 0.05
#: a first run whose focal is pinned this well (track-clustered 1-sigma, relative) is kept
#: without restarts: the runs that went wrong had 2-4x the uncertainty of the good ones (dynamic_2:
#: 1.4-2.2 % against 0.65 %), and below 1 % the focal is within the 2 % target at 2 sigma. In the
#: suite no run under 1 % was ever replaced; the cost: tripod_2's mean focal error goes back to
#: its unrestarted 0.37 % (6-run data; 0.22 % with restarts), while a dense 320x240x48 solve
#: saves two thirds of each solve (two solves of ~24 s)
RESTART_SKIP_SIGMA = 0.01


class SolveError(RuntimeError):
    """The shot cannot be solved. ``str(e)`` says why; ``e.report`` holds the partial report."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


@dataclass
class CameraSolution:
    """Result of :func:`solve_cameras` (solver frame, before the world frame is chosen)."""

    cam_to_world: np.ndarray            # (T, 4, 4) OpenCV camera axes
    K: np.ndarray                       # (T, 3, 3) px
    dist: tuple[float, float, float]    # Blender polynomial k1, k2, k3 (k3 always 0)
    mode: str                           # "general" | "tripod"
    sample_ids: np.ndarray              # (n,) indices of the tracks the solve used
    sample_static: np.ndarray           # (n,) bool: judged static background
    sample_points: np.ndarray           # (n, 3) solver-frame points (NaN if not reconstructed)
    sigma: float                        # estimated 2D noise, px
    report: dict = field(default_factory=dict)


def _gather(arr, ids):
    return np.asarray(arr[np.sort(ids)]) if len(ids) else np.asarray(arr[:0])


def solve_cameras(tracks_2d: np.ndarray, visible: np.ndarray, confidence: np.ndarray | None,
                  image_size: tuple[int, int], *, focal: float | None = None,
                  principal_point: str | tuple[float, float] | None = "auto", zoom: bool = False,
                  distortion: str = "none", max_tracks: int = 1500,
                  progress=None, restarts: int | None = None) -> CameraSolution:
    """Solve the camera path and lens from 2D tracks (arguments: :func:`_solve_once`).

    A self-calibrated solve (``focal`` None) runs ``restarts`` times (default
    ``SOLVE_RESTARTS``; a known focal: once), the later runs on the sampled tracks jittered by
    ``RESTART_JITTER_PX``, and keeps the run whose focal is best constrained (lowest
    track-clustered ``focal_sigma_rel``; a later run must beat the kept one by the factor
    ``RESTART_SIGMA_MARGIN``); a first run whose focal is already pinned within
    ``RESTART_SKIP_SIGMA`` is kept without restarts (``report["restarts_skipped"]`` says so).
    Why: the solve's discrete choices (initial pair,
    keyframes, RANSAC inlier sets) flip on the last bits of the input, and now and then such a
    flip ends in a far worse solution (measured with ``benchmarks.stability``: focal errors of
    24 % on zoom_0, 35 % on dynamic_2 and 8.8 % on deform_2 in one run of six) whose own
    uncertainty is 2-4x that of the runs that went right. ``report["restarts"]`` lists every
    run; a warning says when they disagree on the focal. Fails only when every run fails (with
    the first run's error).
    """
    n_runs = max(1, int(restarts if restarts is not None else
                        (SOLVE_RESTARTS if focal is None else 1)))
    runs: list[dict] = []
    best: CameraSolution | None = None
    best_sig, kept = np.inf, -1
    first_error: SolveError | None = None
    t0 = time.monotonic()
    for k in range(n_runs):
        try:
            sol = _solve_once(tracks_2d, visible, confidence, image_size, focal=focal,
                              principal_point=principal_point, zoom=zoom, distortion=distortion,
                              max_tracks=max_tracks, progress=progress, jitter_seed=k)
        except SolveError as e:
            first_error = first_error or e
            runs.append({"run": k, "ok": False, "reason": str(e)})
            continue
        r = sol.report
        sig = r.get("focal_sigma_rel")
        sig = float(sig) if sig is not None and np.isfinite(sig) else np.inf
        runs.append({"run": k, "ok": True, "focal_px": r["focal_px"], "focal_sigma_rel": sig,
                     "reproj_median_px": r["reproj_median_px"], "init_pair": r.get("init_pair")})
        # a restart replaces the kept run only when it is clearly better constrained: where
        # every run is poorly constrained (forward driving) the sigmas differ by chance
        if best is None or sig < RESTART_SIGMA_MARGIN * best_sig:
            best, best_sig, kept = sol, sig, k
        if k == 0 and sig < RESTART_SKIP_SIGMA:
            break
    if best is None:
        raise first_error
    rep = best.report
    if n_runs > 1:
        for e in runs:
            e["kept"] = e["run"] == kept
        rep["restarts"] = runs
        if len(runs) < n_runs:
            rep["restarts_skipped"] = (f"the first run pinned the focal within "
                                       f"{100 * best_sig:.2f} % (1 sigma, below "
                                       f"{100 * RESTART_SKIP_SIGMA:g} %): no restarts")
        rep["timings"]["restarts_total"] = time.monotonic() - t0
        f = np.array([e["focal_px"] for e in runs if e["ok"]])
        spread = float(np.ptp(f) / np.median(f)) if len(f) > 1 else 0.0
        if spread > RESTART_SPREAD_WARN:
            rep["warnings"].append(
                f"restarts of the solve disagree on the focal length ({f.min():.1f}-{f.max():.1f}"
                f" px): kept the best-constrained run ({rep['focal_px']:.1f} px); a known focal "
                "(--focal, or Known Focal Length in Blender) removes the ambiguity")
    return best


def _solve_once(tracks_2d: np.ndarray, visible: np.ndarray, confidence: np.ndarray | None,
                image_size: tuple[int, int], *, focal: float | None = None,
                principal_point: str | tuple[float, float] | None = "auto", zoom: bool = False,
                distortion: str = "none", max_tracks: int = 1500,
                progress=None, jitter_seed: int = 0) -> CameraSolution:
    """Solve the camera path and lens from 2D tracks, once.

    ``tracks_2d`` (N, T, 2) px (OpenCV), ``visible`` (N, T), ``confidence`` (N, T) or None; may be
    memory maps. ``focal`` in px when known (else self-calibrated). ``zoom``: one focal per frame.
    ``distortion``: ``"none"``, ``"k1"`` or ``"k1k2"``. ``principal_point``: ``"auto"`` (solve
    it when the footage pins it, else the image centre: :mod:`engine.solve.principal_point`),
    ``"centre"`` (or None) or a known ``(x, y)`` in px (OpenCV: the image centre is
    ``((W - 1) / 2, (H - 1) / 2)``). Raises :class:`SolveError` with a user-facing reason when
    the shot cannot be solved. ``jitter_seed`` > 0: the sampled tracks get N(0,
    ``RESTART_JITTER_PX``) px first (a restart of :func:`solve_cameras`).
    """
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    stage = stage_of(progress, "solve", total=4)
    stage.__enter__()

    def step():
        stage.advance()
    warnings: list[str] = []
    W, H = image_size
    N, T = visible.shape[:2]
    pp_mode = "centre" if principal_point is None else principal_point
    if isinstance(pp_mode, str) and pp_mode not in ("auto", "centre"):
        raise ValueError(f"principal_point must be 'auto', 'centre' or (x, y), got {pp_mode!r}")
    cx, cy = ((W - 1) / 2, (H - 1) / 2) if isinstance(pp_mode, str) else \
        (float(pp_mode[0]), float(pp_mode[1]))
    if distortion not in DIST_MODELS:
        raise ValueError(f"distortion must be one of {sorted(DIST_MODELS)}, got {distortion!r}")
    n_dist = DIST_MODELS[distortion]
    report: dict = {"ok": False, "n_frames": int(T), "n_tracks": int(N),
                    "image_size": [int(W), int(H)], "zoom_requested": bool(zoom),
                    "focal_given": focal is not None, "distortion_model": distortion,
                    "warnings": warnings, "timings": timings}

    def fail(msg: str):
        report["reason"] = msg
        report["timings"]["total"] = time.monotonic() - t_start
        raise SolveError(f"cannot solve the camera: {msg}", report)

    if T < MIN_FRAMES:
        fail(f"the clip has {T} frame(s); at least {MIN_FRAMES} are needed (8 or more recommended)")
    if T < 8:
        warnings.append(f"short clip ({T} frames): results may be unreliable")

    # ---- 1. subsample tracks
    t0 = time.monotonic()
    ids = select_tracks(tracks_2d, visible, confidence, image_size, max_tracks=max_tracks)
    report["n_tracks_used"] = int(len(ids))
    if len(ids) < 20:
        fail(f"only {len(ids)} tracks are long enough (>= 3 frames) to solve from; need >= 20")
    xy = np.nan_to_num(_gather(tracks_2d, ids).astype(np.float64))
    if jitter_seed:
        xy += np.random.default_rng(jitter_seed).normal(0.0, RESTART_JITTER_PX, xy.shape)
    vis = _gather(visible, ids).astype(bool)
    timings["select"] = time.monotonic() - t0
    step()

    # ---- 2. noise level and static background
    t0 = time.monotonic()
    short_pairs = [(t, t + 1) for t in np.linspace(0, T - 2, min(T - 1, 8)).round().astype(int)]
    sigma = estimate_noise(xy, vis, short_pairs) if T > 1 else 1.0
    sigma = max(sigma, 0.2)
    report["noise_sigma_px"] = round(sigma, 3)
    pairs = frame_pairs(T, vis)
    if not pairs:
        fail("no two frames share 20 or more tracks: tracks are too short or too sparse")
    bodies = rigid_bodies(xy, vis, thresh=max(1.0, 3 * sigma))
    static = bodies == 0
    report["segmentation"] = SEGMENTATION_CLUSTERS
    if static.sum() < max(15, MIN_CLUSTER_BACKGROUND * len(ids)):
        # too few tracks for clustering, or the clustering fragmented the background (forward
        # motion: short tracks, each surface nearly planar, so clusters do not merge): per-pair
        # vote (assumes the background dominates overall)
        labels = multibody_labels(xy, vis, pairs, thresh=max(1.0, 3 * sigma))
        belief = static_belief(labels, vis, pair_weights=[b - a for a, b in pairs])
        static = np.nan_to_num(belief, nan=0.0) >= 0.7
        report["segmentation"] = "per-pair epipolar vote"
    report["n_rigid_bodies_in_sample"] = int(bodies.max() + 1)
    report["n_static_candidates"] = int(static.sum())
    timings["segment"] = time.monotonic() - t0
    if static.sum() < 15:
        fail(f"could not find a consistent static background: only {int(static.sum())} tracks "
             "move together with the camera (the shot may be dominated by moving objects)")

    step()
    xs, vs = xy[static], vis[static]
    # ---- 3. model selection: rotation only (tripod) vs general motion
    t0 = time.monotonic()
    wide = [p for p in pairs if p[1] - p[0] >= max(1, (T - 1) // 4)][:12] or pairs[:6]
    n_h = n_f = 0
    Fs = []
    for a, b in wide:
        m = vs[:, a] & vs[:, b]
        g = gric_pair(xs[m, a], xs[m, b], sigma)
        if g is None:
            continue
        if g["gric_h"] < g["gric_f"]:
            n_h += 1
        else:
            n_f += 1
            Fs.append(g["F"])
    report["gric"] = {"pairs_homography": n_h, "pairs_general": n_f}
    tripod_candidate = n_h > n_f
    timings["model_selection"] = time.monotonic() - t0
    step()

    result = None
    mode = None
    # ---- 4a. general motion
    if not tripod_candidate:
        t0 = time.monotonic()
        if focal is None:
            f_init, sharp = (focal_from_fundamentals(Fs, cx, cy, float(max(W, H))) if Fs
                             else (1.2 * max(W, H), 1.0))
            report["focal_init_px"] = round(f_init, 2)
            # how peaked the two-view focal scan is: a diagnostic only (it fired on most good
            # shots too); the warning comes from the solution's focal uncertainty (step 5)
            report["focal_init_sharpness"] = round(sharp, 3)
        else:
            f_init = float(focal)
        kfs = select_keyframes(xs, vs, image_size)
        try:
            if zoom and focal is None:
                result = _solve_zoom(xs, vs, image_size, cx, cy, n_dist, kfs, sigma, progress,
                                     report)
            else:
                result = solve_general(xs, vs, image_size, cx, cy, f_init, focal is None, zoom,
                                       n_dist, kfs, sigma=sigma, progress=progress)
            mode = "general"
            # refine: every sample track consistent with the solved cameras joins the static
            # set (segmentation is conservative with short tracks); solve again if that helps.
            # Tracks join with their consistent *segment* only (the tracker drifts away from a
            # track's query frame; see engine.solve.grow), each further round on the last
            # round's cameras
            # each round is judged against the first solve's residual (the rounds' observation
            # sets differ, so comparing a round with the previous one says little)
            base_median = result["median"]
            used = vis & static[:, None]        # observations the current solution rests on
            first = used.copy()
            # tracks outside the segmentation's static set join only with a run near their
            # most confident (query) frame: movers' chance static fits lie elsewhere (grow.py).
            # Not after the per-pair vote: there the clustering fragmented the background
            # (forward motion), most static tracks are outside the set and start mid-clip,
            # and the restriction left KITTI's last frames unregistered (ATE 0.89 -> 10.5 %)
            anchor = None
            if report["segmentation"] == SEGMENTATION_CLUSTERS:
                anchor = anchor_frames(None if confidence is None else _gather(confidence, ids),
                                       vis)
            if anchor is not None:
                anchor[static] = False
            for grow_round in range(GROW_ROUNDS):
                seg = static_segments(xy, vis, result, cx, cy, max(1.0, 3 * sigma),
                                      anchor=anchor)
                grown = seg.any(1)
                vis_g = np.where(grown[:, None], seg, used)
                # frames the segments barely cover (late frames of a clip whose tracks were
                # mostly queried early, as counted in the first solution) keep every
                # observation of the grown set there: a frame must stay registrable, and the
                # robust adjustment prunes the worst of them
                thin = seg.sum(0) < np.maximum(30, 0.5 * first.sum(0))
                vis_g |= (grown | static)[:, None] & vis & thin[None]
                if not ((grown.sum() > 1.15 * static.sum() and not zoom)
                        or not result["registered"].all()
                        or (grow_round > 0 and grown.sum() > 0.9 * static.sum())):
                    break
                g_static = grown | static
                try:
                    r2 = solve_general(xy[g_static], vis_g[g_static], image_size, cx, cy,
                                       float(np.median(result["focals"])), focal is None, zoom,
                                       n_dist, select_keyframes(xy[g_static], vis_g[g_static],
                                                                image_size),
                                       sigma=sigma, progress=progress,
                                       focals_init=result["focals"].copy() if zoom else None)
                except SolveFailure:
                    break
                if r2["registered"].sum() >= result["registered"].sum() and \
                        r2["median"] <= 1.2 * base_median:
                    result, static = r2, g_static
                    used = vis_g & static[:, None]
                    xs, vs = xy[static], vis_g[static]
                    report["static_grown_to"] = int(static.sum())
                    report["static_grow_rounds"] = grow_round + 1
                else:
                    break
            # zoom auto-detection: residuals well above the noise floor with one focal, and a
            # per-frame focal explains the shot clearly better -> the lens zoomed
            floor = 1.18 * sigma    # median norm of 2D Gaussian noise
            if not zoom and focal is None and result["median"] > 1.1 * floor:
                try:
                    rz = _solve_zoom(xs, vs, image_size, cx, cy, n_dist,
                                     select_keyframes(xs, vs, image_size), sigma, progress, {})
                    if rz["median"] < 0.85 * result["median"] and np.ptp(np.log(rz["focals"])) > 0.03:
                        result = rz
                        report["zoom_detected"] = True
                        warnings.append("focal length changes during the shot: solved as a zoom")
                except SolveFailure:
                    pass
        except SolveFailure as e:
            warnings.append(f"general-motion solve failed ({e}); trying a nodal (tripod) solve")
            tripod_candidate = True
        timings["general"] = time.monotonic() - t0
    # ---- 4b. rotation only
    if tripod_candidate:
        t0 = time.monotonic()
        try:
            rot = solve_rotation(xs, vs, image_size, cx, cy, focal, zoom, n_dist, sigma)
            if not zoom and focal is None:
                # zoom auto-detection: a per-frame focal must explain the shot clearly better
                rz = solve_rotation(xs, vs, image_size, cx, cy, None, True, n_dist, sigma)
                spread = np.ptp(np.log(rz["focals"]))
                if rz["median"] < 0.8 * rot["median"] and spread > 0.03:
                    rot = rz
                    report["zoom_detected"] = True
                    warnings.append("focal length changes during the shot: solved as a zoom")
        except RuntimeError as e:
            fail(f"neither a moving-camera nor a tripod solve is possible ({e})")
        ok_rot = rot["median"] < max(1.0, 3 * sigma)
        if mode is None or (ok_rot and rot["median"] <= result["median"] * 1.2):
            if not ok_rot and mode is None:
                fail("the camera neither rotates about a fixed point (tripod fit error "
                     f"{rot['median']:.2f} px) nor has enough parallax for a moving-camera solve")
            mode = "tripod"
            result = rot
        timings["tripod"] = time.monotonic() - t0

    # ---- 5. principal point (auto: kept only when the footage pins it)
    result, cx, cy = _principal_point(report, pp_mode, result, mode, xs, vs, cx, cy, sigma, n_dist,
                                      bool(zoom or report.get("zoom_detected", False)) and
                                      bool(np.ptp(result["focals"]) > 0), focal is None,
                                      image_size)
    # ---- 6. package
    if mode == "tripod":
        c2w = pose_to_c2w(result["rvecs"], np.zeros((T, 3)))
        focals = result["focals"]
        pts = result["dirs"] * SPHERE_RADIUS
        report["sphere_radius"] = SPHERE_RADIUS
        warnings.append("tripod (nodal) shot: the camera only rotates; scene points are placed on "
                        f"a sphere of radius {SPHERE_RADIUS:g} around it (no depth is observable)")
    else:
        reg = result["registered"]
        c2w = pose_to_c2w(result["rvecs"], result["ts"])
        focals = result["focals"]
        if not reg.all():
            bad = np.flatnonzero(~reg)
            c2w = _fill_unregistered(c2w, reg)
            regs = np.flatnonzero(reg)
            focals = focals.copy()
            focals[bad] = np.interp(bad, regs, focals[regs])
            warnings.append(f"{len(bad)} frame(s) could not be registered and were interpolated: "
                            f"{bad[:10].tolist()}{'...' if len(bad) > 10 else ''}")
            report["unregistered_frames"] = bad.tolist()
        pts = result["points"]
        report["keyframes"] = result["keyframes"]
        report["init_pair"] = result["init_pair"]
    K = np.zeros((T, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focals
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1
    dist = (float(result["dist"][0]), float(result["dist"][1]), 0.0)
    sample_static = np.zeros(len(ids), bool)
    sample_points = np.full((len(ids), 3), np.nan)
    st_idx = np.flatnonzero(static)
    sample_points[st_idx] = pts
    sample_static[st_idx] = np.isfinite(pts).all(1)
    zoom_out = bool(zoom or report.get("zoom_detected", False))
    report.update({
        "ok": True, "mode": mode, "zoom": zoom_out,
        "focal_px": round(float(np.median(focals)), 3),
        "focal_source": "given" if focal is not None else "self-calibrated",
        "reproj_median_px": round(result["median"], 4), "reproj_rms_px": round(result["rms"], 4),
        "n_static_used": int(sample_static.sum()),
    })
    if zoom_out:
        report["focal_per_frame_px"] = [round(float(f), 3) for f in focals]
    # per-frame focal only where the solution has one (a shared-focal solve has all equal)
    _focal_observability(report, warnings, focal, result, mode, xs, vs, cx, cy, sigma, n_dist,
                         zoom_out and bool(np.ptp(result["focals"]) > 0))
    if n_dist:
        report["distortion"] = {"model": "polynomial", "k1": dist[0], "k2": dist[1], "k3": 0.0}
    if static.mean() < 0.5:
        warnings.append(f"only {static.mean():.0%} of the solve tracks behave as static "
                        "background; the rest was treated as moving or unreliable")
    if result["median"] > max(1.0, 3 * sigma):
        warnings.append(f"high reprojection error ({result['median']:.2f} px median): check the "
                        "tracks, lens distortion or rolling shutter")
    timings["total"] = time.monotonic() - t_start
    stage.__exit__(None, None, None)
    return CameraSolution(c2w, K, dist, mode, ids, sample_static, sample_points, sigma, report)


def _principal_point(report, pp_mode, result, mode, xs, vs, cx, cy, sigma, n_dist, per_frame,
                     refine_focal, image_size) -> tuple[dict, float, float]:
    """Report fields ``principal_point`` [x, y] px, ``principal_point_source`` (auto / centre /
    given), ``principal_point_solved``, ``principal_point_sigma_px`` (1-sigma of the free fit;
    None when not tried), ``principal_point_reason``; for ``"auto"`` try a free principal point
    and return the solution to use (``result``, cx, cy)."""
    report["principal_point_source"] = pp_mode if isinstance(pp_mode, str) else "given"
    report["principal_point_solved"] = False
    report["principal_point_sigma_px"] = None
    if pp_mode == "auto":
        from .principal_point import fit_principal_point

        t0 = time.monotonic()
        fit = fit_principal_point(result, mode, xs, vs, (cx, cy), sigma, n_dist, per_frame,
                                  refine_focal, image_size)
        report["timings"]["principal_point"] = time.monotonic() - t0
        report["principal_point_solved"] = fit.solved
        report["principal_point_sigma_px"] = fit.report.get("principal_point_sigma_px")
        report["principal_point_reason"] = fit.report["reason"]
        report["principal_point_detail"] = fit.report
        if fit.solved:
            result = fit.result
            cx, cy = fit.principal_point
    elif pp_mode == "centre":
        report["principal_point_reason"] = "image centre (as asked)"
    else:
        report["principal_point_reason"] = "given"
    report["principal_point"] = [round(float(cx), 4), round(float(cy), 4)]
    return result, cx, cy


def _focal_observability(report, warnings, focal, result, mode, xs, vs, cx, cy, sigma, n_dist,
                         per_frame) -> None:
    """Report how well the shot pins the self-calibrated focal and warn when it does not.

    ``focal_sigma_rel``: relative 1-sigma uncertainty of the focal (median over frames for a
    zoom; 0 when the focal was given; capped at 10), the larger of the formal and the
    track-clustered estimate (:mod:`engine.solve.observability`), with both and the residual
    RMS in ``focal_sigma_detail``. Reads the solution, changes nothing."""
    from .observability import FOCAL_SIGMA_WARN, focal_sigma

    if focal is not None:
        report["focal_sigma_rel"] = 0.0
        return
    t0 = time.monotonic()
    obs = focal_sigma(result, mode, xs, vs, cx, cy, sigma, n_dist, per_frame)
    report["timings"]["focal_sigma"] = time.monotonic() - t0
    rel = max(obs["formal"], obs["track_clustered"])
    report["focal_sigma_rel"] = round(rel, 6)
    report["focal_sigma_detail"] = {k: round(v, 6) for k, v in obs.items()}
    report["focal_sigma_warn_above"] = FOCAL_SIGMA_WARN
    if rel > FOCAL_SIGMA_WARN:
        why = ("too little rotation" if mode == "tripod"
               else "forward motion / little parallax or rotation")
        amount = "more than ±100 %" if rel >= 1.0 else f"±{100 * rel:.1f} %"
        warnings.append(f"focal length poorly constrained by this shot ({why}): {amount} (1σ); "
                        "give a known focal (--focal / --focal-mm + --sensor-width; in Blender: "
                        "Known Focal Length) for a reliable solve")


def _solve_zoom(xs, vs, image_size, cx, cy, n_dist, kfs, sigma, progress, report) -> dict:
    """Moving camera with per-frame focal: see :mod:`engine.solve.zoom`."""
    from .zoom import solve_zoom

    return solve_zoom(xs, vs, image_size, cx, cy, n_dist, kfs, sigma, progress, report)


def _fill_unregistered(c2w: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Interpolate poses of unregistered frames (slerp / lerp; held at the ends)."""
    from scipy.spatial.transform import Rotation, Slerp

    regs = np.flatnonzero(reg)
    T = len(c2w)
    out = c2w.copy()
    if len(regs) == 1:
        out[:] = c2w[regs[0]]
        return out
    tq = np.clip(np.arange(T), regs[0], regs[-1])
    sl = Slerp(regs, Rotation.from_matrix(c2w[regs, :3, :3]))
    out[:, :3, :3] = sl(tq).as_matrix()
    for k in range(3):
        out[:, k, 3] = np.interp(tq, regs, c2w[regs, k, 3])
    out[:, 3] = [0, 0, 0, 1]
    return out
