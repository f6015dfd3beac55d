"""How well a shot pins the self-calibrated focal length (after the solve; changes nothing).

Forward / dolly-in motion and other near-degenerate camera paths leave the focal length weakly
constrained by the images: a pure translation along the optical axis is explained equally well
by any focal (scaling f and the points' lateral offsets together leaves every projection
unchanged), so the solved value goes wherever noise and tracker bias push it. The solver must say
so instead of returning a confident wrong lens.

Measure: the marginal standard deviation of the focal parameter(s) at the solution, from the
bundle adjustment's Gauss-Newton normal equations (:func:`engine.solve.bundle.bundle_adjust`
with ``marginals=True``; points eliminated by the Schur complement, Huber IRLS weights), two
ways: ``formal`` (independent errors, scaled by the residual RMS) and ``track_clustered`` (a
sandwich estimate clustered by track: real trackers' errors are correlated along a track, slow
drift or sticking to texture, and then the formal value is 3-6x too optimistic). The report
uses the larger. Cost: about one LM iteration, 2-8 % of the solve. Why not a profile likelihood
(re-solve with the focal pinned at +-5/10/20 %): several extra bundle adjustments for the same
information, and the same blindness to correlated errors unless clustered too.

The principal point's 1-sigma comes from the same marginals (``refine_pp``) on the same posed
problem (:func:`final_problem`); :mod:`engine.solve.principal_point` decides with it.
"""
from __future__ import annotations

import numpy as np

from .bundle import BAState, bundle_adjust

# Warn when the relative 1-sigma (the larger estimate) exceeds this. Calibrated on (sigma vs the
# actual focal error, no focal given): rendered benchmark clips with three trackers (worldtrack,
# LK, DIS), tests/engine/solve_synth.py scenes, KITTI (full 51 frames and 20-30 frame parts).
# Every case with a focal error >= 5 % had sigma >= 0.98 % (forward synthetic 0.98 % / 4.7 %,
# KITTI 4.7-5.1 % / 11-19 %, up to 740 % on KITTI parts, benchmark dynamic 2.8-6.1 %,
# static with LK/DIS 1.3-1.6 % / 5-10 %); quiet cases stayed <= 0.69 % with errors <= 2.9 %
# (orbit synthetics 0.1-0.3 %, benchmark tripod 0.1-0.2 %, static_1 0.5-0.7 % / 1.8-2.9 %).
FOCAL_SIGMA_WARN = 0.0075
# Reported values are capped here (JSON has no infinity); >= 1 means "not observable".
FOCAL_SIGMA_CAP = 10.0


def focal_sigma(result: dict, mode: str, xs: np.ndarray, vs: np.ndarray, cx: float, cy: float,
                sigma: float, n_dist: int, per_frame: bool) -> dict:
    """Marginal 1-sigma of the solved focal length(s) of a finished solve.

    ``result``: the dict of :func:`engine.solve.incremental.solve_general` /
    :func:`engine.solve.zoom.solve_zoom` (``mode="general"``) or
    :func:`engine.solve.rotation.solve_rotation` (``mode="tripod"``); ``xs`` (n, T, 2) px and
    ``vs`` (n, T) the static tracks it was solved from; ``sigma`` the 2D noise estimate (px) the
    solve used for its Huber threshold; ``n_dist`` the number of distortion terms solved;
    ``per_frame`` one focal per frame (zoom). The BA problem is rebuilt exactly as the solver's
    last refinement posed it (same observations, loss threshold and priors) and evaluated, not
    refined. Returns relative 1-sigma values ``formal`` and ``track_clustered`` (median over
    frames for a zoom; capped at :data:`FOCAL_SIGMA_CAP`) and ``residual_rms_px`` (the weighted
    residual RMS per coordinate that scales the formal value).
    """
    st, cam, pt, uv, kw = final_problem(result, mode, xs, vs, cx, cy, sigma, per_frame)
    if len(cam) == 0:
        return {"formal": FOCAL_SIGMA_CAP, "track_clustered": FOCAL_SIGMA_CAP,
                "residual_rms_px": 0.0}
    _, info = bundle_adjust(st, cam, pt, uv, refine_focal=True, n_dist=n_dist, max_nfev=0,
                            marginals=True, **kw)

    def rel(key):
        r = np.asarray(info[key], np.float64) / st.focals
        r = np.where(np.isfinite(r), r, FOCAL_SIGMA_CAP)
        return float(min(np.median(r), FOCAL_SIGMA_CAP))

    return {"formal": rel("focal_sigma_px"), "track_clustered": rel("focal_sigma_track_px"),
            "residual_rms_px": float(info["sigma0_px"])}


def final_problem(result: dict, mode: str, xs: np.ndarray, vs: np.ndarray, cx: float, cy: float,
                  sigma: float, per_frame: bool) -> tuple[BAState, np.ndarray, np.ndarray,
                                                          np.ndarray, dict]:
    """The solver's last bundle adjustment of a finished solve, posed again: (state, cam (M,),
    pt (M,), uv (M, 2) px, bundle_adjust keyword arguments). Arguments as :func:`focal_sigma`;
    ``(cx, cy)`` the principal point (px) to pose it with. Also used by
    :mod:`engine.solve.principal_point`."""
    if mode == "tripod":
        return _tripod_problem(result, xs, vs, cx, cy, sigma, per_frame)
    return _general_problem(result, xs, cx, cy, sigma, per_frame)


def _general_problem(result, xs, cx, cy, sigma, per_frame):
    """As :meth:`engine.solve.incremental._Recon.bundle` poses the final refinement."""
    frames = np.flatnonzero(result["registered"])
    pts = np.flatnonzero(np.isfinite(result["points"][:, 0]))
    v = result["vis"][np.ix_(pts, frames)]
    pi, ci = np.nonzero(v)
    f = result["focals"]
    if per_frame:
        fidx, focals = np.arange(len(frames)), f[frames].astype(np.float64)
    else:
        fidx, focals = np.zeros(len(frames), int), np.array([np.median(f[frames])], np.float64)
    st = BAState(result["rvecs"][frames].astype(np.float64),
                 result["ts"][frames].astype(np.float64), focals, fidx,
                 result["points"][pts].astype(np.float64), cx, cy,
                 np.asarray(result["dist"], np.float64).copy())
    uv = xs[pts[pi], frames[ci]].astype(np.float64)
    thresh = max(1.5, 3 * sigma)
    kw = dict(fixed_cams=(0,), f_scale=thresh / 2, focal_smooth=5.0 if per_frame else 0.0)
    return st, ci, pi, uv, kw


def _tripod_problem(result, xs, vs, cx, cy, sigma, per_frame):
    """As :func:`engine.solve.rotation.solve_rotation` poses its last refinement."""
    T = vs.shape[1]
    ok = vs.sum(1) >= 2
    cam, pt = np.nonzero(vs[ok].T)
    pts_idx = np.flatnonzero(ok)
    keep = np.asarray(result.get("inlier_obs", np.ones(len(cam), bool)), bool)
    uv = xs[pts_idx[pt], cam].astype(np.float64)
    f = result["focals"]
    if per_frame:
        fidx, focals = np.arange(T), f.astype(np.float64)
    else:
        fidx, focals = np.zeros(T, int), np.array([float(f[0])])
    st = BAState(np.asarray(result["rvecs"], np.float64).copy(), np.zeros((T, 3)), focals, fidx,
                 result["dirs"][ok].astype(np.float64), cx, cy,
                 np.asarray(result["dist"], np.float64).copy())
    kw = dict(rotation_only=True, f_scale=max(1.0, 2 * sigma),
              focal_smooth=20.0 if per_frame else 0.0)
    return st, cam[keep], pt[keep], uv[keep], kw
