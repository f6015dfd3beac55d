"""Self-check of a ground-truth track file: the proof that the answers are right (numpy only).

Checks, all on the stored (float32) arrays:

1. Re-projection: ``tracks_3d`` projected with ``K`` / ``cam_to_world`` lands on ``tracks_2d``
   (max error < ``reproj_tol_px``), for every point-frame in front of the camera.
2. Queries: each track passes through its query pixel at its query frame and is visible there.
3. Depth: for visible point-frames, the camera-frame z of ``tracks_3d`` agrees with the rendered
   depth map (an independent Cycles render) interpolated at the track's sub-pixel position
   (relative error < ``depth_rel_tol``). Interpolation fits an affine function to inverse depth on
   the 4x4 pixel patch around the point (exact for a plane); patches that are not planar within
   ``edge_rel_tol`` (depth edges, creases) are skipped and counted.
4. Occlusion against the render: for in-image point-frames marked occluded, one of the 4 nearest
   depth pixels shows a surface in front of the point (fraction >= ``occlusion_min_agree``); for
   those marked visible, not all 4 do (fraction >= ``occlusion_min_agree``; a few legitimate
   exceptions sit on silhouettes of curved surfaces).
5. Consistency: confidence == visible, visible points inside the image, static points (group −1)
   do not move.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class SelfCheckReport:
    reproj_max_px: float
    query_max_px: float
    query_all_visible: bool
    depth_max_rel: float
    depth_median_rel: float
    depth_checked: int          # visible point-frames whose depth was compared
    depth_skipped_edge: int     # visible point-frames skipped as on a depth edge / crease
    occluded_checked: int       # in-image point-frames marked occluded
    occluded_agree: float       # fraction of them with a nearer surface in the depth map
    visible_agree: float        # fraction of visible point-frames not hidden in the depth map
    static_max_motion: float    # metres
    consistent: bool            # confidence == visible, visible => in image
    reproj_tol_px: float
    depth_rel_tol: float
    occlusion_min_agree: float = 0.98

    @property
    def ok(self) -> bool:
        return (self.reproj_max_px < self.reproj_tol_px and self.query_max_px < self.reproj_tol_px
                and self.query_all_visible and self.depth_checked > 0
                and self.depth_max_rel < self.depth_rel_tol and self.static_max_motion < 1e-5
                and self.occluded_agree >= self.occlusion_min_agree
                and self.visible_agree >= self.occlusion_min_agree
                and self.consistent)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _project(p: np.ndarray, c2w: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p (N, 3) world -> xy (N, 2), z (N,) for one OpenCV camera (float64)."""
    pc = (p - c2w[:3, 3]) @ c2w[:3, :3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = k[0, 0] * pc[:, 0] / z + k[0, 1] * pc[:, 1] / z + k[0, 2]
        y = k[1, 1] * pc[:, 1] / z + k[1, 2]
    return np.column_stack([x, y]), z


def depth_at(depth: np.ndarray, xy: np.ndarray, edge_rel_tol: float = 1e-4
             ) -> tuple[np.ndarray, np.ndarray]:
    """Depth interpolated at sub-pixel ``xy`` (M, 2) of one depth map (H, W).

    Fits ``1/z = a + b x + c y`` on the 4x4 pixel-centre patch around each point (exact on a plane
    under a pinhole camera). Returns (z (M,), ok (M,)); ok is False near the border, where the
    patch has no surface, or where the fit residual exceeds ``edge_rel_tol`` relative (an edge).
    """
    h, w = depth.shape
    x0 = np.floor(xy[:, 0]).astype(np.int64) - 1
    y0 = np.floor(xy[:, 1]).astype(np.int64) - 1
    ok = (x0 >= 0) & (y0 >= 0) & (x0 + 3 < w) & (y0 + 3 < h)
    z = np.full(len(xy), np.nan)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return z, ok
    dy, dx = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    dx, dy = dx.ravel(), dy.ravel()
    px = x0[idx, None] + dx[None]
    py = y0[idx, None] + dy[None]
    d = depth[py, px].astype(np.float64)                    # (M, 16)
    finite = np.isfinite(d).all(1) & (d > 0).all(1)
    inv = 1.0 / np.where(np.isfinite(d) & (d > 0), d, 1.0)
    # Design matrix centred on the query point, so the intercept is the value there.
    a = np.stack([np.ones_like(px, dtype=np.float64), px - xy[idx, :1], py - xy[idx, 1:]], -1)
    coef = np.einsum("mij,mj->mi", np.linalg.pinv(a), inv)  # (M, 3)
    resid = np.abs(np.einsum("mjk,mk->mj", a, coef) - inv).max(1)
    planar = finite & (resid <= edge_rel_tol * inv.mean(1))
    z[idx] = 1.0 / coef[:, 0]
    ok[idx] = planar
    return z, ok


def _nearest4(depth: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Depth at the 4 pixel centres around each point (M, 4) (indices clamped to the image)."""
    h, w = depth.shape
    x0 = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, w - 2)
    y0 = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, h - 2)
    return np.stack([depth[y0 + a, x0 + b] for a in (0, 1) for b in (0, 1)], 1).astype(np.float64)


def self_check(data, depth: np.ndarray | None = None, reproj_tol_px: float = 0.01,
               depth_rel_tol: float = 1e-3, occlusion_min_agree: float = 0.98) -> SelfCheckReport:
    """Run all checks on a :class:`engine.trackfile.TrackData` (``depth`` overrides ``data.depth``)."""
    depth = data.depth if depth is None else depth
    if depth is None:
        raise ValueError("self_check needs the depth maps (generate with with_depth or pass depth=)")
    xy_gt = np.asarray(data.tracks_2d, np.float64)
    p3 = np.asarray(data.tracks_3d, np.float64)
    vis = np.asarray(data.visible, bool)
    c2w = np.asarray(data.cam_to_world, np.float64)
    k = np.asarray(data.K, np.float64)
    q = np.asarray(data.query, np.float64)
    n, t_len = vis.shape
    w, h = data.image_size
    reproj, d_err, checked, skipped = 0.0, [], 0, 0
    inside_ok = True
    occ_n, occ_ok, vis_n, vis_ok = 0, 0, 0, 0
    for t in range(t_len):
        xy, z = _project(p3[:, t], c2w[t], k[t])
        front = z > 1e-6
        if (np.isfinite(xy_gt[:, t]).all(1) != front).any():
            inside_ok = False  # tracks_2d must be defined exactly where the point is in front
        if front.any():
            reproj = max(reproj, float(np.abs(xy[front] - xy_gt[front, t]).max()))
        v = vis[:, t]
        if (v & ~front).any():
            inside_ok = False
        pts = xy_gt[v, t]
        if ((pts < -0.5) | (pts > np.array([w, h]) - 0.5)).any():
            inside_ok = False
        in_img = front & (xy_gt[:, t] >= -0.5).all(1) & (xy_gt[:, t] <= np.array([w, h]) - 0.5).all(1)
        for sel, is_vis in ((in_img & ~v, False), (v, True)):
            if sel.any():
                near = _nearest4(np.asarray(depth[t]), xy_gt[sel, t])
                zs = z[sel, None] * (1 - depth_rel_tol)
                if is_vis:
                    vis_n += int(sel.sum())
                    vis_ok += int((near >= zs).any(1).sum())
                else:
                    occ_n += int(sel.sum())
                    occ_ok += int((near < zs).any(1).sum())
        if v.any():
            zd, ok = depth_at(np.asarray(depth[t]), pts)
            rel = np.abs(zd[ok] - z[v][ok]) / z[v][ok]
            d_err.append(rel)
            checked += int(ok.sum())
            skipped += int((~ok).sum())
    tq = q[:, 0].astype(np.int64)
    at_q = xy_gt[np.arange(n), tq]
    query_err = float(np.abs(at_q - q[:, 1:]).max()) if n else 0.0
    d_all = np.concatenate(d_err) if d_err else np.zeros(0)
    group = np.asarray(data.group) if data.group is not None else np.full(n, -1)
    st = p3[group < 0]
    static_motion = float(np.abs(st - st[:, :1]).max()) if st.size else 0.0
    consistent = inside_ok and bool((np.asarray(data.confidence) == vis.astype(np.float32)).all())
    return SelfCheckReport(
        reproj_max_px=reproj, query_max_px=query_err,
        query_all_visible=bool(vis[np.arange(n), tq].all()) if n else True,
        depth_max_rel=float(d_all.max()) if d_all.size else float("nan"),
        depth_median_rel=float(np.median(d_all)) if d_all.size else float("nan"),
        depth_checked=checked, depth_skipped_edge=skipped, occluded_checked=occ_n,
        occluded_agree=occ_ok / occ_n if occ_n else 1.0, visible_agree=vis_ok / vis_n if vis_n else 1.0,
        static_max_motion=static_motion, consistent=consistent, reproj_tol_px=reproj_tol_px,
        depth_rel_tol=depth_rel_tol, occlusion_min_agree=occlusion_min_agree)
