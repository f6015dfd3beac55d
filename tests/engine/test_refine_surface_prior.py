"""Surface prior of the refine stage's appearance sweep (engine.refine.neighbours).

A textured ground plane with a plain (uniform) patch, filmed by a moving camera: the tracker
loses the points on the patch (their 2D wanders off), so neither the static fit nor the
appearance alone can place them (every depth along the ray "matches" a uniform patch). The local
surface through the textured static tracks around them gives the depth. Reuses the rendered
plane clip of tests/engine/test_refine.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import track_synth  # noqa: E402
from test_refine import _plane_clip, refine_outputs  # noqa: E402

import engine.refine.regions as regions_mod  # noqa: E402
import engine.refine.sweep as sweep_mod  # noqa: E402
import engine.refine.tracks as tracks_mod  # noqa: E402
from engine.refine.neighbours import neighbour_depths  # noqa: E402
from engine.refine.tracks import refine_tracks  # noqa: E402

PATCH = (-0.7, 0.7, 0.0, 1.2)    # world x0, x1, y0, y1 of the plain patch on the plane z = 0
TEX_PX = 8.0 / 600               # world units per texture pixel (as in _plane_clip)
PRIOR_WEIGHT = sweep_mod.PRIOR_WEIGHT
DOUBT = tracks_mod.DOUBT_MAX_FIT_FRACTION
SPREAD_MIN = regions_mod.SPREAD_MIN


def _flat_texture(orig):
    def tex(h, w, seed):
        img = orig(h, w, seed)
        x0, x1, y0, y1 = PATCH
        c = lambda v: int(round(v / TEX_PX + 300))           # noqa: E731
        img[c(y0):c(y1), c(x0):c(x1)] = 128
        return img
    return tex


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(track_synth, "texture", _flat_texture(track_synth.texture))
    try:
        path, c2w, K, query, X, uv, vis = _plane_clip(tmp_path_factory.mktemp("prior"))
    finally:
        mp.undo()
    x0, x1, y0, y1 = PATCH
    m = 3 * TEX_PX                                   # the patch's interior (descriptor support)
    plain = (X[:, 0] > x0 + m) & (X[:, 0] < x1 - m) & (X[:, 1] > y0 + m) & (X[:, 1] < y1 - m)
    return path, c2w, K, query, X, uv, vis, plain


def _refine(scene, prior_weight, doubt, monkeypatch, regions=False):
    """``regions``: also the plain regions' planes (engine.refine.regions), which place the
    patch's points on their own; off, the surface prior is tested alone."""
    from engine.decode import open_footage

    path, c2w, K, query, X, uv, vis, plain = scene
    monkeypatch.setattr(regions_mod, "SPREAD_MIN", SPREAD_MIN if regions else np.inf)
    monkeypatch.setattr(sweep_mod, "PRIOR_WEIGHT", prior_weight)
    monkeypatch.setattr(tracks_mod, "DOUBT_MAX_FIT_FRACTION", doubt)
    N, T = vis.shape
    rng = np.random.default_rng(1)
    xy = uv + rng.normal(0, 0.3, uv.shape)
    # the tracker loses the plain points: they wander off from frame 1 on
    xy[plain, 1:] += np.cumsum(rng.normal(0, 3, (int(plain.sum()), T - 1, 2)), axis=1)
    v = vis.copy()
    v[:, 0] = True
    xy[:, 0] = query[:, 1:]
    Kt = np.repeat(K[None], T, 0)
    out = refine_outputs(N, T)
    X3 = np.repeat(X[:, None], T, 1).astype(np.float32)
    X3[plain] = np.nan
    res = refine_tracks(xy.astype(np.float32), v, v.astype(np.float32), query, X3,
                        np.where(plain, 0, -1).astype(np.int32), np.zeros(N, np.float32), c2w,
                        Kt, None, "general", 0.3, (160, 120), set(), out["xy"], out["v"],
                        out["c"], out["x3"], out["g"], out["e"], footage=open_footage(path))
    return res, out


def test_neighbour_depth_of_a_plane_is_exact(scene):
    """The local plane through neighbours' points gives the true depth of a query on it."""
    path, c2w, K, query, X, uv, vis, plain = scene
    T = len(c2w)
    Kt = np.repeat(K[None], T, 0)
    anc = np.flatnonzero(~plain)
    d, spread, cnt = neighbour_depths(query[plain].astype(np.float64), c2w, Kt, X[anc],
                                      vis[anc], anchor_ids=anc,
                                      track_ids=np.flatnonzero(plain), radius_px=60, k=32)
    true = np.linalg.norm(X[plain] - c2w[0, :3, 3], axis=1)
    assert np.isfinite(d).all() and (cnt >= 4).all()
    assert np.max(np.abs(d / true - 1)) < 1e-3
    assert np.nanmax(spread) < 1e-3


def test_surface_prior_places_points_on_a_plain_patch(scene, monkeypatch):
    """Without the prior (and without doubting static fits) the sweep cannot choose a depth on
    the plain patch, and a plain track whose wandering 2D happened to give a static fit keeps a
    wrong depth; with them all plain tracks follow the plane. Textured tracks are unchanged."""
    path, c2w, K, query, X, uv, vis, plain = scene
    assert plain.sum() >= 8
    res0, out0 = _refine(scene, 0.0, 0.0, monkeypatch)
    res1, out1 = _refine(scene, PRIOR_WEIGHT, DOUBT, monkeypatch)
    assert res1.report["n_surface_prior"] >= 0.8 * plain.sum(), res1.report
    e0 = np.linalg.norm(out0["xy"] - uv, axis=-1)
    e1 = np.linalg.norm(out1["xy"] - uv, axis=-1)
    swept = plain & (res0.kind == 3)

    assert np.median(e0[swept][vis[swept]]) > 2.0, res0.report   # appearance alone: wrong depth
    assert np.median(e1[swept][vis[swept]]) < 1.0, res1.report   # with the prior: on the plane
    # lucky static fits on the patch with a wrong depth are doubted and re-placed
    wrong_fit = np.flatnonzero(plain & (res0.kind == 1) & (np.nanmedian(
        np.where(vis, e0, np.nan), axis=1) > 3.0))
    assert len(wrong_fit) >= 1
    assert res1.report["n_static_fit_replaced"] >= len(wrong_fit)
    assert (np.nanmedian(np.where(vis, e1, np.nan), axis=1)[wrong_fit] < 1.0).all()
    assert np.median(e1[plain][vis[plain]]) < 0.5
    # textured tracks keep their static fit, bit for bit
    good = ~plain & (res0.kind == 1)
    assert good.sum() >= 0.8 * (~plain).sum()
    assert np.array_equal(res0.kind[good], res1.kind[good])
    assert np.array_equal(out0["xy"][good], out1["xy"][good])
    assert np.array_equal(out0["x3"][good], out1["x3"][good])


def test_plain_region_plane_places_the_patch_without_the_surface_prior(scene, monkeypatch):
    """With the surface prior and the doubt off, the patch's points still end on the plane: their
    plain region (the patch) is aligned as a whole through the solved cameras
    (engine.refine.regions); the textured tracks keep their static fit, bit for bit."""
    path, c2w, K, query, X, uv, vis, plain = scene
    res0, out0 = _refine(scene, 0.0, 0.0, monkeypatch)
    res2, out2 = _refine(scene, 0.0, 0.0, monkeypatch, regions=True)
    e0 = np.linalg.norm(out0["xy"] - uv, axis=-1)
    e2 = np.linalg.norm(out2["xy"] - uv, axis=-1)
    assert np.median(e0[plain][vis[plain]]) > 2.0, res0.report
    assert res2.report["n_plain_region"] >= 0.8 * plain.sum(), res2.report
    assert np.median(e2[plain][vis[plain]]) < 0.5, res2.report
    good = ~plain & (res0.kind == 1)
    assert good.sum() >= 0.8 * (~plain).sum()
    assert np.array_equal(out0["xy"][good], out2["xy"][good])
