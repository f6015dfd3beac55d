"""Principal-point self-calibration: free it in a final bundle adjustment, keep it only when the
footage pins it.

Why it is usually left at the image centre: a shift of the principal point by ``d`` px is, to
first order, a rotation of every camera by ``d / f`` rad about its own centre. Only what that
rotation cannot mimic pins it: the second-order (``(x/f)^2``) terms of a wide field of view,
rotation about different axes across the shot, and parallax. Freed on footage that lacks those,
it follows the tracker's errors and drags the rotations along: on the rendered benchmark clips
(true point at the centre) its 1-sigma was 3-20 px and the free fit landed up to 16 px off.

Method (after the normal solve, cameras and focal converged with the principal point at the
centre): the solver's last refinement is posed again (same observations, Huber threshold and
priors: :mod:`engine.solve.observability`), re-converged once with the principal point fixed
(the baseline) and once with one shared ``(cx, cy)`` free under a weak Gaussian prior towards the
centre (1-sigma :data:`PP_PRIOR_FRAC` of the larger image side, so it cannot run away on a flat
valley). The free solution is kept only when both hold:

1. observable: its marginal 1-sigma from the normal equations at the solution (larger of the
   formal and the track-clustered estimate, larger axis) is below :data:`PP_SIGMA_MAX_FRAC` of the
   image width;
2. worth two parameters: the robust cost drop, in units of the residual variance per coordinate
   and divided by the track-clustering design effect (``(sigma_track / sigma_formal)^2``: with
   errors correlated along tracks there are fewer independent observations than residuals), is
   larger than the BIC penalty of two parameters, ``2 ln(n)`` with ``n`` the number of residual
   coordinates (~ 2 ln(2 M); 21 for M = 15000 observations). Same spirit as GRIC's ``k ln(r n)``
   model term (:mod:`engine.solve.models`).

Otherwise the centre is kept and the report says why. A given principal point (``X,Y``) skips
all of this.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bundle import bundle_adjust
from .observability import final_problem

#: Keep a solved principal point only when its 1-sigma is below this fraction of the image width
#: (1.6 px at 320 px, 6.4 px at 1280 px). Measured at 320x240: benchmark clips (true point at the
#: centre) static/dynamic/zoom/deform 2.8-20 px (0.9-6 %), free fits 2.6 (deform_1) and 16 px
#: (zoom_0) off; tripod 0.2 px, its fit 0.08 px off; synthetic wide-lens tripod 0.15 px and orbit
#: 0.8-1.5 px (fits within 3 sigma), long-lens orbit 7 px; KITTI driving (1241 px) 41 px.
PP_SIGMA_MAX_FRAC = 0.005
#: 1-sigma of the prior towards the image centre, fraction of the larger image side. Weak: it
#: adds ~1 % of the information of a principal point that passes PP_SIGMA_MAX_FRAC.
PP_PRIOR_FRAC = 0.05
#: Skip the free refinement when the 1-sigma at the centre is above this many times the limit
#: (the 1-sigma at the free solution differed from it by < 10 % on the test scenes).
PP_PRE_MARGIN = 1.5
#: Most LM iterations of each of the two refinements. They start converged but for the point;
#: the free one walks a flat valley (point vs rotations) in many small steps: 8 stopped 3 px
#: short on an orbit, 15 and 30 agreed.
PP_ITERS = 15


@dataclass
class PrincipalPointFit:
    """Outcome of :func:`fit_principal_point`."""

    solved: bool                    # keep the free principal point
    principal_point: tuple[float, float]   # the one to use (solved, or the centre), px
    report: dict = field(default_factory=dict)
    result: dict | None = None      # ``result`` updated with the refined cameras (when solved)


def parse_principal_point(text: str) -> str | tuple[float, float]:
    """``"auto"`` | ``"centre"`` (also ``"center"``) | ``(x, y)`` from ``"X,Y"`` (input px).

    Raises ValueError with a user-facing message."""
    t = str(text).strip().lower()
    if t in ("auto", "centre", "center"):
        return "centre" if t == "center" else t
    parts = t.split(",")
    if len(parts) == 2:
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            if np.isfinite(x) and np.isfinite(y):
                return (x, y)
    raise ValueError(f"principal point must be auto, centre or X,Y in pixels, got {text!r}")


def fit_principal_point(result: dict, mode: str, xs: np.ndarray, vs: np.ndarray,
                        centre: tuple[float, float], sigma: float, n_dist: int, per_frame: bool,
                        refine_focal: bool, image_size: tuple[int, int]) -> PrincipalPointFit:
    """Try a shared free principal point on a finished solve; decide whether to keep it.

    ``result``/``mode``/``xs``/``vs``/``sigma``/``n_dist``/``per_frame`` as for
    :func:`engine.solve.observability.focal_sigma` (``result`` solved with the principal point at
    ``centre``, OpenCV px); ``refine_focal``: the focal was self-calibrated (else held).
    Returns the decision, the report fields (``principal_point_sigma_px``, ``cost_drop``,
    ``penalty``, ``reason``, ...) and, when kept, a copy of ``result`` with the refined cameras,
    points, focal(s) and distortion. ``result`` itself is not modified.
    """
    W, H = image_size
    cx0, cy0 = float(centre[0]), float(centre[1])
    st, cam, pt, uv, kw = final_problem(result, mode, xs, vs, cx0, cy0, sigma, per_frame)
    rep: dict = {"sigma_max_px": round(PP_SIGMA_MAX_FRAC * W, 3)}
    if len(cam) < 20:
        rep["reason"] = "too few observations to free it"
        return PrincipalPointFit(False, (cx0, cy0), rep)
    common = dict(refine_focal=refine_focal, n_dist=n_dist, **kw)
    w_prior = max(sigma, 0.1) / (PP_PRIOR_FRAC * max(W, H))
    free = dict(refine_pp=True, pp_prior=(cx0, cy0, w_prior))
    sig_max_px = PP_SIGMA_MAX_FRAC * W
    # cheap first look (one normal-equation build at the centre): most footage does not pin the
    # point at all, and then the two refinements below are not worth their time
    _, info_c = bundle_adjust(st, cam, pt, uv, max_nfev=0, marginals=True, **free, **common)
    sig_c = _sigma_max(info_c)
    if sig_c >= PP_PRE_MARGIN * sig_max_px:
        rep["principal_point_sigma_px"] = round(min(sig_c, 1e6), 4)
        rep["reason"] = _unpinned(sig_c, sig_max_px)
        return PrincipalPointFit(False, (cx0, cy0), rep)
    # baseline: the same problem re-converged with the principal point fixed, so that both costs
    # come from equally converged solutions
    st0, info0 = bundle_adjust(st, cam, pt, uv, max_nfev=PP_ITERS, tol=1e-6, **common)
    st1, info1 = bundle_adjust(st0, cam, pt, uv, max_nfev=PP_ITERS, tol=1e-6, marginals=True,
                               **free, **common)
    s0 = max(float(info1["sigma0_px"]), 1e-6)
    n_res = 2 * int(np.isfinite(info1["residuals"]).sum())
    drop = (info0["cost_data"] - info1["cost_data"]) / s0 ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        deff = float(np.nanmax(np.asarray(info1["pp_sigma_track_px"], float) ** 2 /
                               np.asarray(info1["pp_sigma_px"], float) ** 2))
    deff = max(deff, 1.0) if np.isfinite(deff) else np.inf
    penalty = 2.0 * np.log(max(n_res, 2))
    sig_max = _sigma_max(info1)
    pp = (float(st1.cx), float(st1.cy))
    rep.update({
        "candidate_px": [round(pp[0], 3), round(pp[1], 3)],
        "principal_point_sigma_px": round(min(sig_max, 1e6), 4),
        "sigma_formal_px": [round(float(v), 4) if np.isfinite(v) else None
                            for v in info1["pp_sigma_px"]],
        "sigma_track_px": [round(float(v), 4) if np.isfinite(v) else None
                           for v in info1["pp_sigma_track_px"]],
        "cost_drop": round(float(drop), 3), "design_effect": round(min(deff, 1e6), 3),
        "penalty": round(float(penalty), 3),
        "reproj_median_px": [round(info0["median"], 4), round(info1["median"], 4)],
        "iterations": [info0["iterations"], info1["iterations"]],
    })
    if sig_max >= sig_max_px:
        rep["reason"] = _unpinned(sig_max, sig_max_px)
        return PrincipalPointFit(False, (cx0, cy0), rep)
    if drop / deff <= penalty:
        rep["reason"] = (f"kept at the image centre: freeing it does not explain the tracks "
                         f"better (cost drop {drop / deff:.1f} <= penalty {penalty:.1f})")
        return PrincipalPointFit(False, (cx0, cy0), rep)
    rep["reason"] = (f"solved: ±{sig_max:.2f} px (1σ), cost drop {drop / deff:.1f} > penalty "
                     f"{penalty:.1f}")
    new = _updated_result(result, mode, st1, xs, vs, per_frame)
    new["median"], new["rms"] = float(info1["median"]), float(info1["rms"])
    return PrincipalPointFit(True, pp, rep, new)


def _sigma_max(info: dict) -> float:
    """Larger axis of the larger (formal, track-clustered) principal-point 1-sigma, px (inf
    when not observable)."""
    sig = np.maximum(np.asarray(info["pp_sigma_px"], float),
                     np.asarray(info["pp_sigma_track_px"], float))
    return float(np.max(sig)) if np.all(np.isfinite(sig)) else float("inf")


def _unpinned(sig: float, limit: float) -> str:
    how = "not observable" if not np.isfinite(sig) else f"±{sig:.1f} px (1σ)"
    return (f"kept at the image centre: the shot does not pin the principal point ({how}; "
            f"solved only below ±{limit:.1f} px)")


def _updated_result(result: dict, mode: str, st, xs: np.ndarray, vs: np.ndarray,
                    per_frame: bool) -> dict:
    """A copy of ``result`` carrying the free-principal-point solution ``st`` (posed by
    :func:`engine.solve.observability.final_problem`: registered frames / usable tracks only)."""
    out = dict(result)
    T = vs.shape[1]
    if mode == "tripod":
        ok = vs.sum(1) >= 2
        out["rvecs"] = np.asarray(st.rvecs).copy()
        dirs = np.asarray(result["dirs"]).copy()
        dirs[ok] = st.points
        out["dirs"] = dirs
        out["focals"] = (st.focals[st.focal_idx] if per_frame
                         else np.full(T, float(st.focals[0])))
    else:
        frames = np.flatnonzero(result["registered"])
        pts = np.flatnonzero(np.isfinite(result["points"][:, 0]))
        rv, tv = np.asarray(result["rvecs"]).copy(), np.asarray(result["ts"]).copy()
        rv[frames], tv[frames] = st.rvecs, st.ts
        X = np.asarray(result["points"]).copy()
        X[pts] = st.points
        f = np.asarray(result["focals"], np.float64).copy()
        if per_frame:
            f[frames] = st.focals[st.focal_idx]
        else:
            f[:] = float(st.focals[0])
        out.update({"rvecs": rv, "ts": tv, "points": X, "focals": f})
    out["dist"] = np.asarray(st.dist).copy()
    return out
