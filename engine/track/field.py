"""Long-range propagation of a dense track field from one query frame through the clip.

Every pixel of the query frame ``tq`` (working resolution) is a track. The state at frame t is
its position ``P`` (2, h, w) in frame t, its visibility and confidence, and its last seen
appearance. One step t -> t2 = t +/- 1:

1. **Chained prediction.** Visible points move by the consecutive flow t->t2 sampled at P;
   forward-backward consistency of that pair (flow t->t2 then t2->t) flags points that become
   covered (their forward flow lands on the occluder, whose backward flow points elsewhere).
2. **Hidden points are carried by their neighbours.** Points that are hidden (occluded or out of
   frame) move with the displacement of nearby visible points, by normalised convolution over
   the query frame's grid at growing radii (so a point behind a large occluder follows the
   surface around it), or with the caller's prior (``predict`` hook, e.g. the 3D solve).
3. **Direct re-anchoring (long-gap match).** The prediction initialises a coarse-to-fine local
   search (ONNX ``match`` kernel, two pyramid levels, +/-9 px) of frame t2 against a template
   that mixes the QUERY-frame descriptors with the point's last seen appearance. Because the
   data term always includes the query frame, errors do not accumulate like chained flow; the
   last-seen term absorbs slow appearance change. Per pixel, the refined and the chained
   candidates compete on their descriptor cost (ONNX ``score`` kernel): fusion of the direct
   long-gap match with the chained one.
4. **Visibility.** A visible point stays visible while forward-backward consistent and its
   costs against both the query template and its previous appearance stay low; a hidden point
   is re-found when its cost at the (carried + searched) position falls below a strict
   threshold -- i.e. by its own appearance. On real footage the chained FB test fails on
   plainly visible points (motion blur, thin or fast parts such as a tail or a paw). Opt-in
   ``follow_match``: a hidden point whose match still passes the keep costs AND its own FB
   test (frame t2's appearance there, matched back into frame t, returns to the point)
   follows that match instead of being carried by its neighbours (for a tail or a paw, mostly
   background).
   Opt-in ``fb_override``: such a match that also passes the strict re-find costs keeps the
   point visible despite the failed chained FB test.

Coordinates are working-resolution pixels (OpenCV convention). Confidence is in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..match.ops import resize_flow
from ..parallel import loop_workers, ordered_map
from .frames import FrameStore

#: ``predict(t_from, t_to, xy)`` -> predicted positions in frame ``t_to`` for points at ``xy``
#: (M, 2) in frame ``t_from`` (frame indices within the tracked range, working pixels), or None;
#: rows may be NaN where the predictor has no opinion. Used for hidden points.
Predictor = Callable[[int, int, np.ndarray], "np.ndarray | None"]


@dataclass
class FieldSettings:
    """Tuning of :func:`propagate`. Costs are mean |descriptor difference| (~1.1 for chance)."""

    template_mix: float = 0.5      # weight of the query-frame template vs last seen appearance
    fb_abs: float = 1.0            # px, forward-backward tolerance ...
    fb_rel: float = 0.1            # ... plus this fraction of the motion
    back_abs: float = 1.0          # px, tolerance of the direct match's own FB test ...
    back_rel: float = 0.1          # ... plus this fraction of the motion
    keep_cost: float = 0.55        # a visible point stays visible below this cost against its
                                   # last seen appearance ...
    keep_query_cost: float = 0.9   # ... and this one against the query frame (loose: real
                                   # surfaces turn, deform and change exposure over a clip)
    refind_cost: float = 0.40      # a hidden point is re-found below this cost
    keep_rel: float = 3.0          # ... thresholds are at least these multiples of the median
    refind_rel: float = 2.0        #     cost of the well-tracked points (noisy footage)
    carry_scales: tuple = (2, 6, 18, 54)  # px, sample spacing of the neighbour-carry search
    carry_motion_sigma: float = 2.0  # px, how similar a neighbour's motion must be to carry
    carry_min_weight: float = 0.3    # total weight needed to trust a carry scale
    conf_scale: float = 0.35       # confidence = exp(-cost / conf_scale)
    hidden_decay: float = 0.9      # per-frame confidence decay of a hidden point's position
    switch_ratio: float = 1.0      # the direct match replaces the chained one below this cost ratio
    lk_polish: bool = False        # Lucas-Kanade sub-pixel polish of visible points
    final_iters: int = 1           # matching iterations at full working resolution
    texture_std: float = 0.02      # local intensity std (0..1 scale) that earns full confidence
    follow_match: bool = False     # opt-in: hidden points whose match passes the keep costs
                                   # (and its own FB test) follow it, not their neighbours
    follow_back_check: bool = True  # ... require that direct-match FB test for following.
                                   # Measured (issue 4): without it BADJA dog segA 0.357 ->
                                   # 0.421 but static_0 raw AJ -0.0024 and the small test clip
                                   # -0.013; with it dog 0.374, static_0 -0.0042, dynamic_0
                                   # +0.0011. Hence not the default yet.
    fb_override: bool = False      # a match passing the re-find costs keeps a point visible
                                   # even when the FB test fails
    extra: dict = field(default_factory=dict)


@dataclass
class FieldState:
    t: int
    pos: np.ndarray        # (2, h, w) positions in frame t, working pixels
    vis: np.ndarray        # (h, w) bool
    conf: np.ndarray       # (h, w) float32
    debug: dict | None = None  # diagnostics of the step (costs, FB test, which candidate won)


def _grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs, ys])


def _carry(value: np.ndarray, weight: np.ndarray, disp: np.ndarray, where: np.ndarray,
           cfg: "FieldSettings", exclude: np.ndarray | None = None,
           prefer: np.ndarray | None = None) -> np.ndarray:
    """For the pixels in ``where``, the weighted mean of ``value`` (2, h, w) over nearby pixels
    of the query grid that carry ``weight`` AND have a similar displacement ``disp`` (2, h, w)
    (they moved together so far: a bilateral normalised convolution in (position, motion)
    space, so a point hidden behind a moving occluder is not dragged along with it).

    ``exclude`` (2, M): per target pixel, a motion to ignore (the occluder's, for points that
    were just covered: neighbours moving like the occluder are the occluder itself).
    ``prefer`` (2, M): the point's own last visible step motion (NaN: unknown); neighbours
    whose motion is close to it are favoured (it keeps moving like it did).
    Searched at growing radii (``cfg.carry_scales``: sample spacing in px, 5x5 samples each);
    pixels with no such neighbour fall back to the global weighted mean. Returns (2, M) for the
    M pixels of ``where`` (row-major order).
    """
    h, w = weight.shape
    ys, xs = np.nonzero(where)
    m = len(ys)
    out = np.zeros((2, m), np.float32)
    if m == 0:
        return out
    wtot = float(weight.sum())
    if wtot <= 0:
        return out
    d0 = disp[:, ys, xs]
    todo = np.arange(m)
    has_w = (weight != 0).astype(np.uint8)
    w_flat, disp_flat, val_flat = weight.ravel(), disp.reshape(2, -1), value.reshape(2, -1)
    inv2sd = 1.0 / (2.0 * cfg.carry_motion_sigma ** 2)

    def gather(pts: np.ndarray, s: int, cols: list[tuple[int, int]]):
        """The points ``pts`` (indices into ys/xs) at lattice spacing ``s``: (pts, which of
        them have enough support, their weighted medians (2, k)). ``cols`` are the offsets
        that carry weight for some point of the whole scale, the same for every chunk, so each
        row's sums do not depend on the chunking."""
        y0, x0, dd = ys[pts], xs[pts], d0[:, pts]
        vals, wts = [], []
        for oy, ox in cols:
            idx = np.clip(y0 + oy * s, 0, h - 1) * w + np.clip(x0 + ox * s, 0, w - 1)
            wt = w_flat[idx]
            dm = disp_flat[:, idx] - dd
            wt = wt * np.exp(-(dm[0] ** 2 + dm[1] ** 2) * inv2sd - (oy * oy + ox * ox) / 4.5)
            v = val_flat[:, idx]
            if prefer is not None:
                dp = v - prefer[:, pts]
                pw = np.exp(-(dp[0] ** 2 + dp[1] ** 2) * inv2sd)
                wt = wt * np.where(np.isnan(pw), 1.0, 0.1 + pw)
            if exclude is not None:
                de = v - exclude[:, pts]
                excl = 1.0 - np.exp(-(de[0] ** 2 + de[1] ** 2) * inv2sd)
                wt = wt * np.where(np.isnan(excl), 1.0, excl)
            wts.append(wt)
            vals.append(v)
        wa = np.stack(wts, axis=1)                      # (k, S)
        ok = wa.sum(axis=1) > cfg.carry_min_weight
        if not ok.any():
            return pts, ok, np.zeros((2, 0), np.float32)
        va = np.stack([v[:, ok] for v in vals], axis=2)     # (2, k', S)
        return pts, ok, _weighted_median(va, wa[ok])

    workers = loop_workers()
    for s in cfg.carry_scales:
        if len(todo) == 0:
            break
        # only points with a weighted sample at this scale can gather anything: a hidden point
        # far from every visible one (most of a pan's points once they left the frame) skips
        # the scale without evaluating its samples (clipped sampling = a replicated border)
        near, cols = _lattice_support(has_w, s, ys[todo], xs[todo])
        tsel = todo[near]
        if len(tsel) == 0:
            continue
        items = ((tsel[i:i + CARRY_CHUNK], s, cols) for i in range(0, len(tsel), CARRY_CHUNK))
        done = np.zeros(m, bool)
        for pts, ok, med in ordered_map(gather, items, workers):
            out[:, pts[ok]] = med
            done[pts[ok]] = True
        todo = todo[~done[todo]]
    if len(todo):
        out[:, todo] = ((value * weight).reshape(2, -1).sum(1) / wtot)[:, None]
    return out


#: points per chunk of the neighbour carry (a thread's share; ~25 MB of temporaries)
CARRY_CHUNK = 32768


def _lattice_support(has_w: np.ndarray, s: int, ys: np.ndarray, xs: np.ndarray
                     ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Where the points (ys, xs) find ``has_w`` (uint8) set on their 5x5 lattice of spacing ``s``
    px (positions clipped to the image): (near (m,) bool, any lattice point set; the offsets
    (oy, ox) set for at least one point). By shifting the padded mask over the whole grid, which
    is cheaper than gathering at every point."""
    import cv2

    h, w = has_w.shape
    mark = np.zeros((h, w), np.uint8)
    mark[ys, xs] = 1
    pad = cv2.copyMakeBorder(has_w, 2 * s, 2 * s, 2 * s, 2 * s, cv2.BORDER_REPLICATE)
    near = np.zeros((h, w), np.uint8)
    cols = []
    for oy in range(-2, 3):
        for ox in range(-2, 3):
            y0, x0 = (2 + oy) * s, (2 + ox) * s
            shifted = pad[y0:y0 + h, x0:x0 + w]
            np.bitwise_or(near, shifted, out=near)
            if np.bitwise_and(shifted, mark).any():
                cols.append((oy, ox))
    return near[ys, xs] > 0, cols


def _weighted_median(vals: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Per-row weighted median of vals (2, m, S) with weights (m, S) -> (2, m). Robust to the
    few neighbours that are wrongly tracked (e.g. dragged along an occluder's edge)."""
    out = np.empty(vals.shape[:2], np.float32)
    half = 0.5 * wts.sum(axis=1, keepdims=True)
    rows = np.arange(vals.shape[1])
    for c in range(vals.shape[0]):
        order = np.argsort(vals[c], axis=1)
        cw = np.cumsum(np.take_along_axis(wts, order, axis=1), axis=1)
        k = np.minimum((cw < half).sum(axis=1), vals.shape[2] - 1)
        out[c] = vals[c][rows, order[rows, k]]
    return out


def propagate(store: FrameStore, tq: int, direction: int, settings: FieldSettings | None = None,
              predict: Predictor | None = None, check=None) -> Iterator[FieldState]:
    """Yield the field's state at tq (first) and then at each frame in ``direction`` (+1/-1).

    ``check`` is called once per frame (e.g. ``progress.check`` to honour cancellation).
    """
    cfg = settings or FieldSettings()
    k = store.k
    h, w = store.h, store.w
    X = _grid(h, w)
    lv = min(2, store.levels)
    qpyr = store.pyramid(tq)[:lv]
    grids = [_grid(*p.shape[1:]) for p in qpyr]
    pos = X.copy()
    vis = np.ones((h, w), bool)
    conf = np.ones((h, w), np.float32)
    last_app = [q.copy() for q in qpyr]          # last seen appearance, per level
    q_part = [cfg.template_mix * q for q in qpyr]  # the template's query-frame share (constant)
    last_step = np.full((2, h, w), np.nan, np.float32)  # last visible step motion, per point
    q_gray = store.gray(tq)
    last_gray = q_gray.copy()                     # last seen intensity, for the LK polish
    tex = _texture(store.gray(tq), cfg.texture_std)
    conf = tex.copy()
    yield FieldState(tq, pos, vis, conf)
    t = tq
    while 0 <= t + direction < store.T:
        if check is not None:
            check()
        t2 = t + direction
        fwd, bwd = store.pair_flows(min(t, t2))
        f_go, f_back = (fwd, bwd) if direction > 0 else (bwd, fwd)

        # 1. chained prediction + forward-backward check
        fs, _ = k.warp(f_go, pos)
        chained = pos + fs
        fb, _ = k.warp(f_back, chained)
        fb_err = np.linalg.norm(fs + fb, axis=0)
        fb_ok = fb_err < cfg.fb_abs + cfg.fb_rel * np.linalg.norm(fs, axis=0)

        # 2. hidden points move with visible neighbours (or with the caller's prior)
        disp = pos - X
        pred = chained.copy()
        hidden = ~vis
        if hidden.any():
            good = (vis & fb_ok).astype(np.float32) * conf
            pred[:, hidden] = pos[:, hidden] + _carry(fs, good, disp, hidden, cfg)
        if predict is not None and (~vis).any():
            pred = _apply_prior(predict, t, t2, pos, pred, ~vis)

        # 3. direct re-anchoring against query + last-seen appearance
        tpyr = store.pyramid(t2)
        tmpl = [qp + (1 - cfg.template_mix) * a for qp, a in zip(q_part, last_app)]
        refined, _, _ = k.flow(tmpl, tpyr[:lv], init=pred - X, first_level=lv - 1,
                               final_iters=cfg.final_iters)
        cand = [pred - X, refined]
        costs = [k.score(qpyr[0], last_app[0], tpyr[0], c) for c in cand]
        tot = [cq + ca for cq, ca in costs]
        # the direct match must beat the chained one clearly: on noisy footage their costs are
        # close and the chained flow is the more precise; drift makes the gap large
        use_ref = tot[1] < cfg.switch_ratio * tot[0]
        new_pos = X + np.where(use_ref[None], cand[1], cand[0])
        cq = np.where(use_ref, costs[1][0], costs[0][0])
        ca = np.where(use_ref, costs[1][1], costs[0][1])

        # direct-match forward-backward test: the t2 appearance at the match, matched back
        # into frame t from the point's position there, must come back to it. Independent of
        # the chained flow (which fails on blur and thin parts), and it catches a match that
        # slid onto an occluder or along changing content (their appearance at t lies elsewhere)
        back_ok = None
        if (cfg.follow_match and cfg.follow_back_check) or cfg.fb_override:
            back_ok = _back_match_ok(k, store.pyramid(t)[:lv], tpyr, new_pos, pos, X, grids,
                                     lv, cfg)

        # 4. visibility
        inside = ((new_pos[0] >= 0) & (new_pos[0] <= w - 1)
                  & (new_pos[1] >= 0) & (new_pos[1] <= h - 1))
        # thresholds adapt to the clip: noise, blur and exposure change raise every cost, so
        # each is at least ``*_rel`` times the typical cost of the points still tracked well
        ok_now = vis & fb_ok
        if ok_now.sum() > 32:
            med_a, med_q = float(np.median(ca[ok_now])), float(np.median(cq[ok_now]))
        else:
            med_a = med_q = 0.0
        keep_a = max(cfg.keep_cost, cfg.keep_rel * med_a)
        keep_q = max(cfg.keep_query_cost, cfg.keep_rel * med_q)
        refind_thr = max(cfg.refind_cost, cfg.refind_rel * 0.5 * (med_a + med_q))
        # Opt-in: a failed chained FB test alone does not drop a point whose match passes its
        # own FB test and the re-find bar against BOTH the query frame and its last seen
        # appearance: hidden, it would be re-found on the next frame (visibility flipping
        # every other frame, as a corner of the mgtv clip does). Off by default: on the
        # synthetic occlusion clips it keeps a few points visible at a slightly wrong position
        # just after they come out from behind an occluder.
        strong = back_ok & (cq < refind_thr) & (ca < refind_thr) if cfg.fb_override else \
            np.zeros_like(vis)
        stay = vis & (fb_ok | strong) & (ca < keep_a) & (cq < keep_q)
        refind = ~vis & (0.5 * (cq + ca) < refind_thr)
        new_vis = _clean_mask((stay | refind) & inside)

        # sub-pixel polish (Lucas-Kanade on intensities) of the visible points
        t2_gray = store.gray(t2)
        if cfg.lk_polish and new_vis.any():
            ref = cfg.template_mix * q_gray + (1 - cfg.template_mix) * last_gray
            polished = X + k.lk(ref, t2_gray, new_pos - X)
            new_pos = np.where(new_vis[None], polished, new_pos)

        # points hidden now. Where the match still looks like the point (its costs pass the
        # keep thresholds) and passes its own FB test, the chained FB test failed on blur or a
        # thin, fast part (a tail, a paw) rather than on an occluder: it follows its own match
        # (against the query/last-seen template, which is not updated while hidden, so it
        # cannot drift with a changing template). Otherwise not the matcher's guess: still
        # hidden -> the carried prediction; just hidden -> carried with the neighbours that
        # moved with them (this step's motion).
        hid = ~new_vis
        follow = hid & inside & (ca < keep_a) & (cq < keep_q) if cfg.follow_match else \
            np.zeros_like(hid)
        if cfg.follow_match and cfg.follow_back_check:
            follow &= back_ok
        carried = hid & ~follow
        if carried.any():
            hidden_pos = pred.copy()
            just = carried & vis
            if just.any():
                moved = (new_vis & vis & fb_ok).astype(np.float32)
                # the backward flow at the point's chained position is the occluder's motion
                # (the point is covered there): neighbours moving so are the occluder itself
                occluder = -fb[:, just]
                hidden_pos[:, just] = pos[:, just] + _carry(new_pos - pos, moved, disp, just, cfg,
                                                            exclude=occluder,
                                                            prefer=last_step[:, just])
            if predict is not None:
                hidden_pos = _apply_prior(predict, t, t2, pos, hidden_pos, carried)
            new_pos = np.where(carried[None], hidden_pos, new_pos)
        c_vis = tex * np.exp(-np.maximum(cq, ca) / cfg.conf_scale).astype(np.float32)
        conf = np.where(new_vis, c_vis, conf * cfg.hidden_decay).astype(np.float32)

        # appearance memory: update where visible (at every template level)
        for lvl, app in enumerate(_levels_at(k, tpyr, new_pos, X, grids, lv)):
            m = new_vis if lvl == 0 else _resize_mask(new_vis, qpyr[lvl].shape[1:])
            np.copyto(last_app[lvl], app, where=m[None])
        g, _ = k.warp(t2_gray[None], new_pos)
        np.copyto(last_gray, g[0], where=new_vis)
        np.copyto(last_step, new_pos - pos, where=vis[None] & new_vis[None])
        pos, vis, t = new_pos.astype(np.float32), new_vis, t2
        yield FieldState(t, pos, vis, conf, {"cq": cq, "ca": ca, "fb_ok": fb_ok, "use_ref": use_ref,
                                              "chained": chained, "pred": pred,
                                              "refined": X + refined})


def _back_match_ok(k, pyr_t: list[np.ndarray], pyr_t2: list[np.ndarray], new_pos: np.ndarray,
                   pos: np.ndarray, X: np.ndarray, grids: list[np.ndarray], lv: int,
                   cfg: FieldSettings) -> np.ndarray:
    """(h, w) bool: frame t2's descriptors at ``new_pos`` (the match), searched for in frame t
    starting from ``pos`` (the point there), come back within the FB tolerance of ``pos``."""
    tmpl = _levels_at(k, pyr_t2, new_pos, X, grids, lv)
    back, _, _ = k.flow(tmpl, pyr_t, init=pos - X, first_level=lv - 1,
                        final_iters=cfg.final_iters)
    err = np.linalg.norm(X + back - pos, axis=0)
    return err < cfg.back_abs + cfg.back_rel * np.linalg.norm(new_pos - pos, axis=0)


def _levels_at(k, pyr: list[np.ndarray], pos: np.ndarray, X: np.ndarray,
               grids: list[np.ndarray], lv: int) -> list[np.ndarray]:
    """Descriptors of a frame's pyramid ``pyr`` sampled for every query-grid point, per template
    level: at ``pos`` (2, h, w) working px on level 0, at that level's grid plus the downsized
    displacement ``pos - X`` on the coarser ones."""
    out = []
    for lvl in range(lv):
        coords = pos if lvl == 0 else grids[lvl] + resize_flow(pos - X, *grids[lvl].shape[1:])
        out.append(k.warp(pyr[lvl], coords)[0])
    return out


def _texture(gray: np.ndarray, std_full: float) -> np.ndarray:
    """Confidence factor in [0, 1] from the local (7x7) intensity std of the query frame: flat,
    textureless areas (and a uniform clip) cannot be matched, so their tracks get ~0."""
    import cv2

    m = cv2.blur(gray, (7, 7))
    v = np.maximum(cv2.blur(gray * gray, (7, 7)) - m * m, 0.0)
    return np.clip(np.sqrt(v) / std_full, 0.0, 1.0).astype(np.float32)


def _clean_mask(m: np.ndarray) -> np.ndarray:
    """Remove speckle from a visibility mask (5x5 median), keeping it a bool array."""
    import cv2

    return cv2.medianBlur(m.astype(np.uint8) * 255, 5) > 127


def _resize_mask(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(m.astype(np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) > 0


def _apply_prior(predict: Predictor, t: int, t2: int, pos: np.ndarray, fallback: np.ndarray,
                 where: np.ndarray) -> np.ndarray:
    pts = pos[:, where].T.copy()
    got = predict(t, t2, pts)
    if got is None:
        return fallback
    got = np.asarray(got, np.float32).reshape(-1, 2)
    out = fallback.copy()
    sel = out[:, where].T
    ok = np.isfinite(got).all(axis=1)
    sel[ok] = got[ok]
    out[:, where] = sel.T
    return out
