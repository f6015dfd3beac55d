"""Choosing which tracks to turn into empties, point caches or surface attachments. Pure numpy.

All pixel coordinates are OpenCV (x right, y down) in the track file's image size; ``t`` is a
track-file frame index (0-based within the tracked range).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

_CHUNK = 65536


def _score(conf: np.ndarray, vis: np.ndarray, finite3d: np.ndarray) -> np.ndarray:
    # Reliability: how long a track is seen with a known 3D position, weighted by confidence.
    return (conf * (vis & finite3d)).mean(axis=1)


def _score_rows(data, rows) -> np.ndarray:
    """:func:`_score` of the tracks ``rows`` (a slice or sorted indices) of a track file."""
    fin = np.isfinite(np.asarray(data.tracks_3d[rows])).all(-1)
    return _score(np.asarray(data.confidence[rows]), np.asarray(data.visible[rows]), fin)


def reliability(data) -> np.ndarray:
    """(N,) reliability score in [0, 1] per track (chunked over tracks; memory-bounded)."""
    out = np.empty(data.n_tracks, np.float32)
    for s in range(0, data.n_tracks, _CHUNK):
        sl = slice(s, min(s + _CHUNK, data.n_tracks))
        out[sl] = _score_rows(data, sl)
    return out


def _group_mask(data, group: int | None) -> np.ndarray:
    if group is None or data.group is None:
        return np.ones(data.n_tracks, bool)
    return np.asarray(data.group) == group


def _groups(data) -> tuple[np.ndarray, dict[int, str]]:
    """Tracks per moving group id (counts from ``data.group``) and each id's kind from a solved
    file's report (``metadata["solve"]["lift"]["groups"]``; empty for a file without one)."""
    if data.group is None:
        return np.zeros(0, np.int64), {}
    g = np.asarray(data.group)
    counts = np.bincount(g[g >= 0]) if (g >= 0).any() else np.zeros(0, np.int64)
    kinds = {int(e["id"]): e.get("kind", "rigid")
             for e in ((getattr(data, "metadata", None) or {}).get("solve") or {})
             .get("lift", {}).get("groups", [])}
    return counts, kinds


def rigid_groups(data) -> list[int]:
    """The ids of the track file's rigid moving groups, largest first. A solved file's report
    names each id's kind (the non-rigid group, whose tracks follow no one motion, is left out);
    a file without one (ground truth) has rigid groups only."""
    counts, kinds = _groups(data)
    ids = [k for k in np.flatnonzero(counts).tolist() if kinds.get(k, "rigid") == "rigid"]
    return sorted(ids, key=lambda k: -int(counts[k]))


def group_lines(data) -> list[str]:
    """One line per moving group for the panel: its id (the Group filter's value), kind and
    track count, e.g. ``"Group 0: rigid object, 806 tracks"``."""
    counts, kinds = _groups(data)
    names = {"rigid": "rigid object", "nonrigid": "non-rigid"}
    return [f"Group {k}: " + (f"{names.get(kinds[k], kinds[k])}, " if k in kinds else "")
            + f"{int(counts[k])} tracks" for k in np.flatnonzero(counts).tolist()]


def frame_spread_px(data, n: int) -> float:
    """Spacing (px) at which ``n`` chosen tracks would tile the frame: half a tile's side."""
    W, H = data.image_size
    return 0.5 * float(np.sqrt(W * H / max(1, n)))


def most_reliable(data, n: int, group: int | None = None, spread_px: float = 0.0) -> np.ndarray:
    """Indices of the ``n`` most reliable tracks (optionally of one ``group``).

    With ``spread_px`` > 0, tracks closer than that to an already chosen one (at their query
    pixel) are skipped, so the choice covers the frame instead of clustering.
    """
    score = reliability(data)
    score[~_group_mask(data, group)] = -1
    order = np.argsort(-score, kind="stable")
    order = order[score[order] > 0]
    if spread_px <= 0:
        return np.sort(order[:n])
    q = np.asarray(data.query)[:, 1:3]
    return np.sort(_spread_pick(order, q, n, spread_px))


def _spread_pick(order: np.ndarray, pts: np.ndarray, n: int, spread_px: float) -> np.ndarray:
    """Greedy pick along ``order`` (indices into ``pts``, (M,2) pixels), skipping any index closer
    than ``spread_px`` to an already picked one; stops at ``n``. A grid of cells of that size keeps
    each test local. Returns the picked indices in pick order."""
    chosen: list[int] = []
    cell: dict[tuple[int, int], list[int]] = {}
    for i in order:
        key = (int(pts[i, 0] // spread_px), int(pts[i, 1] // spread_px))
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cell.get((key[0] + dx, key[1] + dy), ())]
        if near and (np.linalg.norm(pts[near] - pts[i], axis=1) < spread_px).any():
            continue
        chosen.append(int(i))
        cell.setdefault(key, []).append(int(i))
        if len(chosen) >= n:
            break
    return np.asarray(chosen, dtype=np.int64)


def in_circle(data, t: int, center_xy: tuple[float, float], radius_px: float,
              group: int | None = None, max_tracks: int | None = None) -> np.ndarray:
    """Tracks visible at frame ``t`` within ``radius_px`` of ``center_xy`` (nearest first if capped)."""
    idx_all, d_all = [], []
    gm = _group_mask(data, group)
    c = np.asarray(center_xy, np.float64)
    for s in range(0, data.n_tracks, _CHUNK):
        sl = slice(s, min(s + _CHUNK, data.n_tracks))
        xy = np.asarray(data.tracks_2d[sl, t], np.float64)
        vis = np.asarray(data.visible[sl, t]) & gm[sl]
        d = np.linalg.norm(xy - c, axis=1)
        m = vis & (d <= radius_px)
        idx_all.append(np.flatnonzero(m) + s)
        d_all.append(d[m])
    idx = np.concatenate(idx_all) if idx_all else np.zeros(0, np.int64)
    d = np.concatenate(d_all) if d_all else np.zeros(0)
    if max_tracks is not None and len(idx) > max_tracks:
        idx = idx[np.argsort(d, kind="stable")[:max_tracks]]
    return np.sort(idx)


def in_rect(data, t: int, xmin: float, ymin: float, xmax: float, ymax: float,
            group: int | None = None) -> np.ndarray:
    """Tracks visible at frame ``t`` inside the pixel rectangle (inclusive)."""
    return in_area(data, t, lambda xy: ((xy[:, 0] >= xmin) & (xy[:, 0] <= xmax)
                                        & (xy[:, 1] >= ymin) & (xy[:, 1] <= ymax)), group)


# ------------------------------------------------------------------------------------- polygons
def points_in_polygon(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(n,) bool: points ``xy`` (n,2) inside the closed ``polygon`` (k,2), even-odd rule.

    Ray casting towards +x with the half-open rule ``min(y1, y2) <= y < max(y1, y2)`` per edge, so
    a point on a shared vertex is counted once and a self-intersecting lasso gets holes where it
    overlaps itself (as a filled annotation/mask would show). Points are sorted by y once; each
    edge then touches only the points within its y-span (``searchsorted``), so the cost is about
    n log n + the number of (point, crossed edge) pairs, not n x k. NaN points are outside.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    inside = np.zeros(len(xy), bool)
    poly = poly[np.isfinite(poly).all(1)]
    if len(poly) < 3 or len(xy) == 0:
        return inside
    lo, hi = poly.min(0), poly.max(0)
    cand = np.flatnonzero((xy[:, 0] >= lo[0]) & (xy[:, 0] <= hi[0])
                          & (xy[:, 1] >= lo[1]) & (xy[:, 1] <= hi[1]))  # NaN compares False
    if len(cand) == 0:
        return inside
    order = np.argsort(xy[cand, 1], kind="stable")
    xs, ys = xy[cand[order], 0], xy[cand[order], 1]
    parity = np.zeros(len(cand), bool)
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for a, b, c, d in zip(x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist()):
        if b == d:
            continue  # horizontal edge: never crossed by a horizontal ray under the half-open rule
        i0, i1 = np.searchsorted(ys, (min(b, d), max(b, d)), side="left")
        if i0 == i1:
            continue
        yy = ys[i0:i1]
        parity[i0:i1] ^= xs[i0:i1] < a + (yy - b) * ((c - a) / (d - b))
    inside[cand[order]] = parity
    return inside


def points_in_polygons(xy: np.ndarray, polygons: Sequence[np.ndarray], even_odd: bool = False) -> np.ndarray:
    """(n,) bool: inside any of ``polygons`` (union); with ``even_odd`` overlapping polygons cut
    holes into each other (inside an odd number of them)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    out = np.zeros(len(xy), bool)
    for poly in polygons:
        m = points_in_polygon(xy, poly)
        out = (out ^ m) if even_odd else (out | m)
    return out


def _reliability_of(data, idx: np.ndarray) -> np.ndarray:
    """:func:`reliability` of the tracks ``idx`` only (sorted indices; chunked)."""
    out = np.empty(len(idx), np.float32)
    for s in range(0, len(idx), _CHUNK):
        rows = idx[s:s + _CHUNK]
        out[s:s + len(rows)] = _score_rows(data, rows)
    return out


def in_area(data, t: int, contains: Callable[[np.ndarray], np.ndarray], group: int | None = None,
            max_tracks: int | None = None) -> np.ndarray:
    """Tracks visible at frame ``t`` whose 2D position (pixels) satisfies ``contains`` ((n,2) ->
    (n,) bool), sorted. Chunked over tracks.

    With ``max_tracks``, the most reliable of them are kept, spread over the area they cover (no
    two closer than half the side of a tile of area/``max_tracks``), topped up with the next most
    reliable if the spacing leaves fewer than ``max_tracks``.
    """
    gm = _group_mask(data, group)
    idx_all, xy_all = [], []
    for s in range(0, data.n_tracks, _CHUNK):
        sl = slice(s, min(s + _CHUNK, data.n_tracks))
        xy = np.asarray(data.tracks_2d[sl, t], np.float64)
        m = np.asarray(data.visible[sl, t], bool) & gm[sl]
        sub = np.flatnonzero(m)
        if len(sub):
            m[sub] = np.asarray(contains(xy[sub]), bool)
        idx_all.append(np.flatnonzero(m) + s)
        xy_all.append(xy[m])
    idx = np.concatenate(idx_all) if idx_all else np.zeros(0, np.int64)
    if max_tracks is None or len(idx) <= max_tracks:
        return idx.astype(np.int64)
    xy = np.concatenate(xy_all)
    order = np.argsort(-_reliability_of(data, idx), kind="stable")
    ext = np.ptp(xy, axis=0)
    spread = 0.5 * float(np.sqrt(max(ext[0] * ext[1], 1.0) / max_tracks))
    picked = _spread_pick(order, xy, max_tracks, spread)
    if len(picked) < max_tracks:  # spacing too strict for this many: fill by reliability
        rest = order[~np.isin(order, picked)]
        picked = np.r_[picked, rest[:max_tracks - len(picked)]]
    return np.sort(idx[picked]).astype(np.int64)


def in_polygon(data, t: int, polygons_px: Sequence[np.ndarray], group: int | None = None,
               max_tracks: int | None = None) -> np.ndarray:
    """Tracks visible at frame ``t`` inside any of ``polygons_px`` (each (k,2) OpenCV pixels of the
    track file, closed implicitly, even-odd within a polygon). See :func:`in_area` for the cap."""
    polys = [np.asarray(p, np.float64) for p in polygons_px]
    return in_area(data, t, lambda xy: points_in_polygons(xy, polys), group, max_tracks)
