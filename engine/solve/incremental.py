"""General-motion camera solve: keyframe reconstruction, PnP registration, global refinement.

1. Initial pair: among keyframe pairs, the one with many essential-matrix inliers *and* a wide
   median triangulation angle (parallax), at the current focal guess.
2. Incremental keyframes: each next keyframe is registered by PnP-RANSAC (OpenCV) against the
   points triangulated so far, new points are triangulated, and a robust bundle adjustment
   (Huber, :mod:`engine.solve.bundle`) refines everything, focal included once >= 3 views.
3. All other frames are registered by PnP and the whole clip is refined once more (per-frame
   focal in zoom mode, distortion when asked); tracks whose residuals stay large are dropped
   (:func:`finish_reconstruction`, also used by :mod:`engine.solve.zoom` to grow a keyframe
   reconstruction to the whole clip).
"""
from __future__ import annotations

import numpy as np

from .bundle import BAState, bundle_adjust
from .camera import make_K, pose_to_c2w, rotvec
from .triangulate import refine_points, triangulate_rays


PNP_SCAN_POINTS = 300   # points used by the per-frame focal scan (zoom registration)


class SolveFailure(RuntimeError):
    """The shot cannot be solved; the message says why in user terms."""


def _c2w_all(rv: np.ndarray, tv: np.ndarray) -> np.ndarray:
    return pose_to_c2w(rv, tv)


def _Ks(focals: np.ndarray, cx: float, cy: float) -> np.ndarray:
    K = np.zeros((len(focals), 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focals
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1
    return K


def _choose_init_pair(xy, vis, kfs, focals, cx, cy, thresh):
    """Best initial keyframe pair: many essential-matrix inliers and wide parallax.

    ``focals`` (T,) per-frame focal guesses; points are normalised by their own frame's K so the
    pair may have different focals (zoom)."""
    import cv2

    best, best_score = None, 0.0
    for i in range(len(kfs)):
        for j in range(i + 1, len(kfs)):
            a, b = kfs[i], kfs[j]
            m = np.flatnonzero(vis[:, a] & vis[:, b])
            if len(m) < 30:
                continue
            p1, p2 = xy[m, a].astype(np.float64), xy[m, b].astype(np.float64)
            if np.median(np.linalg.norm(p1 - p2, axis=1)) < 2.0:
                continue
            n1 = (p1 - [cx, cy]) / focals[a]
            n2 = (p2 - [cx, cy]) / focals[b]
            fm = 0.5 * (focals[a] + focals[b])
            try:
                E, mask = cv2.findEssentialMat(n1, n2, 1.0, (0.0, 0.0), cv2.RANSAC, 0.999,
                                               thresh / fm)
            except cv2.error:
                continue
            if E is None or E.shape != (3, 3):
                continue
            n_in, R, t, mask2 = cv2.recoverPose(E, n1, n2, np.eye(3), mask=mask.copy())
            inl = mask2.ravel() > 0
            if inl.sum() < 20:
                continue
            # parallax: angle between the two rays of each inlier (rotation compensated)
            b1 = np.c_[n1[inl], np.ones(inl.sum())]
            b2 = np.c_[n2[inl], np.ones(inl.sum())] @ R  # in frame a
            cosang = np.sum(b1 * b2, 1) / np.linalg.norm(b1, axis=1) / np.linalg.norm(b2, axis=1)
            ang = np.degrees(np.median(np.arccos(np.clip(cosang, -1, 1))))
            score = inl.sum() * min(ang, 6.0) * (1.0 if ang > 1.0 else 0.1)
            if score > best_score:
                best_score, best = score, (a, b, R, t.ravel(), m[inl], ang)
    return best


class _Recon:
    """Mutable reconstruction over all T frames (unregistered frames have reg=False)."""

    def __init__(self, xy, vis, T, f, cx, cy, zoom):
        self.xy, self.vis = xy, vis
        n = xy.shape[0]
        self.rv = np.zeros((T, 3))
        self.tv = np.zeros((T, 3))
        self.reg = np.zeros(T, bool)
        self.f = np.full(T, float(f))
        self.cx, self.cy, self.zoom = cx, cy, zoom
        self.X = np.full((n, 3), np.nan)
        self.dist = np.zeros(2)
        self.free_focal = True

    def c2w(self):
        return _c2w_all(self.rv, self.tv)

    def triangulate(self, min_angle=1.0, only_new=True, max_err=4.0):
        frames = np.flatnonzero(self.reg)
        if len(frames) < 2:
            return 0
        v = self.vis[:, frames].copy()
        cand = (v.sum(1) >= 2) & (~np.isfinite(self.X[:, 0]) if only_new else True)
        if not cand.any():
            return 0
        idx = np.flatnonzero(cand)
        c2w = self.c2w()[frames]
        K = _Ks(self.f[frames], self.cx, self.cy)
        xy = self._undist(idx, frames)
        X, ang = triangulate_rays(xy, v[idx], K, c2w)
        X = refine_points(X, xy, v[idx], K, c2w, iters=2)
        from .triangulate import reprojection_errors
        _, rms = reprojection_errors(X, xy, v[idx], K, c2w)
        good = np.isfinite(X).all(1) & (ang >= min_angle) & (rms < max_err)
        self.X[idx[good]] = X[good]
        return int(good.sum())

    def _undist(self, idx, frames):
        xy = self.xy[idx][:, frames].astype(np.float64)
        if not np.any(self.dist):
            return xy
        from .camera import undistort_points
        out = np.empty_like(xy)
        for k, t in enumerate(frames):
            out[:, k] = undistort_points(xy[:, k], make_K(self.f[t], self.cx, self.cy),
                                         (self.dist[0], self.dist[1], 0.0))
        return out

    def register(self, t, thresh):
        import cv2

        m = np.flatnonzero(self.vis[:, t] & np.isfinite(self.X[:, 0]))
        if len(m) < 12:
            return False
        obj = self.X[m].astype(np.float64)
        img = self._undist(m, np.array([t]))[:, 0]
        K = make_K(self.f[t], self.cx, self.cy)
        # seed from the nearest registered frame (PnP then refines)
        regs = np.flatnonzero(self.reg)
        near = regs[np.argmin(np.abs(regs - t))]
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, K, None, self.rv[near].copy(),
                                                 self.tv[near].copy(), useExtrinsicGuess=True,
                                                 iterationsCount=300, reprojectionError=thresh,
                                                 confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inl is None or len(inl) < max(8, 0.3 * len(m)):
            ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, K, None, iterationsCount=500,
                                                     reprojectionError=thresh, confidence=0.999,
                                                     flags=cv2.SOLVEPNP_EPNP)
            if not ok or inl is None or len(inl) < 8:
                return False
        if self.zoom and self.free_focal and len(inl) >= 12:
            self._pnp_focal(t, obj[inl.ravel()], img[inl.ravel()], rvec, tvec)
        else:
            self.rv[t], self.tv[t] = rvec.ravel(), tvec.ravel()
        self.reg[t] = True
        return True

    def _pnp_focal(self, t, obj, img, rvec, tvec):
        """Zoom shots: the frame's focal is unknown too (OpenCV has no PnP with unknown focal).
        Scan it coarse-to-fine around the current guess (x0.6 .. x1.6, pose refined by iterative
        PnP at each focal, truncated squared error so stray outliers don't pull), on at most
        ``PNP_SCAN_POINTS`` points (the scan needs their spread in depth, not all of them), then
        refine the pose on all points at the chosen focal."""
        import cv2

        f0 = self.f[t]
        sel = (np.linspace(0, len(obj) - 1, PNP_SCAN_POINTS).round().astype(int)
               if len(obj) > PNP_SCAN_POINTS else np.arange(len(obj)))
        o_s, i_s = obj[sel], img[sel]
        cache: dict[float, tuple] = {}

        def cost(r, rv0, tv0):
            if r not in cache:
                K = make_K(f0 * r, self.cx, self.cy)
                ok, rv, tv = cv2.solvePnP(o_s, i_s, K, None, rv0.copy(), tv0.copy(),
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
                if not ok:
                    cache[r] = (np.inf, rv0, tv0)
                else:
                    pr, _ = cv2.projectPoints(o_s, rv, tv, K, None)
                    e = np.linalg.norm(pr.reshape(-1, 2) - i_s, axis=1)
                    cache[r] = (float(np.mean(np.minimum(e, 5.0) ** 2)), rv, tv)
            return cache[r]

        coarse = np.geomspace(0.6, 1.6, 11)
        res = [cost(float(r), rvec, tvec) for r in coarse]
        i = int(np.argmin([c[0] for c in res]))
        if not np.isfinite(res[i][0]):
            self.rv[t], self.tv[t] = rvec.ravel(), tvec.ravel()
            return
        step = float(np.log(coarse[1] / coarse[0])) / 3
        fine = [float(coarse[i] * np.exp(k * step)) for k in range(-3, 4)]
        res = [cost(r, res[i][1], res[i][2]) for r in fine]
        errs = np.array([c[0] for c in res])
        j = int(np.argmin(errs))
        r = fine[j]
        if 0 < j < len(fine) - 1 and np.isfinite(errs[j - 1]) and np.isfinite(errs[j + 1]):
            a, b, c = errs[j - 1], errs[j], errs[j + 1]
            den = a - 2 * b + c
            if den > 0:
                r = float(np.exp(np.log(r) + 0.5 * (a - c) / den * step))
        self.f[t] = f0 * r
        ok, rv, tv = cv2.solvePnP(obj, img, make_K(self.f[t], self.cx, self.cy), None,
                                  res[j][1].copy(), res[j][2].copy(), useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            rv, tv = res[j][1], res[j][2]
        self.rv[t], self.tv[t] = rv.ravel(), tv.ravel()

    def bundle(self, frames=None, refine_focal=True, n_dist=0, f_scale=1.0, iters=30,
               fixed=None, tol=1e-4):
        frames = np.flatnonzero(self.reg) if frames is None else np.asarray(frames)
        pts = np.flatnonzero(np.isfinite(self.X[:, 0]))
        v = self.vis[np.ix_(pts, frames)]
        pi, ci = np.nonzero(v)
        # points need >= 2 observations in these frames
        if self.zoom:
            fidx, focals = np.arange(len(frames)), self.f[frames].copy()
        else:
            fidx, focals = np.zeros(len(frames), int), np.array([np.median(self.f[frames])])
        st = BAState(self.rv[frames].copy(), self.tv[frames].copy(), focals, fidx,
                     self.X[pts].copy(), self.cx, self.cy, self.dist.copy())
        uv = self.xy[pts[pi], frames[ci]].astype(np.float64)
        fixed = (0,) if fixed is None else fixed
        st, info = bundle_adjust(st, ci, pi, uv, fixed_cams=fixed, refine_focal=refine_focal,
                                 n_dist=n_dist, f_scale=f_scale, max_nfev=iters,
                                 focal_smooth=5.0 if self.zoom else 0.0, tol=tol)
        self.rv[frames], self.tv[frames] = st.rvecs, st.ts
        self.f[frames] = st.focals[st.focal_idx]
        if not self.zoom:
            self.f[:] = st.focals[0]
        self.X[pts] = st.points
        self.dist = st.dist.copy()
        info["obs"] = (pts[pi], frames[ci])
        return info

    def prune(self, info, thresh):
        """Drop points whose observations are mostly outliers; returns count dropped."""
        tr, fr = info["obs"]
        e = info["residuals"]
        bad = ~(e < thresh)
        n = np.bincount(tr, minlength=len(self.X))
        nb = np.bincount(tr, weights=bad, minlength=len(self.X))
        drop = (n > 0) & ((nb > 0.2 * n) | (n - nb < 2))
        self.X[drop] = np.nan
        # also hide isolated bad observations of otherwise-good points
        iso = bad & ~drop[tr]
        self.vis[tr[iso], fr[iso]] = False
        return int(drop.sum())


def solve_general(xy: np.ndarray, vis: np.ndarray, image_size: tuple[int, int], cx: float,
                  cy: float, focal_init: float, refine_focal: bool, zoom: bool, n_dist: int,
                  keyframes: list[int], sigma: float = 0.5, progress=None,
                  focals_fixed: np.ndarray | None = None,
                  focals_init: np.ndarray | None = None, tight: bool = True) -> dict:
    """Solve a moving camera from static tracks ``xy`` (n, T, 2) / ``vis`` (n, T).

    Returns dict with ``rvecs``, ``ts`` (T, 3) world->camera, ``focals`` (T,), ``dist`` (2,),
    ``points`` (n, 3) (NaN where not reconstructed), ``keyframes``, ``init_pair``,
    ``median``/``rms`` px, ``unregistered`` frames. ``focals_fixed`` (T,) pins known per-frame
    focals (used to reconstruct moving objects once the camera is known); ``focals_init`` (T,)
    seeds per-frame focals in zoom mode; ``tight=False`` stops the final zoom refinement early
    (used to compare several starting focals cheaply).
    Raises :class:`SolveFailure`.
    """
    T = vis.shape[1]
    vis = vis.copy()
    thresh = max(1.5, 3 * sigma)
    if focals_fixed is not None:
        zoom, refine_focal = True, False
    rec = _Recon(xy, vis, T, focal_init, cx, cy, zoom)
    rec.free_focal = refine_focal
    if focals_fixed is not None:
        rec.f[:] = focals_fixed
    elif focals_init is not None and zoom:
        rec.f[:] = focals_init
    init = _choose_init_pair(xy, vis, keyframes, rec.f, cx, cy, thresh)
    if init is None:
        raise SolveFailure("no pair of frames has enough parallax and shared tracks to start "
                           "a reconstruction (camera barely moves, or too few static tracks)")
    a, b, R, t, _, ang = init
    rec.reg[a] = rec.reg[b] = True
    rec.tv[b] = t * 1.0
    rec.rv[b] = rotvec(R[None])[0]
    rec.triangulate(min_angle=0.5)
    info = rec.bundle(frames=[a, b], refine_focal=False, f_scale=thresh / 2)
    rec.prune(info, 3 * thresh)
    rec.triangulate(min_angle=0.5, only_new=True)
    pending = [k for k in keyframes if not rec.reg[k]]
    n_added = 0
    while pending:
        if progress is not None:
            progress.check()
        counts = [int((vis[:, k] & np.isfinite(rec.X[:, 0])).sum()) for k in pending]
        k = pending[int(np.argmax(counts))]
        if zoom and refine_focal and focals_init is None:  # nearest registered frame's focal
            regs = np.flatnonzero(rec.reg)
            rec.f[k] = rec.f[regs[np.argmin(np.abs(regs - k))]]
        if max(counts) < 12 or not rec.register(k, 2 * thresh):
            pending.remove(k)
            continue
        pending.remove(k)
        n_added += 1
        rec.triangulate(min_angle=1.0)
        if n_added % 2 == 0 or not pending:
            info = rec.bundle(refine_focal=refine_focal and rec.reg.sum() >= 3,
                              f_scale=thresh / 2, iters=15)
            rec.prune(info, 3 * thresh)
            rec.triangulate(min_angle=1.0)
    if rec.reg[keyframes].sum() < min(3, len(keyframes)):
        raise SolveFailure("only %d keyframes could be registered: the static background is "
                           "too small or too poorly tracked" % rec.reg[keyframes].sum())
    info = rec.bundle(refine_focal=refine_focal, f_scale=thresh / 2, iters=30)
    rec.prune(info, 3 * thresh)
    info = finish_reconstruction(rec, sigma, refine_focal, n_dist, tight,
                                 focals_fixed is None, progress)
    e = info["residuals"]
    e = e[np.isfinite(e)]
    return {"rvecs": rec.rv, "ts": rec.tv, "focals": rec.f.copy(), "dist": rec.dist.copy(),
            "points": rec.X, "keyframes": list(map(int, keyframes)), "init_pair": [int(a), int(b)],
            "init_parallax_deg": float(ang), "median": float(np.median(e)),
            "rms": float(np.sqrt(np.mean(e ** 2))), "registered": rec.reg.copy(),
            "vis": rec.vis}


def finish_reconstruction(rec: _Recon, sigma: float, refine_focal: bool, n_dist: int,
                          tight: bool, interp_focal: bool = True, progress=None) -> dict:
    """Register every frame not yet in ``rec`` (nearest to the registered ones first; PnP, with a
    scanned focal in zoom mode), triangulate all tracks and refine everything (robust bundle
    adjustment, outlier pruning; distortion when ``n_dist``). ``interp_focal``: seed each new
    frame's focal by interpolating the registered frames' focals (zoom mode). Returns the last
    bundle adjustment's info (``residuals`` px per observation)."""
    thresh = max(1.5, 3 * sigma)
    # all other frames, nearest first
    for t in sorted(np.flatnonzero(~rec.reg), key=lambda t: np.min(np.abs(np.flatnonzero(rec.reg) - t))):
        if progress is not None:
            progress.check()
        if rec.zoom and interp_focal:
            regs = np.flatnonzero(rec.reg)
            rec.f[t] = np.interp(t, regs, rec.f[regs])
        rec.register(t, 2 * thresh)
    rec.triangulate(min_angle=1.0)
    info = rec.bundle(refine_focal=refine_focal, f_scale=thresh / 2, iters=30)
    rec.prune(info, 3 * thresh)
    rec.triangulate(min_angle=1.0, only_new=False, max_err=3 * thresh)
    # final passes converge tightly: focal/zoom valleys are flat (zoom vs dolly) and a loose stop
    # leaves the focal several percent off while the residual already looks converged
    tol = 1e-7 if (refine_focal and rec.zoom and tight) else 1e-5
    info = rec.bundle(refine_focal=refine_focal, n_dist=n_dist, f_scale=thresh / 2, iters=60,
                      tol=tol)
    rec.prune(info, max(3 * sigma * 1.5, 1.0) * 2)
    info = rec.bundle(refine_focal=refine_focal, n_dist=n_dist, f_scale=thresh / 2,
                      iters=150 if tol < 1e-6 else 30, tol=tol)
    return info
