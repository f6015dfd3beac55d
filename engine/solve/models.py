"""Two-view model selection (GRIC) and focal-length initialisation.

GRIC (Torr 1998) compares a fundamental matrix (general motion, d=3, k=7) with a homography
(rotation only or planar scene, d=2, k=8) on the same correspondences:
``GRIC = sum(min(e^2/sigma^2, 2 (r - d))) + n d ln(r) + k ln(r n)`` with r = 4. Lower wins.

Focal initialisation uses the Mendonca-Cipolla criterion: for the true focal f (principal point
at the centre), ``E = K^T F K`` has two equal singular values; we scan f on a log grid and take
the minimum of the summed ``(s1 - s2) / (s1 + s2)`` over many wide frame pairs.
"""
from __future__ import annotations

import numpy as np

from .segment import find_fundamental, find_homography, sampson


def gric_pair(p1: np.ndarray, p2: np.ndarray, sigma: float) -> dict | None:
    """GRIC scores of F and H for correspondences p1 -> p2 (pixels). None if too few."""
    n = len(p1)
    if n < 15:
        return None
    F, _ = find_fundamental(p1, p2, max(1.0, 3 * sigma))
    Hm, _ = find_homography(p1, p2, max(1.0, 3 * sigma))
    if F is None or Hm is None:
        return None
    ef = sampson(F, p1, p2)
    x1 = np.c_[p1, np.ones(n)] @ Hm.T
    with np.errstate(invalid="ignore", divide="ignore"):
        q = x1[:, :2] / x1[:, 2:3]
        Hi = np.linalg.inv(Hm)
        x2 = np.c_[p2, np.ones(n)] @ Hi.T
        qb = x2[:, :2] / x2[:, 2:3]
    eh = 0.5 * (np.sum((q - p2) ** 2, 1) + np.sum((qb - p1) ** 2, 1)) / 2
    eh = np.nan_to_num(eh, nan=1e9)
    r = 4.0
    s2 = sigma ** 2
    g_f = np.minimum(ef / s2, 2 * (r - 3)).sum() + n * 3 * np.log(r) + 7 * np.log(r * n)
    g_h = np.minimum(eh / s2, 2 * (r - 2)).sum() + n * 2 * np.log(r) + 8 * np.log(r * n)
    return {"gric_f": float(g_f), "gric_h": float(g_h), "F": F, "H": Hm, "n": n,
            "f_inliers": int((ef < 9 * s2).sum()), "h_inliers": int((eh < 9 * s2).sum())}


def estimate_noise(xy: np.ndarray, vis: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Robust per-coordinate noise sigma (px) from F-fit residuals of short-gap pairs."""
    vals = []
    for a, b in pairs:
        m = vis[:, a] & vis[:, b]
        if m.sum() < 30:
            continue
        p1, p2 = xy[m, a].astype(np.float64), xy[m, b].astype(np.float64)
        F, _ = find_fundamental(p1, p2, 1.5)
        if F is None:
            continue
        e = np.sqrt(sampson(F, p1, p2))
        vals.append(np.median(e))
    if not vals:
        return 1.0
    # Sampson distance of a point pair with iid noise sigma per coordinate is ~ sigma * 1.0 in
    # median (distance to a line from 2D noise); 1.4826*median of |N(0, s)| ~ s.
    return float(np.clip(1.4826 * np.median(vals), 0.1, 5.0))


def focal_from_fundamentals(Fs: list[np.ndarray], cx: float, cy: float, size: float,
                            lo: float = 0.3, hi: float = 6.0, n: int = 200) -> tuple[float, float]:
    """(focal px, sharpness) from Mendonca-Cipolla over fundamental matrices.

    ``size`` is the larger image side; the scan covers [lo, hi] x size. Sharpness is the ratio of
    the mean cost to the minimum cost: near 1 means the focal is not constrained (e.g. forward
    motion or too little rotation).
    """
    fs = size * np.geomspace(lo, hi, n)
    cost = np.zeros(n)
    for F in Fs:
        F = F / np.linalg.norm(F)
        for i, f in enumerate(fs):
            K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
            s = np.linalg.svd(K.T @ F @ K, compute_uv=False)
            cost[i] += (s[0] - s[1]) / (s[0] + s[1] + 1e-300)
    i = int(np.argmin(cost))
    # parabolic refinement in log f
    if 0 < i < n - 1:
        a, b, c = cost[i - 1], cost[i], cost[i + 1]
        den = a - 2 * b + c
        off = 0.5 * (a - c) / den if den > 0 else 0.0
        lf = np.log(fs[i]) + off * (np.log(fs[1]) - np.log(fs[0]))
        f = float(np.exp(lf))
    else:
        f = float(fs[i])
    sharp = float(np.mean(cost) / max(cost[i], 1e-12))
    return f, sharp


def focals_varying(pair_Fs: list[tuple[int, int, np.ndarray]], ratios: np.ndarray, cx: float,
                   cy: float, size: float, lo: float = 0.3, hi: float = 6.0, n: int = 120
                   ) -> np.ndarray:
    """Per-frame focal (T,) px for zoom shots given relative focals ``ratios`` (T,): a 1-D
    Mendonca-Cipolla scan of the base focal ``f0`` with ``f_t = f0 * ratios[t]``."""
    fs = size * np.geomspace(lo, hi, n)
    cost = np.zeros(n)
    for a, b, F in pair_Fs:
        F = F / np.linalg.norm(F)
        for i, f in enumerate(fs):
            fa, fb = f * ratios[a], f * ratios[b]
            Ka = np.array([[fa, 0, cx], [0, fa, cy], [0, 0, 1]])
            Kb = np.array([[fb, 0, cx], [0, fb, cy], [0, 0, 1]])
            s = np.linalg.svd(Kb.T @ F @ Ka, compute_uv=False)
            cost[i] += (s[0] - s[1]) / (s[0] + s[1] + 1e-300)
    return fs[int(np.argmin(cost))] * np.asarray(ratios)
