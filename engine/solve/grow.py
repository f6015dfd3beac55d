"""Grow the static set by the *consistent segments* of tracks, given solved cameras.

Why segments and not whole tracks: a dense tracker's error is small near the frame a track was
queried in and grows away from it (drift, sticking to texture, occlusion hand-over). Judging
whole tracks (per-track RMS through the solved cameras, or two-view epipolar votes over the clip)
keeps only the tracks that never drift, and on the benchmark clips those are mostly the slow,
distant background: a near-degenerate set that pins the focal badly (4-11 % off with the
tracker's 2D, where the same clips' good *observations* of all static tracks give about 1 %).
A drifting track's good part still carries the parallax of its depth, so each track contributes
the longest run of frames in which it reprojects as one static point.

Per track: hypotheses are points triangulated from time windows (a few centres x two widths)
of its visible frames; each is scored by the longest run of visible frames with reprojection
error below ``thresh`` (invisible frames do not break a run, an outlier frame does); the best
run is re-triangulated and re-scored once. Accepted when the run is long enough and has enough
triangulation angle (a short, parallax-free run fits any point, so it says nothing about being
static), more of it for a run that covers only part of the track. Moving objects seldom pass:
over a run with parallax their rays do not meet in one point; over a short stretch of little
parallax some do (about 7 % of the grown set on benchmark dynamic_0 / deform_0: objects moving
about as fast as the camera mimic a static point for 10-20 frames).

Anchor frames: the tracker is given its point at the query frame and is most accurate there,
so a *static* track's longest consistent run nearly always contains its query frame (91-93 % of
the segmentation's static tracks on dynamic_0 / deform_0) while a mover's chance fit lies
wherever the object's motion happened to mimic a static point (86-97 % of the grown movers ran
more than 3 frames from their query frame, all with < 10 degrees of triangulation angle). With
``anchor`` (the frames where the tracker is at its most confident: the query frame for our
tracker, which reports confidence 1 there), a run that does not come within ``anchor_tol``
frames of one needs ``away_min_angle`` degrees of parallax (a mover's rays do not meet over a
wide baseline). Choosing instead the run that contains the anchor cut static tracks to short,
parallax-poor runs (focal 5.2 % on dynamic_0).

``anchor=None`` keeps the behaviour above. The solve (:mod:`.pipeline`) passes anchors from the
sample's confidence (none for the segmentation's static tracks) when the rigid-body clustering
found the background (not after the per-pair vote of a forward-motion shot). There it took the benchmark focal error of dynamic_0 / deform_0 from 3.0 / 4.1 % to
1.8 / 2.4 % and deform_2 from 0.25 to 0.00 %, left static_0/1/2, dynamic_1, deform_1, zoom_0
within 0.05 point, but dynamic_2 went from 0.81 to 1.23 % (its kept solution is the refine
loop's re-solve, which starts from the changed first solution; on the same input the rule
moved that re-solve by only 0.07 point): the focal valley is flat enough that small changes
of the static set move it by about half a point either way.

Units: pixels (undistorted, OpenCV), degrees; cameras ``c2w`` (T, 4, 4) OpenCV axes, ``K``
(T, 3, 3).
"""
from __future__ import annotations

import numpy as np

from .triangulate import refine_points, reprojection_errors, triangulate_rays


def _longest_run(ok: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Mask (N, T) of the longest run of frames with ``ok`` among visible frames (invisible
    frames neither count nor break a run; a visible frame that is not ``ok`` ends it)."""
    N, T = vis.shape
    run = np.zeros(N, int)
    start = np.zeros(N, int)
    best = np.zeros(N, int)
    b0 = np.zeros(N, int)
    b1 = np.full(N, -1)
    for t in range(T):
        good = vis[:, t] & ok[:, t]
        bad = vis[:, t] & ~ok[:, t]
        start = np.where(good & (run == 0), t, start)
        run = np.where(bad, 0, run + good)
        better = good & (run > best)
        best = np.where(better, run, best)
        b0 = np.where(better, start, b0)
        b1 = np.where(better, t, b1)
    tt = np.arange(T)[None]
    return vis & ok & (tt >= b0[:, None]) & (tt <= b1[:, None])


def _near(anchor: np.ndarray, tol: int) -> np.ndarray:
    """(N, T) bool: frames within ``tol`` frames of an anchor frame of the same track (a track
    with no anchor frame counts every frame as near)."""
    N, T = anchor.shape
    near = anchor.copy()
    for d in range(1, tol + 1):
        near[:, d:] |= anchor[:, :-d]
        near[:, :-d] |= anchor[:, d:]
    near[~anchor.any(1)] = True
    return near


def consistent_segments(xy: np.ndarray, vis: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                        thresh: float, min_len: int = 6, min_angle: float = 1.0,
                        partial_min_angle: float = 3.0, whole_frac: float = 0.8,
                        n_centres: int = 6, half_widths: tuple[int, ...] = (4, 10),
                        anchor: np.ndarray | None = None, anchor_tol: int = 3,
                        away_min_angle: float = 10.0) -> np.ndarray:
    """Observations (N, T) bool of each track's longest run consistent with one static point.

    ``xy`` (N, T, 2) undistorted px, ``vis`` (N, T), ``K`` (T, 3, 3), ``c2w`` (T, 4, 4) of the
    solved frames, ``thresh`` px per-observation reprojection error. A run is accepted with
    ``>= min_len`` frames and a triangulation angle ``>= min_angle`` degrees when it covers at
    least ``whole_frac`` of the track's visible frames, ``>= partial_min_angle`` otherwise.
    ``anchor`` (N, T) bool or None: the track's most reliable frames (module docstring); when
    given, a longest run that does not reach within ``anchor_tol`` frames of one needs
    ``>= away_min_angle`` degrees (a track without anchor frames is not restricted). Tracks
    with no acceptable run get an all-False row. Memory: about
    ``N x n_centres x len(half_widths) x T x 24`` bytes.
    """
    N, T = vis.shape
    out = np.zeros((N, T), bool)
    if N == 0 or T < 2:
        return out
    xy = np.nan_to_num(np.asarray(xy, np.float64))
    vis = np.asarray(vis, bool)
    tt = np.arange(T)
    centres = np.unique(np.linspace(0, T - 1, n_centres).round().astype(int))
    windows = [(c, w) for c in centres for w in half_widths]
    H = len(windows)
    # hypotheses: one point per (track, window)
    wm = np.stack([np.abs(tt - c) <= w for c, w in windows])            # (H, T)
    hv = (vis[:, None, :] & wm[None]).reshape(N * H, T)
    hxy = np.broadcast_to(xy[:, None], (N, H, T, 2)).reshape(N * H, T, 2)
    X, _ = triangulate_rays(hxy, hv, K, c2w)
    X = refine_points(X, hxy, hv, K, c2w, iters=2)
    allv = np.broadcast_to(vis[:, None], (N, H, T)).reshape(N * H, T)
    e, _ = reprojection_errors(X, hxy, allv, K, c2w)
    ok = np.nan_to_num(e, nan=np.inf) < thresh
    seg = _longest_run(ok, allv).reshape(N, H, T)
    best = np.argmax(seg.sum(2), axis=1)
    seg = seg[np.arange(N), best]
    # re-triangulate on the chosen run and score once more (the window may have held drift)
    X, _ = triangulate_rays(xy, seg, K, c2w)
    X = refine_points(X, xy, seg, K, c2w, iters=3)
    e, _ = reprojection_errors(X, xy, vis, K, c2w)
    seg = _longest_run(np.nan_to_num(e, nan=np.inf) < thresh, vis)
    _, ang = triangulate_rays(xy, seg, K, c2w)
    # a partial run needs more parallax: a moving point fits a static one over a short stretch
    # with little parallax (its rays nearly meet), a whole consistent track does not
    whole = seg.sum(1) >= whole_frac * vis.sum(1)
    keep = (seg.sum(1) >= min_len) & np.isfinite(X).all(1) & \
        (ang >= np.where(whole, min_angle, partial_min_angle))
    if anchor is not None:
        # a mover's chance fit lies wherever its motion mimicked a static point; a static
        # track's run holds the frames where the tracker is best (module docstring)
        away = ~(seg & _near(np.asarray(anchor, bool), anchor_tol)).any(1)
        keep &= ~away | (ang >= away_min_angle)
    out[keep] = seg[keep]
    return out


def solved_cameras(result: dict, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(registered mask (T,), c2w (R, 4, 4), K (R, 3, 3)) of a solve result's registered frames
    (``result`` as returned by :func:`engine.solve.incremental.solve_general`)."""
    from .camera import pose_to_c2w

    reg = np.asarray(result["registered"], bool)
    c2w = pose_to_c2w(result["rvecs"], result["ts"])[reg]
    K = np.zeros((int(reg.sum()), 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = np.asarray(result["focals"])[reg]
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1
    return reg, c2w, K


def solved_view(xy: np.ndarray, result: dict, cx: float, cy: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`solved_cameras` plus the tracks ``xy`` (n, T, 2) px on the registered frames with
    the solved lens distortion undone: (reg (T,), c2w (R, 4, 4), K (R, 3, 3), xy (n, R, 2))."""
    reg, c2w, K = solved_cameras(result, cx, cy)
    p = np.nan_to_num(np.asarray(xy[:, reg], np.float64))
    dist = result.get("dist")
    if dist is not None and np.any(dist):
        from .camera import undistort_points

        for k in range(p.shape[1]):
            p[:, k] = undistort_points(p[:, k], K[k], (dist[0], dist[1], 0.0))
    return reg, c2w, K, p


def anchor_frames(confidence: np.ndarray | None, vis: np.ndarray) -> np.ndarray | None:
    """(n, T) bool: each track's visible frames at its highest confidence (within 1e-3), i.e.
    the query frame for a tracker that reports confidence 1 there; None without confidence.
    A track whose top confidence covers over half its visible frames (a tracker with flat
    confidence) gets no anchor frames, so it is not restricted."""
    if confidence is None:
        return None
    c = np.where(vis, np.nan_to_num(np.asarray(confidence, np.float64)), -1.0)
    top = vis & (c >= c.max(1, keepdims=True) - 1e-3)
    flat = top.sum(1) > 0.5 * vis.sum(1)
    top[flat] = False
    return top


def static_segments(xy: np.ndarray, vis: np.ndarray, result: dict, cx: float, cy: float,
                    thresh: float, anchor: np.ndarray | None = None, **kw) -> np.ndarray:
    """:func:`consistent_segments` of sample tracks ``xy`` (n, T, 2) px / ``vis`` (n, T) through
    a solve result's cameras (lens distortion undone first); ``anchor`` (n, T) bool or None as
    there (e.g. :func:`anchor_frames`); (n, T) bool, False on unregistered frames."""
    reg, c2w, K, p = solved_view(xy, result, cx, cy)
    out = np.zeros(vis.shape, bool)
    out[:, reg] = consistent_segments(p, np.asarray(vis[:, reg], bool), K, c2w, thresh,
                                      anchor=None if anchor is None else anchor[:, reg], **kw)
    return out
