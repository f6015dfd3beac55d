"""Benchmark metrics: TAP-Vid 2D, world-centric 3D, camera solve and cost.

Conventions (see ``engine/trackfile.py``): pixel coordinates are OpenCV (x right, y down, centre
of the top-left pixel = (0, 0)); ``cam_to_world`` is a (T, 4, 4) camera-to-world transform in
OpenCV camera axes (x right, y down, z forward); world units are those of the ground truth
(metres for rendered clips). Every metric function takes plain numpy arrays and returns a
``dict[str, float]`` (plus per-frame arrays where stated) so results can be tabulated directly.

* :func:`tapvid_metrics` reproduces deepmind/tapnet's ``compute_tapvid_metrics`` for one video
  ('first' or 'strided' query mode), with coordinates rescaled to 256x256 as the paper does.
* :func:`world_track_metrics` is the world-centric variant of TAPVid-3D's APD: predicted cameras
  are Sim(3)-aligned to ground truth (:func:`align_sim3`: rotation from the camera orientations,
  scale and translation from the centres), the same transform is applied to the
  predicted ``tracks_3d``, and a point counts as within threshold δ when its 3D error is below
  ``δ · z_gt / f_gt`` (δ in {1, 2, 4, 8, 16} px, z_gt its true depth in the true camera at that
  frame, f_gt the geometric mean focal length), exactly TAPVid-3D's depth-adaptive threshold.
* :func:`camera_metrics`: ATE (Umeyama on centres, as evo) / rotation error / RPE / focal /
  reprojection error / success.
* :class:`CostMeter` and :func:`run_measured`: wall time, peak RSS, throughput.
"""
from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

PIXEL_THRESHOLDS = (1, 2, 4, 8, 16)
TAPVID_RESOLUTION = (256, 256)  # (width, height) the TAP-Vid paper metrics assume


# ------------------------------------------------------------------------------------ TAP-Vid 2D
def tapvid_eval_mask(query_frames: np.ndarray, n_frames: int, query_mode: str = "first") -> np.ndarray:
    """(N, T) bool: frames that are scored for each query.

    'first': frames strictly after the query frame (points before it are assumed occluded and
    the query frame itself is given); 'strided': every frame except the query frame.
    """
    eye = np.eye(n_frames, dtype=np.int32)
    if query_mode == "first":
        table = np.cumsum(eye, axis=1) - eye
    elif query_mode == "strided":
        table = 1 - eye
    else:
        raise ValueError(f"unknown query mode {query_mode!r} (use 'first' or 'strided')")
    qf = np.round(np.asarray(query_frames, dtype=np.float64)).astype(np.int64)
    if qf.size and (qf.min() < 0 or qf.max() >= n_frames):
        raise ValueError(f"query frames must lie in [0, {n_frames - 1}]")
    return table[qf] > 0


def tapvid_metrics(query_frames: np.ndarray, gt_occluded: np.ndarray, gt_tracks: np.ndarray,
                   pred_occluded: np.ndarray, pred_tracks: np.ndarray, query_mode: str = "first",
                   image_size: tuple[int, int] | None = None,
                   eval_mask: np.ndarray | None = None) -> dict[str, float]:
    """TAP-Vid metrics of one video, as ``compute_tapvid_metrics`` defines them.

    Args:
        query_frames: (N,) frame index of each query (rounded to the nearest integer).
        gt_occluded, pred_occluded: (N, T) bool, True = occluded (i.e. ``~visible``).
        gt_tracks, pred_tracks: (N, T, 2) pixel x, y. NaN predictions never count as within a
            threshold.
        image_size: (width, height) of the footage; when given, coordinates are rescaled to
            256x256 first (the paper's convention; x by 256/W, y by 256/H). ``None`` scores in
            the given units.
        eval_mask: optional (N, T) bool further restricting the scored points (e.g. BADJA's
            annotated frames); combined with the query-mode mask.

    Returns ``occlusion_accuracy``, ``pts_within_{1,2,4,8,16}``, ``jaccard_{...}``,
    ``average_jaccard`` (AJ), ``average_pts_within_thresh`` (δ_avg), all fractions in [0, 1]
    (NaN when nothing is scored), plus ``n_eval`` (scored point-frames).
    """
    gt_occ = np.asarray(gt_occluded, dtype=bool)
    pr_occ = np.asarray(pred_occluded, dtype=bool)
    gt = np.asarray(gt_tracks, dtype=np.float64)
    pr = np.asarray(pred_tracks, dtype=np.float64)
    n, t = gt_occ.shape
    if gt.shape != (n, t, 2) or pr.shape != (n, t, 2) or pr_occ.shape != (n, t):
        raise ValueError(f"shape mismatch: gt {gt.shape}/{gt_occ.shape}, pred {pr.shape}/{pr_occ.shape}")
    if image_size is not None:
        scale = np.array([TAPVID_RESOLUTION[0] / image_size[0], TAPVID_RESOLUTION[1] / image_size[1]])
        gt, pr = gt * scale, pr * scale
    evalp = tapvid_eval_mask(query_frames, t, query_mode)
    if eval_mask is not None:
        evalp &= np.asarray(eval_mask, dtype=bool)
    out: dict[str, float] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["occlusion_accuracy"] = float(np.sum((pr_occ == gt_occ) & evalp) / np.sum(evalp))
        vis, pr_vis = ~gt_occ, ~pr_occ
        sq = np.sum(np.square(pr - gt), axis=-1)
        sq = np.where(np.isnan(sq), np.inf, sq)  # a missing prediction is never close
        fracs, jacs = [], []
        for thr in PIXEL_THRESHOLDS:
            within = sq < thr * thr
            correct = within & vis
            frac = np.sum(correct & evalp) / np.sum(vis & evalp)
            tp = np.sum(correct & pr_vis & evalp)
            gt_pos = np.sum(vis & evalp)
            fp = np.sum((((~vis) & pr_vis) | ((~within) & pr_vis)) & evalp)
            jac = tp / (gt_pos + fp)
            out[f"pts_within_{thr}"] = float(frac)
            out[f"jaccard_{thr}"] = float(jac)
            fracs.append(frac)
            jacs.append(jac)
    out["average_jaccard"] = float(np.mean(jacs))
    out["average_pts_within_thresh"] = float(np.mean(fracs))
    out["n_eval"] = float(np.sum(evalp))
    return out


def mean_metrics(per_video: Sequence[dict[str, float]]) -> dict[str, float]:
    """Benchmark score = plain mean over videos of each metric (NaNs ignored)."""
    keys = sorted({k for d in per_video for k in d})
    out = {}
    for k in keys:
        vals = np.array([d.get(k, np.nan) for d in per_video], dtype=np.float64)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


# ------------------------------------------------------------------------------- Sim(3) / poses
@dataclass(frozen=True)
class Sim3:
    """x_gt ≈ s · R · x_pred + t."""

    s: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """Transform points (..., 3)."""
        return self.s * np.asarray(pts, dtype=np.float64) @ self.R.T + self.t

    def apply_poses(self, c2w: np.ndarray) -> np.ndarray:
        """Transform camera-to-world poses (T, 4, 4): rotate, scale the centres."""
        c2w = np.asarray(c2w, dtype=np.float64)
        out = np.tile(np.eye(4), (len(c2w), 1, 1))
        out[:, :3, :3] = self.R @ c2w[:, :3, :3]
        out[:, :3, 3] = self.apply(c2w[:, :3, 3])
        return out

    @staticmethod
    def identity() -> "Sim3":
        return Sim3(1.0, np.eye(3), np.zeros(3))


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Sim3:
    """Least-squares similarity ``dst ≈ s R src + t`` (Umeyama 1991) for (M, 3) point sets."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 2:
        raise ValueError(f"umeyama needs two (M>=2, 3) arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = np.mean(np.sum(xs * xs, axis=1))
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    r = u @ sign @ vt
    s = float(np.trace(np.diag(d) @ sign) / var_s) if with_scale and var_s > 0 else 1.0
    return Sim3(s, r, mu_d - s * r @ mu_s)


def _project_so3(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, 2] *= -1
        r = u @ vt
    return r


def align_sim3(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> Sim3:
    """Sim(3) taking the predicted world frame onto the ground-truth one, from whole poses.

    The rotation is the chordal mean of ``R_gt R_pred^T`` over frames (camera orientations),
    then scale and translation are the least-squares fit of the centres given that rotation.
    Umeyama on centres alone (used for ATE, the standard) leaves the roll about a near-straight
    path unobservable — typical of short hand-held shots, where it can be off by tens of
    degrees although every camera is right — and says nothing at all for a tripod. For a
    tripod (no predicted travel) the scale stays 1.
    """
    p = np.asarray(pred_c2w, dtype=np.float64)
    g = np.asarray(gt_c2w, dtype=np.float64)
    cp, cg = p[:, :3, 3], g[:, :3, 3]
    r = _project_so3(np.einsum("tij,tkj->ik", g[:, :3, :3], p[:, :3, :3]))
    xp = (cp - cp.mean(0)) @ r.T
    xg = cg - cg.mean(0)
    den = float(np.sum(xp * xp))
    s = float(np.sum(xp * xg) / den) if den > 1e-12 * max(1.0, float(np.sum(xg * xg))) else 1.0
    if s <= 0:
        s = 1.0
    return Sim3(s, r, cg.mean(0) - s * r @ cp.mean(0))


def align_centres(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> Sim3:
    """Umeyama Sim(3) on camera centres (the ATE convention of evo / TUM); falls back to
    :func:`align_sim3` when the true centres do not move (tripod)."""
    cp = np.asarray(pred_c2w, dtype=np.float64)[:, :3, 3]
    cg = np.asarray(gt_c2w, dtype=np.float64)[:, :3, 3]
    if len(cg) >= 2 and np.ptp(cg, axis=0).max() > 1e-9 and np.ptp(cp, axis=0).max() > 1e-12:
        return umeyama(cp, cg)
    return align_sim3(pred_c2w, gt_c2w)


def rotation_angle_deg(r: np.ndarray) -> np.ndarray:
    """Angle (degrees) of rotation matrices (..., 3, 3)."""
    tr = np.trace(r, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def path_length(c2w: np.ndarray) -> float:
    """Sum of distances between consecutive camera centres (world units)."""
    c = np.asarray(c2w, dtype=np.float64)[:, :3, 3]
    return float(np.sum(np.linalg.norm(np.diff(c, axis=0), axis=1)))


def ate(pred_c2w: np.ndarray, gt_c2w: np.ndarray, align: Sim3 | None = None) -> dict[str, float]:
    """Absolute trajectory error: RMSE of camera centres after Sim(3) alignment.

    ``align`` defaults to :func:`align_centres` (Umeyama on centres). Returns ``ate`` (world
    units), ``ate_pct`` (% of the ground-truth path length; NaN for a path shorter than 1e-9),
    ``are_deg`` (mean rotation error under the same alignment) and its scale ``sim3_scale``.
    """
    align = align or align_centres(pred_c2w, gt_c2w)
    al = align.apply_poses(pred_c2w)
    g = np.asarray(gt_c2w, dtype=np.float64)
    err = np.linalg.norm(al[:, :3, 3] - g[:, :3, 3], axis=1)
    rmse = float(np.sqrt(np.mean(err ** 2)))
    plen = path_length(g)
    rot = rotation_angle_deg(np.einsum("tji,tjk->tik", g[:, :3, :3], al[:, :3, :3]))
    return {"ate": rmse, "ate_pct": 100.0 * rmse / plen if plen > 1e-9 else float("nan"),
            "are_deg": float(np.mean(rot)), "sim3_scale": float(align.s), "path_length": plen}


def rpe(pred_c2w: np.ndarray, gt_c2w: np.ndarray, scale: float = 1.0, delta: int = 1) -> dict[str, float]:
    """Relative pose error between frames i and i+delta (evo's RPE, all pairs).

    ``E_i = (G_i^-1 G_{i+δ})^-1 (P_i^-1 P_{i+δ})`` with predicted translations multiplied by
    ``scale`` (the Sim(3) scale). Returns ``rpe_rot_deg`` (mean rotation angle of E per step,
    degrees per ``delta`` frames) and ``rpe_trans`` (RMSE of E's translation, world units).
    """
    p = np.array(pred_c2w, dtype=np.float64)
    g = np.asarray(gt_c2w, dtype=np.float64)
    p[:, :3, 3] *= scale
    if len(p) <= delta:
        return {"rpe_rot_deg": float("nan"), "rpe_trans": float("nan")}
    rel_p = np.linalg.inv(p[:-delta]) @ p[delta:]
    rel_g = np.linalg.inv(g[:-delta]) @ g[delta:]
    e = np.linalg.inv(rel_g) @ rel_p
    return {"rpe_rot_deg": float(np.mean(rotation_angle_deg(e[:, :3, :3]))),
            "rpe_trans": float(np.sqrt(np.mean(np.sum(e[:, :3, 3] ** 2, axis=1))))}


def focal_error(pred_K: np.ndarray, gt_K: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-frame relative error |f_pred − f_gt| / f_gt of the geometric-mean focal, and its median."""
    fp = np.sqrt(np.asarray(pred_K)[:, 0, 0] * np.asarray(pred_K)[:, 1, 1])
    fg = np.sqrt(np.asarray(gt_K)[:, 0, 0] * np.asarray(gt_K)[:, 1, 1])
    e = np.abs(fp - fg) / fg
    return e, float(np.median(e))


def project(points_world: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, T, 3) world points with per-frame cameras; returns pixels (N, T, 2), depth (N, T)."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
    pc = np.einsum("tij,ntj->nti", w2c[:, :3, :3], points_world) + w2c[None, :, :3, 3]
    z = pc[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        uv = np.einsum("tij,ntj->nti", np.asarray(K, dtype=np.float64), pc)
        px = uv[..., :2] / uv[..., 2:3]
    return px, z


def reprojection_error(tracks_2d: np.ndarray, visible: np.ndarray, tracks_3d: np.ndarray,
                       c2w: np.ndarray, K: np.ndarray) -> float:
    """Mean pixel distance between ``tracks_2d`` and the projection of ``tracks_3d`` (a track
    file's own consistency) over visible point-frames with finite 3D in front of the camera."""
    px, z = project(np.asarray(tracks_3d, dtype=np.float64), c2w, K)
    d = np.linalg.norm(px - np.asarray(tracks_2d, dtype=np.float64), axis=-1)
    ok = np.asarray(visible, bool) & np.isfinite(d) & (z > 0)
    return float(np.mean(d[ok])) if ok.any() else float("nan")


def camera_metrics(pred_c2w: np.ndarray, gt_c2w: np.ndarray, pred_K: np.ndarray, gt_K: np.ndarray,
                   solved: np.ndarray | None = None, reproj_error_px: float = float("nan"),
                   success_ate_pct: float = 5.0, success_rot_deg: float = 2.0,
                   min_solved_fraction: float = 0.9) -> dict[str, float]:
    """Camera-solve accuracy of one clip.

    Args:
        solved: (T,) bool frames the method reports as solved (default: finite poses). Errors
            are computed over solved frames only; ``solved_fraction`` reports the coverage.
        reproj_error_px: the solve's mean reprojection error (see :func:`reprojection_error`).

    ``success`` is 1 when ≥ ``min_solved_fraction`` of frames are solved and the trajectory is
    right: ATE ≤ ``success_ate_pct`` % of the path or, for a path too short to measure
    (< 1 mm of travel: a tripod shot), mean rotation error ≤ ``success_rot_deg`` degrees.
    """
    p = np.asarray(pred_c2w, dtype=np.float64)
    g = np.asarray(gt_c2w, dtype=np.float64)
    ok = np.isfinite(p).all(axis=(1, 2)) if solved is None else (np.asarray(solved, bool)
                                                                & np.isfinite(p).all(axis=(1, 2)))
    out = {"solved_fraction": float(np.mean(ok)), "reproj_error_px": float(reproj_error_px)}
    nan_keys = ("ate", "ate_pct", "are_deg", "rpe_rot_deg", "rpe_trans", "focal_err_median",
                "sim3_scale", "path_length")
    if ok.sum() < 2:
        out.update({k: float("nan") for k in nan_keys})
        out["success"] = 0.0
        return out
    pk, gk = p[ok], g[ok]
    out.update(ate(pk, gk, align_centres(pk, gk)))
    al = align_sim3(pk, gk)  # pose-based: well posed for orientations on any path
    out["are_deg"] = float(np.mean(rotation_angle_deg(
        np.einsum("tji,tjk->tik", gk[:, :3, :3], al.apply_poses(pk)[:, :3, :3]))))
    out.update(rpe(pk, gk, scale=al.s))
    _, out["focal_err_median"] = focal_error(np.asarray(pred_K)[ok], np.asarray(gt_K)[ok])
    short = out["path_length"] < 1e-3
    good = out["are_deg"] <= success_rot_deg if short else out["ate_pct"] <= success_ate_pct
    out["success"] = float(out["solved_fraction"] >= min_solved_fraction and bool(good))
    return out


# ------------------------------------------------------------------------------- 3D world tracks
def world_track_metrics(gt_tracks_3d: np.ndarray, gt_visible: np.ndarray, gt_c2w: np.ndarray,
                        gt_K: np.ndarray, pred_tracks_3d: np.ndarray, pred_c2w: np.ndarray,
                        query_frames: np.ndarray, group: np.ndarray | None = None,
                        query_mode: str = "first", align: Sim3 | None = None) -> dict[str, float]:
    """World-centric 3D track accuracy (TAPVid-3D APD with depth-adaptive thresholds).

    The predicted world is mapped onto the true one with ``align`` (default
    :func:`align_sim3` of the predicted cameras), then for every scored point-frame (true
    point visible, frame after the query frame in 'first' mode) the 3D error
    ``|S(p_pred) − p_gt|`` is compared with ``δ · z_gt / sqrt(fx fy)`` for δ in
    {1, 2, 4, 8, 16}. NaN predictions count as misses (infinite error).

    Returns, for subsets ``all`` / ``static`` (group −1) / ``dynamic`` (group ≥ 0):
    ``apd3d_<subset>`` (mean fraction within, over the five thresholds; missing = miss),
    ``median_err3d_<subset>`` (world units, over the point-frames that have a prediction; NaN
    if none), ``coverage3d_<subset>`` (fraction with a finite prediction) and ``n3d_<subset>``.
    """
    gt = np.asarray(gt_tracks_3d, dtype=np.float64)
    pr = np.asarray(pred_tracks_3d, dtype=np.float64)
    n, t = gt.shape[:2]
    if align is None:
        fin = np.isfinite(np.asarray(pred_c2w, dtype=np.float64)).all(axis=(1, 2))
        align = align_sim3(np.asarray(pred_c2w)[fin], np.asarray(gt_c2w)[fin]) if fin.sum() >= 2 \
            else Sim3.identity()
    pr_al = align.apply(pr)
    err = np.linalg.norm(pr_al - gt, axis=-1)
    err = np.where(np.isfinite(err), err, np.inf)
    _, z = project(gt, gt_c2w, gt_K)
    f = np.sqrt(np.asarray(gt_K)[:, 0, 0] * np.asarray(gt_K)[:, 1, 1])
    unit = z / f[None, :]  # world units per pixel at the point's true depth
    evalp = tapvid_eval_mask(query_frames, t, query_mode) & np.asarray(gt_visible, bool) & (z > 0)
    grp = np.full(n, -1) if group is None else np.asarray(group)
    out: dict[str, float] = {}
    for name, sel in (("all", np.ones(n, bool)), ("static", grp < 0), ("dynamic", grp >= 0)):
        m = evalp & sel[:, None]
        cnt = int(m.sum())
        out[f"n3d_{name}"] = float(cnt)
        if cnt == 0:
            for k in ("apd3d", "median_err3d", "coverage3d"):
                out[f"{k}_{name}"] = float("nan")
            continue
        e, u = err[m], unit[m]
        out[f"apd3d_{name}"] = float(np.mean([np.mean(e < d * u) for d in PIXEL_THRESHOLDS]))
        fin = np.isfinite(e)
        out[f"median_err3d_{name}"] = float(np.median(e[fin])) if fin.any() else float("nan")
        out[f"coverage3d_{name}"] = float(np.mean(np.isfinite(e)))
    return out


# ------------------------------------------------------------------------------------------ cost
def _kb_to_mb(kb: float) -> float:
    return kb / 1024.0  # Linux ru_maxrss is in KiB


@dataclass
class Cost:
    """Cost of one run: wall seconds, peak resident memory (MiB), throughput."""

    wall_s: float
    peak_rss_mb: float
    point_frames: int = 0
    returncode: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Tracked point-frames per second."""
        return self.point_frames / self.wall_s if self.wall_s > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb,
                "throughput_pf_s": self.throughput}


def run_measured(cmd: Sequence[str], point_frames: int = 0, timeout: float | None = None,
                 cwd: str | None = None, env: dict | None = None,
                 log_path: str | None = None) -> Cost:
    """Run ``cmd`` as a child process; return its wall time and its own peak RSS.

    Peak RSS comes from ``os.wait4`` (the kernel's ``ru_maxrss`` of exactly that child and
    its waited-for descendants), so concurrent runs do not pollute each other's numbers.
    stdout/stderr go to ``log_path`` (or are discarded). On timeout the child is killed and
    ``returncode`` is -9.
    """
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
        deadline = None if timeout is None else t0 + timeout
        try:
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    os.killpg(proc.pid, 9)
                    pid, status, ru = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:
            # interrupted (Ctrl-C, a timeout around us): take the child's whole group down too,
            # since it runs in its own session and would otherwise be orphaned
            try:
                os.killpg(proc.pid, 9)
                os.wait4(proc.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        return Cost(wall, _kb_to_mb(ru.ru_maxrss), point_frames, proc.returncode)
    finally:
        if log_path:
            out.close()


class CostMeter:
    """Measure an in-process block: ``with CostMeter(point_frames=N*T) as c: ...; c.cost``.

    Peak RSS is the process high-water mark (reset at entry through ``/proc/self/clear_refs``
    where the kernel allows it, otherwise the lifetime peak).
    """

    def __init__(self, point_frames: int = 0):
        self.point_frames = point_frames
        self.cost: Cost | None = None

    def __enter__(self) -> "CostMeter":
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t0
        self.cost = Cost(wall, peak_rss_mb(), self.point_frames)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (VmHWM, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _kb_to_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
