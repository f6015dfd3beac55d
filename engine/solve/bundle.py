"""Robust bundle adjustment: Levenberg-Marquardt with Schur complement and Huber IRLS.

Optimises world-to-camera poses per camera, focal lengths (one shared value, or one per frame for
zoom shots), optional radial distortion ``k1`` / ``k1, k2`` (Blender's polynomial model, see
:mod:`engine.solve.camera`) and 3D points, with an analytic Jacobian. Points are eliminated in
every iteration (their 3x3 / 2x2 blocks inverted in bulk), leaving a small dense camera system
solved with numpy; the sparse bookkeeping is numpy ``bincount``. Rotations are updated
multiplicatively (``R = exp([d]) R0``), so the rotation Jacobian is the usual ``-[R X]_x``.
The principal point is fixed unless ``refine_pp`` frees one shared ``(cx, cy)`` (footage rarely
constrains it: a shift of it trades off against a small rotation of every camera, so it comes with
a weak prior towards a given point; :mod:`engine.solve.principal_point` decides whether to keep
it). ``rotation_only`` mode (tripod shots) pins every camera centre at the origin and
parameterises points as directions (azimuth/elevation), i.e. points at infinity.

Gauge: cameras in ``fixed_cams`` keep their pose; the overall scale is held by a soft prior on the
distance between the first fixed camera and ``scale_cam``. Why not scipy's ``least_squares``: its
trust-region LSMR path needed 50+ iterations (and minutes) where this converges in 5-15; why not
pycolmap's: we need per-frame focal with a smoothness prior, rotation-only mode and Blender's
distortion model in one place, on plain arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import rodrigues, rotvec


@dataclass
class BAState:
    """Everything the adjuster refines. Arrays are float64, indices are int."""

    rvecs: np.ndarray            # (C, 3) world->camera axis-angle
    ts: np.ndarray               # (C, 3) world->camera translation
    focals: np.ndarray           # (F,) px
    focal_idx: np.ndarray        # (C,) index into focals
    points: np.ndarray           # (P, 3) world points (unit directions in rotation-only mode)
    cx: float
    cy: float
    dist: np.ndarray = field(default_factory=lambda: np.zeros(2))  # k1, k2

    def copy(self) -> "BAState":
        return BAState(self.rvecs.copy(), self.ts.copy(), self.focals.copy(),
                       self.focal_idx.copy(), self.points.copy(), self.cx, self.cy,
                       self.dist.copy())

    def centres(self) -> np.ndarray:
        R = rodrigues(self.rvecs)
        return -np.einsum("cji,cj->ci", R, self.ts)


def project_obs(st: BAState, cam: np.ndarray, pt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (M, 2) and depths (M,) of observations (camera ``cam[i]`` sees point ``pt[i]``)."""
    R = rodrigues(st.rvecs)
    xc = (R[cam] @ st.points[pt][:, :, None])[:, :, 0] + st.ts[cam]
    z = xc[:, 2]
    zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
    xn, yn = xc[:, 0] / zs, xc[:, 1] / zs
    k1, k2 = st.dist[0], st.dist[1]
    if k1 or k2:
        r2 = xn * xn + yn * yn
        fac = 1 + r2 * (k1 + r2 * k2)
        xn, yn = xn * fac, yn * fac
    f = st.focals[st.focal_idx[cam]]
    return np.stack([f * xn + st.cx, f * yn + st.cy], axis=1), z


def _sph_to_dir(a: np.ndarray) -> np.ndarray:
    az, el = a[:, 0], a[:, 1]
    ce = np.cos(el)
    return np.stack([ce * np.sin(az), np.sin(el), ce * np.cos(az)], axis=1)


def _dir_to_sph(d: np.ndarray) -> np.ndarray:
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    return np.stack([np.arctan2(d[:, 0], d[:, 2]), np.arcsin(np.clip(d[:, 1], -1, 1))], axis=1)


def _skew_cols(y: np.ndarray) -> np.ndarray:
    """-[y]_x for each row of y: (M, 3, 3) so that d(exp([d]) y)/dd = -[y]_x."""
    z = np.zeros(len(y))
    return -np.stack([np.stack([z, -y[:, 2], y[:, 1]], -1), np.stack([y[:, 2], z, -y[:, 0]], -1),
                      np.stack([-y[:, 1], y[:, 0], z], -1)], -2)



def _huber(e: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(robust cost per residual norm e, IRLS weight)."""
    big = e > delta
    cost = np.where(big, 2 * delta * e - delta * delta, e * e)
    w = np.where(big, delta / np.maximum(e, 1e-12), 1.0)
    return cost, w


def bundle_adjust(st: BAState, cam: np.ndarray, pt: np.ndarray, uv: np.ndarray, *,
                  fixed_cams: tuple[int, ...] = (0,), refine_focal: bool = True,
                  n_dist: int = 0, rotation_only: bool = False, fix_points: bool = False,
                  f_scale: float = 1.0, loss: str = "huber", max_nfev: int = 60,
                  focal_smooth: float = 0.0, scale_cam: int | None = None, tol: float = 1e-4,
                  marginals: bool = False, refine_pp: bool = False,
                  pp_prior: tuple[float, float, float] | None = None) -> tuple[BAState, dict]:
    """Refine ``st``; returns (new state, info). The input state is not modified.

    ``cam``, ``pt`` (M,) index cameras/points of each observation, ``uv`` (M, 2) pixels.
    ``f_scale`` is the Huber threshold in px (``loss="linear"`` for plain least squares).
    ``max_nfev`` bounds the LM iterations; it stops when a step lowers the cost by less than
    ``tol`` (relative). ``focal_smooth`` (per-frame focal mode) weights a prior
    on log-focal differences between consecutive cameras (px-equivalent residual units).
    info: ``rms``/``median`` px over all observations, ``residuals`` (M,) px norms (inf when
    the point is behind the camera), ``iterations``.

    ``marginals``: also estimate how well the data pin the focal length(s) at the final state
    (``max_nfev=0`` evaluates it at ``st`` without refining): ``info["focal_sigma_px"]`` (F,)
    formal marginal 1-sigma of each focal (px) from the inverse Gauss-Newton Hessian (Huber
    IRLS weights, points eliminated by the Schur complement, gauge held by ``fixed_cams`` and
    the scale prior, which leave the gauge-invariant focal unaffected) scaled by the weighted
    residual RMS ``info["sigma0_px"]``; ``info["focal_sigma_track_px"]`` the same with errors
    allowed to be correlated along each track (see :func:`_focal_marginals`); ``inf`` where
    the focal is not observable.

    ``refine_pp``: also refine the shared principal point ``(st.cx, st.cy)`` (px); ``pp_prior``
    ``(cx0, cy0, weight)`` adds the residuals ``weight * (cx - cx0)``, ``weight * (cy - cy0)``
    (px-equivalent units: a weight ``s / sigma_pp`` is a Gaussian prior of 1-sigma ``sigma_pp``
    px for observations of noise ``s`` px). With ``marginals`` ``info["pp_sigma_px"]`` and
    ``info["pp_sigma_track_px"]`` (2,) are its 1-sigma (formal / track-clustered, as the focal's).
    ``info["cost"]``: the final robust cost (sum of Huber-weighted squared residual norms, px^2,
    priors included) and ``info["cost_data"]`` the same without the priors.
    """
    import os

    cam = np.asarray(cam, dtype=np.int64)
    pt = np.asarray(pt, dtype=np.int64)
    uv = np.asarray(uv, dtype=np.float64)
    C, P, M = len(st.rvecs), len(st.points), len(cam)
    fixed = set(int(c) for c in fixed_cams)
    free_cams = np.array([c for c in range(C) if c not in fixed], dtype=np.int64)
    ncp = 3 if rotation_only else 6
    nF = len(st.focals) if refine_focal else 0
    npp = 0 if fix_points else (2 if rotation_only else 3)
    cam_slot = -np.ones(C, dtype=np.int64)
    cam_slot[free_cams] = np.arange(len(free_cams))
    o_f = len(free_cams) * ncp
    o_d = o_f + nF
    o_pp = o_d + n_dist
    Na = o_pp + (2 if refine_pp else 0)
    delta = f_scale if loss != "linear" else np.inf
    c0 = min(fixed) if fixed else None
    use_scale = False
    d0 = 1.0
    if not rotation_only and c0 is not None and len(free_cams):
        cen = st.centres()
        if scale_cam is None:
            scale_cam = int(free_cams[np.argmax(np.linalg.norm(cen[free_cams] - cen[c0], axis=1))])
        d0 = float(np.linalg.norm(cen[scale_cam] - cen[c0]))
        use_scale = d0 > 1e-9 and cam_slot[scale_cam] >= 0
    smooth_pairs = np.zeros((0, 2), np.int64)
    if focal_smooth > 0 and nF > 1:
        smooth_pairs = np.array([(st.focal_idx[i], st.focal_idx[i + 1]) for i in range(C - 1)
                                 if st.focal_idx[i] != st.focal_idx[i + 1]],
                                dtype=np.int64).reshape(-1, 2)

    # camera-side column indices of each observation
    blocks = [np.where((cam_slot[cam] >= 0)[:, None], cam_slot[cam][:, None] * ncp + np.arange(ncp), -1)]
    if nF:
        blocks.append((o_f + st.focal_idx[cam])[:, None])
    if n_dist:
        blocks.append(np.broadcast_to(o_d + np.arange(n_dist), (M, n_dist)))
    if refine_pp:
        blocks.append(np.broadcast_to(o_pp + np.arange(2), (M, 2)))
    a_cols = np.concatenate(blocks, axis=1) if blocks else np.zeros((M, 0), np.int64)
    ka = a_cols.shape[1]
    p_cols = _point_cols(pt, npp)                                   # (M, npp)
    b_cols = np.broadcast_to(p_cols[:, None, :], (M, 2, npp)).reshape(-1)
    # scatter indices of the normal equations, the same in every iteration: flat bins of the
    # camera block U, the gradient ga, the coupling Wd and the point blocks V / gb (bincount sums
    # each bin in observation order, as np.add.at does, and is many times faster)
    oka = a_cols >= 0
    okc = oka[:, :, None] & oka[:, None, :]
    u_bins = (a_cols[:, :, None] * Na + a_cols[:, None, :])[okc]
    ga_bins = a_cols[oka]
    okw = np.broadcast_to(oka[:, :, None], (M, ka, npp))
    w_bins = (a_cols[:, :, None] * (P * npp) + p_cols[:, None, :])[okw]
    v_bins = _point_cols(pt, npp * npp).reshape(-1)
    gb_bins = p_cols.reshape(-1)

    def evaluate(R, s, with_jac):
        y = (R[cam] @ s.points[pt][:, :, None])[:, :, 0]
        xc = y + s.ts[cam]
        z = xc[:, 2]
        zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
        xn, yn = xc[:, 0] / zs, xc[:, 1] / zs
        k1, k2 = s.dist
        r2 = xn * xn + yn * yn
        fac = 1 + r2 * (k1 + r2 * k2)
        f = s.focals[s.focal_idx[cam]]
        r = np.stack([f * xn * fac + s.cx - uv[:, 0], f * yn * fac + s.cy - uv[:, 1]], 1)
        if not with_jac:
            return r, z, None, None
        dfac = k1 + 2 * k2 * r2
        D = np.empty((M, 2, 2))
        D[:, 0, 0] = fac + 2 * xn * xn * dfac
        D[:, 0, 1] = D[:, 1, 0] = 2 * xn * yn * dfac
        D[:, 1, 1] = fac + 2 * yn * yn * dfac
        dp = np.zeros((M, 2, 3))
        dp[:, 0, 0] = dp[:, 1, 1] = 1 / zs
        dp[:, 0, 2] = -xn / zs
        dp[:, 1, 2] = -yn / zs
        A = f[:, None, None] * (D @ dp)
        parts = [A @ _skew_cols(y)]
        if not rotation_only:
            parts.append(A)
        if nF:
            parts.append(np.stack([xn * fac, yn * fac], 1)[:, :, None])
        if n_dist:
            dk = [np.stack([f * xn * r2, f * yn * r2], 1)]
            if n_dist > 1:
                dk.append(np.stack([f * xn * r2 * r2, f * yn * r2 * r2], 1))
            parts.append(np.stack(dk, axis=2))
        if refine_pp:  # d(u, v)/d(cx, cy) = identity
            parts.append(np.broadcast_to(np.eye(2), (M, 2, 2)))
        Ja = np.concatenate(parts, axis=2)
        if npp == 3:
            Jb = A @ R[cam]
        elif npp == 2:
            d = s.points[pt]
            el = np.arcsin(np.clip(d[:, 1], -1, 1))
            az = np.arctan2(d[:, 0], d[:, 2])
            ce, se, ca, sa = np.cos(el), np.sin(el), np.cos(az), np.sin(az)
            dX = np.stack([np.stack([ce * ca, np.zeros_like(az), -ce * sa], 1),
                           np.stack([-se * sa, ce, -se * ca], 1)], axis=2)
            Jb = (A @ R[cam]) @ dX
        else:
            Jb = np.zeros((M, 2, 0))
        return r, z, Ja, Jb

    def priors(R, s):
        """Extra camera-side residuals and their (rows of) Jacobian, dense (k, Na)."""
        res, J = [], []
        for i, j in smooth_pairs:
            res.append(focal_smooth * (np.log(s.focals[j]) - np.log(s.focals[i])))
            row = np.zeros(Na)
            row[o_f + i] = -focal_smooth / s.focals[i]
            row[o_f + j] = focal_smooth / s.focals[j]
            J.append(row)
        if use_scale:
            cen = -R[scale_cam].T @ s.ts[scale_cam] + R[c0].T @ s.ts[c0]
            nrm = max(np.linalg.norm(cen), 1e-12)
            res.append(10.0 * (nrm / d0 - 1.0))
            row = np.zeros(Na)
            row[cam_slot[scale_cam] * ncp + 3: cam_slot[scale_cam] * ncp + 6] = \
                10.0 / d0 * (-R[scale_cam] @ (cen / nrm))
            J.append(row)
        if refine_pp and pp_prior is not None and pp_prior[2] > 0:
            wp = float(pp_prior[2])
            for k, (v, v0) in enumerate(((s.cx, pp_prior[0]), (s.cy, pp_prior[1]))):
                res.append(wp * (v - v0))
                row = np.zeros(Na)
                row[o_pp + k] = wp
                J.append(row)
        return np.array(res), (np.array(J) if J else np.zeros((0, Na)))

    def data_cost(r, z):
        e = np.linalg.norm(r, axis=1)
        c, _ = _huber(e, delta)
        if not rotation_only:
            c = np.where(z > 0, c, 2 * delta * 1e3 if np.isfinite(delta) else 1e6)
        return float(c.sum())

    def total_cost(r, z, pr):
        return data_cost(r, z) + float(np.sum(pr ** 2))

    def apply(R, s, da, db):
        R2 = R.copy()
        s2 = s.copy()
        if len(free_cams):
            cp = da[:o_f].reshape(-1, ncp)
            R2[free_cams] = rodrigues(cp[:, :3]) @ R[free_cams]
            if not rotation_only:
                s2.ts[free_cams] = s.ts[free_cams] + cp[:, 3:6]
        if nF:
            s2.focals = np.maximum(s.focals + da[o_f:o_d], 1e-3)
        if n_dist:
            s2.dist = s.dist.copy()
            s2.dist[:n_dist] += da[o_d:o_pp]
        if refine_pp:
            s2.cx, s2.cy = s.cx + float(da[o_pp]), s.cy + float(da[o_pp + 1])
        if npp == 3:
            s2.points = s.points + db.reshape(P, 3)
        elif npp == 2:
            s2.points = _sph_to_dir(_dir_to_sph(s.points) + db.reshape(P, 2))
        return R2, s2

    def normal_eqs(r, z, Ja, Jb, pr, Jp):
        """Huber-IRLS normal equations: camera block U (Na, Na), gradient ga, point blocks V
        (P, npp, npp), gb, coupling Wd (Na, P*npp), and the IRLS weights w (M,)."""
        e = np.linalg.norm(r, axis=1)
        _, w = _huber(e, delta)
        if not rotation_only:
            w = np.where(z > 0, w, 0.0)
        sw = np.repeat(np.sqrt(w), 2)
        rw = r.reshape(-1) * sw
        Jaw = Ja * np.sqrt(w)[:, None, None]                     # (M, 2, ka)
        # camera-side normal matrix, scattered with bincount (dense Na x Na is small)
        JtJ = np.matmul(Jaw.transpose(0, 2, 1), Jaw)                 # (M, ka, ka)
        U = np.bincount(u_bins, weights=JtJ[okc], minlength=Na * Na).reshape(Na, Na) + Jp.T @ Jp
        gao = np.matmul(Jaw.transpose(0, 2, 1), rw.reshape(M, 2, 1))[:, :, 0]
        ga = np.bincount(ga_bins, weights=gao[oka], minlength=Na) + Jp.T @ pr
        V = gb = Wd = None
        if npp:
            Jbw = Jb * np.sqrt(w)[:, None, None]
            Vobs = np.matmul(Jbw.transpose(0, 2, 1), Jbw)
            V = np.bincount(v_bins, weights=Vobs.reshape(-1),
                            minlength=P * npp * npp).reshape(P, npp, npp)
            gbo = np.matmul(Jbw.transpose(0, 2, 1), rw.reshape(M, 2, 1))[:, :, 0]
            gb = np.bincount(gb_bins, weights=gbo.reshape(-1), minlength=P * npp).reshape(P, npp)
            Wo = np.matmul(Jaw.transpose(0, 2, 1), Jbw)              # (M, ka, npp)
            Wd = np.bincount(w_bins, weights=Wo[okw], minlength=Na * P * npp).reshape(Na, P * npp)
        return U, ga, V, gb, Wd, w

    R = rodrigues(st.rvecs)
    s = st.copy()
    r, z, Ja, Jb = evaluate(R, s, True)
    pr, Jp = priors(R, s)
    cost = total_cost(r, z, pr)
    lam = 1e-3
    it = 0
    for it in range(max_nfev):
        U, ga, V, gb, Wd, _ = normal_eqs(r, z, Ja, Jb, pr, Jp)
        improved = False
        for _try in range(10):
            Ud = U + lam * np.diag(np.diag(U) + 1e-9)
            if npp:
                Vd = V + lam * np.einsum("pii->pi", V)[:, :, None] * np.eye(npp) + 1e-9 * np.eye(npp)
                Vinv = np.linalg.inv(Vd)
                WV = _times_vinv(Wd, Vinv)
                S = Ud - WV @ Wd.T
                rhs = -ga + WV @ gb.reshape(-1)
            else:
                S, rhs = Ud, -ga
            try:
                da = np.linalg.solve(S + 1e-12 * np.eye(Na), rhs) if Na else np.zeros(0)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            if npp:
                db = -np.einsum("pij,pj->pi", Vinv, gb + (Wd.T @ da).reshape(P, npp)).reshape(-1)
            else:
                db = np.zeros(0)
            R2, s2 = apply(R, s, da, db)
            r2_, z2, _, _ = evaluate(R2, s2, False)
            pr2, _ = priors(R2, s2)
            c2 = total_cost(r2_, z2, pr2)
            if c2 < cost:
                rel = (cost - c2) / max(cost, 1e-12)
                if os.environ.get("WT_DEBUG2"):
                    print("  it", it, c2, lam)
                R, s, cost = R2, s2, c2
                lam = max(lam / 3, 1e-7)
                improved = True
                break
            lam *= 4
        if not improved:
            break
        r, z, Ja, Jb = evaluate(R, s, True)
        pr, Jp = priors(R, s)
        if rel < tol:
            break
    marg = {}
    if marginals and (nF or refine_pp):
        idx = np.r_[np.arange(o_f, o_d), np.arange(o_pp, Na)].astype(np.int64)
        m = _focal_marginals(normal_eqs(r, z, Ja, Jb, pr, Jp), r, Ja, Jb, a_cols, pt, P, npp, idx)
        marg = {"sigma0_px": m["sigma0_px"]}
        for key in ("focal_sigma_px", "focal_sigma_track_px"):
            if nF:
                marg[key] = m[key][:nF]
            if refine_pp:
                marg[key.replace("focal", "pp")] = m[key][nF:]
    s.rvecs = rotvec(R)
    pr_, z = project_obs(s, cam, pt)
    err = np.linalg.norm(pr_ - uv, axis=1)
    if not rotation_only:
        err[z <= 0] = np.inf
    fin = np.isfinite(err)
    import os
    if os.environ.get("WT_DEBUG"):
        print("BA", M, Na, P * npp, it, cost)
    info = {"rms": float(np.sqrt(np.mean(err[fin] ** 2))) if fin.any() else float("inf"),
            "median": float(np.median(err[fin])) if fin.any() else float("inf"),
            "residuals": err, "iterations": it + 1, "cost": cost,
            "cost_data": data_cost(r, z), **marg}
    return s, info


def _focal_marginals(neq, r, Ja, Jb, a_cols, pt, P, npp, idx) -> dict:
    """Marginal 1-sigma (px) of the camera-side parameters ``idx`` (focals, principal point) at
    the current state, two ways.

    ``focal_sigma_px``: the formal value, s0 * sqrt(diag(S^-1)) with S the reduced (points
    eliminated) Gauss-Newton matrix and s0 the weighted residual RMS per coordinate: right when
    every observation's error is independent. ``focal_sigma_track_px``: the track-clustered
    sandwich S^-1 (sum_k g_k g_k^T) S^-1, with g_k the reduced gradient contribution of track
    (point) k: right also when a tracker's errors are correlated along a track (slow drift,
    sticking to a texture), which the formal value misses. ``inf`` where S is singular."""
    U, _, V, _, Wd, w = neq
    Na = len(U)
    m_used = int((w > 0).sum())          # observations behind a camera carry no weight
    e = np.linalg.norm(r, axis=1)
    dof = max(2 * m_used - Na - P * npp, 1)
    s0 = float(np.sqrt(np.sum(w * e * e) / dof))
    X, Vinv = _reduced_inverse_cols(U, V, Wd, idx)
    if X is None:
        inf = np.full(len(idx), np.inf)
        return {"focal_sigma_px": inf, "focal_sigma_track_px": inf.copy(), "sigma0_px": s0}
    formal = s0 * np.sqrt(X[idx, np.arange(len(idx))])
    # per-track reduced scores g_k = ga_k - W_k V_k^-1 gb_k (the second term ~0 at convergence)
    sw = np.sqrt(w)
    rw = r * sw[:, None]
    gao = np.einsum("mik,mi->mk", Ja * sw[:, None, None], rw)            # (M, ka)
    oka = a_cols >= 0
    G = np.bincount((pt[:, None] * Na + a_cols)[oka], weights=gao[oka],
                    minlength=P * Na).reshape(P, Na)
    if npp:
        gbo = np.einsum("mik,mi->mk", Jb * sw[:, None, None], rw)        # (M, npp)
        gb = np.bincount(_point_cols(pt, npp).reshape(-1),
                         weights=gbo.reshape(-1), minlength=P * npp).reshape(P, npp)
        G -= np.einsum("apk,pkl,pl->pa", Wd.reshape(Na, P, npp), Vinv, gb)
    n_tr = max(int(np.count_nonzero(np.bincount(pt, weights=w, minlength=P))), 2)
    # small-sample factor: clusters used, and the residual shrinkage by fitting the points
    corr = n_tr / (n_tr - 1) * (2.0 * m_used) / dof
    track = np.sqrt(np.sum((G @ X) ** 2, axis=0) * corr)
    return {"focal_sigma_px": formal, "focal_sigma_track_px": track, "sigma0_px": s0}


def _point_cols(pt: np.ndarray, k: int) -> np.ndarray:
    """Flat indices (M, k) of the k consecutive slots of each observation's point (point p owns
    p * k .. p * k + k - 1; ``pt`` (M,) the observations' point indices): its parameter columns
    for k = npp, the entries of its V block for k = npp * npp."""
    return pt[:, None] * k + np.arange(k)


def _times_vinv(Wd: np.ndarray, Vinv: np.ndarray) -> np.ndarray:
    """``W V^-1`` (Na, P*k) for the coupling ``Wd`` (Na, P*k) and point blocks' inverses
    ``Vinv`` (P, k, k): one (Na, k) x (k, k) product per point (the same sums as one per camera
    column and point, in far fewer calls)."""
    Na = len(Wd)
    P, k = Vinv.shape[:2]
    WV = np.matmul(Wd.reshape(Na, P, k).transpose(1, 0, 2), Vinv)          # (P, Na, k)
    return WV.transpose(1, 0, 2).reshape(Na, P * k)


def _reduced_inverse_cols(U: np.ndarray, V: np.ndarray | None, Wd: np.ndarray | None,
                          idx: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Columns ``idx`` of the inverse reduced camera matrix ``(U - W V^-1 W^T)^-1``.

    ``U`` (Na, Na) camera block, ``V`` (P, k, k) point blocks, ``Wd`` (Na, P*k) coupling (the
    points eliminated by the Schur complement). Returns (X (Na, len(idx)) or None when the
    reduced matrix is not numerically positive definite, i.e. not observable; V^-1 (P, k, k))."""
    Na = len(U)
    Vinv = None
    if V is not None and V.shape[0]:
        P, k = V.shape[:2]
        # tiny ridge: points seen only by down-weighted observations have V ~ 0 (and W ~ 0)
        Vinv = np.linalg.inv(V + 1e-9 * np.eye(k))
        WV = _times_vinv(Wd, Vinv)
        S = U - WV @ Wd.T
    else:
        S = U
    S = 0.5 * (S + S.T)
    # unit diagonal first, so the definiteness test is about geometry, not parameter units
    d = np.sqrt(np.maximum(np.diag(S), 1e-300))
    Sn = S / d[:, None] / d[None, :]
    E = np.zeros((Na, len(idx)))
    E[idx, np.arange(len(idx))] = 1.0
    try:
        L = np.linalg.cholesky(Sn)
        X = np.linalg.solve(L.T, np.linalg.solve(L, E / d[:, None])) / d[:, None]
    except np.linalg.LinAlgError:
        return None, Vinv
    if not np.all(X[idx, np.arange(len(idx))] > 0):
        return None, Vinv
    return X, Vinv
