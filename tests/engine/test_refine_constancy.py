"""Appearance constancy (engine/refine/constancy.py) on a real rendered image sequence.

The clip: a plain wall (render noise only) with textured patches, a textured card sliding
across it (it covers some plain wall points for a few frames), and an exposure step half-way
through. Tracks are given as a refined solve would write them: static points everywhere
visible, a moving track on the card that loses the card and stays on the wall.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.decode import open_footage
from engine.refine import constancy

T, W, H = 12, 160, 120
CARD = 24                 # card side, px
STEP = 9                  # card moves this many px per frame
GAIN_FROM, GAIN = 7, 1.25  # exposure step (frames >= GAIN_FROM are brighter)


def _card_x0(t: int) -> int:
    return 4 + STEP * t


def _clip(tmp_path, gain: float = GAIN):
    rng = np.random.default_rng(0)
    wall = np.full((H, W, 3), (0.45, 0.42, 0.38), np.float32)
    wall += rng.normal(0, 0.004, wall.shape).astype(np.float32)      # render noise only
    # textured patches on the wall (static textured points)
    for cx in (20, 60, 100, 140):
        wall[90:110, cx - 10:cx + 10] = rng.uniform(0.1, 0.9, (20, 20, 1))
    card = rng.uniform(0.0, 1.0, (CARD, CARD, 1)).repeat(3, 2) * (0.9, 0.5, 0.2)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(T):
        img = wall.copy()
        x0 = _card_x0(t)
        img[40:40 + CARD, x0:x0 + CARD] = card[:, :max(0, min(CARD, W - x0))]
        if t >= GAIN_FROM:
            img *= gain
        cv2.imwrite(str(folder / f"frame_{t:04d}.png"),
                    cv2.cvtColor((np.clip(img, 0, 1) * 255).round().astype(np.uint8),
                                 cv2.COLOR_RGB2BGR))
    return open_footage(folder)


def _tracks():
    """(query, tracks_2d, visible, confidence, group, covered): static wall points on a grid
    (plain) and on the patches (textured), one moving card track; ``covered`` (N, T) where the
    card really hides a wall point."""
    # plain; the card passes over the row y=52 (uncovered at the query frame 0)
    pts = [(x, y) for y in (20, 70) for x in range(12, 150, 14)]
    pts += [(x, 52) for x in range(40, 150, 14)]
    pts += [(cx + dx, 100) for cx in (20, 60, 100, 140) for dx in (-4, 4)]   # textured
    n_static = len(pts)
    xy = np.zeros((n_static + 1, T, 2), np.float32)
    xy[:n_static] = np.array(pts, np.float32)[:, None]
    # the card track: on the card's centre up to frame 4, then left behind on the wall
    for t in range(T):
        tt = min(t, 4)
        xy[n_static, t] = (_card_x0(tt) + CARD / 2, 40 + CARD / 2)
    query = np.concatenate([np.zeros((n_static + 1, 1)), xy[:, 0]], 1).astype(np.float32)
    vis = np.ones((n_static + 1, T), bool)
    conf = np.ones((n_static + 1, T), np.float32)
    group = np.full(n_static + 1, -1, np.int32)
    group[n_static] = 0
    covered = np.zeros((n_static + 1, T), bool)
    for i, (x, y) in enumerate(pts):
        for t in range(T):
            x0 = _card_x0(t)
            covered[i, t] = 40 <= y < 40 + CARD and x0 <= x < x0 + CARD
    return query, xy, vis, conf, group, covered


def test_hides_covered_plain_points_and_the_lost_moving_track(tmp_path):
    footage = _clip(tmp_path)
    query, xy, vis, conf, group, covered = _tracks()
    rep = constancy.constancy_veto(footage, query, xy, vis, conf, group)
    n_static = len(group) - 1
    # every wall point the card covers (away from the card's border) is hidden there ...
    covered = covered[:n_static]
    inner = covered.copy()
    for i in range(n_static):
        x, y = xy[i, 0]
        for t in range(T):
            x0 = _card_x0(t)
            inner[i, t] &= x0 + constancy.RADIUS < x < x0 + CARD - constancy.RADIUS
    assert inner.sum() >= 6
    assert not vis[:n_static][inner].any()
    # ... and every static point whose patch the card does not touch stays visible, across
    # the exposure step too (a patch straddling the card's edge may go either way)
    r = constancy.RADIUS + 1
    free = np.ones_like(covered)
    for i in range(n_static):
        x, y = xy[i, 0]
        for t in range(T):
            x0 = _card_x0(t)
            free[i, t] = not (40 - r <= y < 40 + CARD + r and x0 - r <= x < x0 + CARD + r)
    assert vis[:n_static][free].all(), np.argwhere(~vis[:n_static] & free)
    assert (conf[:n_static][~vis[:n_static]] == constancy.HIDDEN_CONFIDENCE).all()
    # the moving track: visible while on the card, hidden once left on the wall
    assert vis[n_static, :5].all()
    assert not vis[n_static, 6:].any()
    assert rep["hidden_textured"] + rep["hidden_moving"] >= 6
    assert rep["hidden_plain_colour"] >= inner.sum()
    lo, hi = rep["exposure_gain_range"]
    assert lo == pytest.approx(1.0, abs=0.02) and hi == pytest.approx(GAIN, abs=0.03)


def test_exposure_gain_keeps_plain_points_visible(tmp_path):
    """The exposure step alone is larger than the plain-colour rule: only the per-frame gain
    keeps the uncovered plain points visible after it."""
    footage = _clip(tmp_path)
    query, xy, vis, conf, group, covered = _tracks()
    keep = np.flatnonzero(~covered[:-1].any(1))[:-8]      # plain wall points the card misses
    assert 0.38 * (GAIN - 1) > constancy.PLAIN_COLOUR
    v = vis[keep].copy()
    rep = constancy.constancy_veto(footage, query[keep], xy[keep], v, conf[keep].copy(),
                                   group[keep])
    assert v.all() and rep["hidden"] == 0


def test_pattern_change_alone_hides_only_tracks_outside_the_static_group(tmp_path):
    """A track that jumps from one textured wall patch to another (same grey statistics, so
    nearly the same mean colour, another pattern): a moving track is hidden there, a static one
    is not (its geometry vouches for it; shading changes patterns of visible points too)."""
    footage = _clip(tmp_path, gain=1.0)
    xy = np.zeros((2, T, 2), np.float32)
    xy[:, :] = (20, 100)
    xy[:, 3:] = (60, 100)
    query = np.array([[0, 20, 100]] * 2, np.float32)
    vis = np.ones((2, T), bool)
    rep = constancy.constancy_veto(footage, query, xy, vis, np.ones((2, T), np.float32),
                                   np.array([-1, 0]))
    assert vis[0].all()
    assert vis[1, :3].all() and not vis[1, 3:].any()
    assert rep["hidden_moving"] == T - 3 and rep["hidden_textured"] == 0


def test_query_frame_is_never_hidden_and_too_few_points_skip_the_gain(tmp_path):
    footage = _clip(tmp_path, gain=1.0)
    query, xy, vis, conf, group, covered = _tracks()
    # query the card track on frame 8, where it sits on the wall: nothing changes its appearance
    i = len(group) - 1
    query[i] = (8, *xy[i, 8])
    one = slice(i, i + 1)
    v = vis[one].copy()
    rep = constancy.constancy_veto(footage, query[one], xy[one], v, conf[one].copy(), group[one])
    assert v[0, 8]
    assert v[0, 6:].all()           # the same wall patch from frame 6 on
    assert not v[0, :6].any()       # the card (still over it on frame 5) looks nothing like it
    assert rep["exposure_gain_range"] == [1.0, 1.0]   # one point: no exposure estimate


def test_chunked_run_gives_the_same_result(tmp_path, monkeypatch):
    from engine.track.memory import MemoryBudget

    footage = _clip(tmp_path)
    query, xy, vis, conf, group, _ = _tracks()
    a, b = vis.copy(), vis.copy()
    ra = constancy.constancy_veto(footage, query, xy, a, conf.copy(), group)
    # a budget that holds only a few tracks per chunk
    monkeypatch.setattr(constancy, "MIN_CHUNK", 5)
    monkeypatch.setattr(constancy, "BYTES_PER_TRACK", 12 << 20)
    ticks = []
    rb = constancy.constancy_veto(footage, query, xy, b, conf.copy(), group, MemoryBudget(400),
                                  tick=lambda: ticks.append(1))
    assert len(ticks) > 4 * T            # several chunks, each streaming the clip
    assert (a == b).all() and ra["hidden"] == rb["hidden"] > 0
    # more tracks than the gain sample: the sample's gains, chunked or not
    monkeypatch.setattr(constancy, "GAIN_SAMPLE", 24)
    c, d = vis.copy(), vis.copy()
    rc = constancy.constancy_veto(footage, query, xy, c, conf.copy(), group)
    rd = constancy.constancy_veto(footage, query, xy, d, conf.copy(), group, MemoryBudget(400))
    assert (c == d).all() and rc == rd
    assert (c == a).all()        # 24 of the points measure the same exposure step here
