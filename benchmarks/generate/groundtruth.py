"""Exact ground truth from the evaluated Blender scene: cameras, surface tracks, visibility.

Every tracked mesh is triangulated; per frame we read the evaluated (animated, deformed) world
vertex positions of all of them into one triangle soup. A query ray hits one triangle; the point
is stored as (triangle, barycentric coordinates), which follows rigid motion and deformation alike:
``P_t = sum_k b_k V_t[tri_k]``. Visibility casts a ray from the camera centre to ``P_t``.
Computation is in float64; Blender stores vertices in float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Vector
from mathutils.bvhtree import BVHTree

from .camera_model import blender_cam_to_cv, k_from_projection, pixel_rays, project
from .scene import BuiltScene

#: a ray hit counts as "the same point" when it is this close (relative to distance) in front of it
VIS_REL_TOL = 1e-4


@dataclass
class Geometry:
    """Animated triangle soup and cameras for frames 0..T-1 (world = Blender world, metres)."""

    tris: np.ndarray          # (M, 3) int vertex indices into the concatenated vertex array
    tri_group: np.ndarray     # (M,) int group of each triangle (−1 static)
    verts: np.ndarray         # (T, V, 3) float64 world vertex positions per frame
    cam_to_world: np.ndarray  # (T, 4, 4) float64 OpenCV camera-to-world
    K: np.ndarray             # (T, 3, 3) float64
    _bvh: dict | None = None

    def bvh(self, t: int) -> BVHTree:
        if self._bvh is None:
            self._bvh = {}
        if t not in self._bvh:
            self._bvh = {t: BVHTree.FromPolygons(self.verts[t].tolist(), self.tris.tolist(),
                                                 all_triangles=True, epsilon=0.0)}
        return self._bvh[t]


def collect_geometry(built: BuiltScene, n_frames: int) -> Geometry:
    """Evaluate the scene at every frame; read world vertices, camera pose and intrinsics."""
    sc = built.scene
    w, h = sc.render.resolution_x, sc.render.resolution_y
    tris, groups, offsets = [], [], []
    verts = None
    c2w = np.empty((n_frames, 4, 4))
    kk = np.empty((n_frames, 3, 3))
    for f in range(n_frames):
        sc.frame_set(f)
        dg = bpy.context.evaluated_depsgraph_get()
        frame_verts = []
        off = 0
        for i, to in enumerate(built.objects):
            ev = to.obj.evaluated_get(dg)
            me = ev.to_mesh()
            try:
                n = len(me.vertices)
                co = np.empty(n * 3, np.float32)
                me.vertices.foreach_get("co", co)
                m = np.array(ev.matrix_world, dtype=np.float64)
                frame_verts.append(co.reshape(n, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3])
                if f == 0:
                    if any(len(p.vertices) != 3 for p in me.polygons):
                        raise RuntimeError(f"{to.obj.name}: ground-truth meshes must be triangles")
                    t = np.empty(len(me.polygons) * 3, np.int32)
                    me.polygons.foreach_get("vertices", t)
                    tris.append(t.reshape(-1, 3) + off)
                    groups.append(np.full(len(me.polygons), to.group, np.int32))
                    offsets.append(n)
                elif n != offsets[i]:
                    raise RuntimeError(f"{to.obj.name}: topology changes over time")
                off += n
            finally:
                ev.to_mesh_clear()
        fv = np.concatenate(frame_verts)
        if verts is None:
            verts = np.empty((n_frames,) + fv.shape)
        verts[f] = fv
        cam = built.camera.evaluated_get(dg)
        mw = np.array(cam.matrix_world, dtype=np.float64)
        if not np.allclose(np.linalg.norm(mw[:3, :3], axis=0), 1, atol=1e-5):
            raise RuntimeError("the camera must not be scaled")
        c2w[f] = blender_cam_to_cv(mw)
        proj = np.array(cam.calc_matrix_camera(dg, x=w, y=h, scale_x=1.0, scale_y=1.0))
        kk[f] = k_from_projection(proj, w, h)
    return Geometry(np.concatenate(tris), np.concatenate(groups), verts, c2w, kk)


def _intersect(origin: np.ndarray, d: np.ndarray, tri: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact (float64) ray–triangle intersection: (ray parameter s, barycentric (3,))."""
    a, b, c = tri
    e1, e2 = b - a, c - a
    m = np.column_stack([e1, e2, -d])
    u, v, s = np.linalg.solve(m, origin - a)
    return float(s), np.array([1 - u - v, u, v])


def cast_queries(geo: Geometry, t: int, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cast rays through pixels ``xy`` (M, 2) at frame t.

    Returns (hit mask (M,), triangle index (M,), barycentric coordinates (M, 3)).
    """
    origin, dirs = pixel_rays(xy, geo.cam_to_world[t], geo.K[t])
    bvh = geo.bvh(t)
    o = Vector(origin)
    hit = np.zeros(len(xy), bool)
    tri = np.full(len(xy), -1, np.int64)
    bary = np.zeros((len(xy), 3))
    for i, d in enumerate(dirs):
        loc, _, idx, _ = bvh.ray_cast(o, Vector(d))
        if loc is None:
            continue
        s, b = _intersect(origin, d, geo.verts[t][geo.tris[idx]])
        if s <= 0:
            continue
        hit[i], tri[i], bary[i] = True, idx, np.clip(b, 0.0, 1.0) / np.clip(b, 0.0, 1.0).sum()
    return hit, tri, bary


def follow(geo: Geometry, tri: np.ndarray, bary: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """World positions (N, T, 3) of surface points given by triangle + barycentric coordinates."""
    out = np.empty((len(tri), geo.verts.shape[0], 3))
    for s in range(0, len(tri), chunk):
        v = geo.verts[:, geo.tris[tri[s:s + chunk]]]  # (T, n, 3 corners, 3)
        out[s:s + chunk] = np.einsum("tnkc,nk->ntc", v, bary[s:s + chunk])
    return out


def visibility(geo: Geometry, tracks_3d: np.ndarray, tri: np.ndarray, width: int, height: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project tracks and test visibility. Returns (tracks_2d (N,T,2), z (N,T), visible (N,T)).

    Visible = in front of the camera, inside the image (pixel centres −0.5 .. W−0.5) and the ray
    from the camera centre to the point hits nothing nearer (other than the point's own triangle
    or a surface within ``VIS_REL_TOL`` of the point). ``tracks_2d`` is NaN behind the camera.
    """
    n, t_len = tracks_3d.shape[:2]
    xy = np.full((n, t_len, 2), np.nan)
    z = np.full((n, t_len), np.nan)
    vis = np.zeros((n, t_len), bool)
    for t in range(t_len):
        p, zt = project(tracks_3d[:, t], geo.cam_to_world[t], geo.K[t])
        front = zt > 1e-6
        xy[front, t] = p[front]
        z[:, t] = zt
        inside = front & (p[:, 0] >= -0.5) & (p[:, 0] <= width - 0.5) \
            & (p[:, 1] >= -0.5) & (p[:, 1] <= height - 0.5)
        idx = np.flatnonzero(inside)
        if not len(idx):
            continue
        bvh = geo.bvh(t)
        c = geo.cam_to_world[t, :3, 3]
        o = Vector(c)
        for i in idx:
            d = tracks_3d[i, t] - c
            dist = float(np.linalg.norm(d))
            loc, _, hit_tri, hit_d = bvh.ray_cast(o, Vector(d / dist), dist * (1 + 1e-6))
            vis[i, t] = loc is None or hit_tri == tri[i] or hit_d >= dist * (1 - VIS_REL_TOL)
    return xy, z, vis


def sample_queries(geo: Geometry, rng: np.random.Generator, n_queries: int, width: int,
                   height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries on surfaces: a jittered grid at frame 0 (about half) + uniform pixels at random later
    frames (the rest; all at frame 0 for a one-frame clip). Rays that miss (sky) are redrawn.

    Returns (query (N, 3) [t, x, y] float64, triangle (N,), barycentric (N, 3)).
    """
    t_len = geo.verts.shape[0]
    n_grid = n_queries if t_len == 1 else n_queries // 2
    q, tris, bary = [], [], []
    if n_grid:
        gh = max(1, int(round(np.sqrt(n_grid * height / width))))
        gw = int(np.ceil(n_grid / gh))
        cells = rng.permutation(gw * gh)[:n_grid]
        cx, cy = cells % gw, cells // gw
        x = (cx + rng.random(n_grid)) * width / gw - 0.5
        y = (cy + rng.random(n_grid)) * height / gh - 0.5
        xy = np.column_stack([x, y])
        hit, tr, b = cast_queries(geo, 0, xy)
        q.append(np.column_stack([np.zeros(hit.sum()), xy[hit]]))
        tris.append(tr[hit])
        bary.append(b[hit])
    missing = n_queries - sum(len(a) for a in q)
    for _ in range(100):
        if missing <= 0:
            break
        m = max(missing, 16)
        tq = rng.integers(1 if t_len > 1 else 0, t_len, m)
        xy = np.column_stack([rng.uniform(-0.5, width - 0.5, m), rng.uniform(-0.5, height - 0.5, m)])
        for t in np.unique(tq):
            sel = np.flatnonzero(tq == t)
            hit, tr, b = cast_queries(geo, int(t), xy[sel])
            sel, tr, b = sel[hit][:missing], tr[hit][:missing], b[hit][:missing]
            q.append(np.column_stack([np.full(len(sel), t), xy[sel]]))
            tris.append(tr)
            bary.append(b)
            missing -= len(sel)
    if missing > 0:
        raise RuntimeError("could not place enough query points on surfaces (camera sees only sky?)")
    return np.concatenate(q), np.concatenate(tris), np.concatenate(bary)
