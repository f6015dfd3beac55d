"""Scores of the appearance sweep along a query ray, and its coarse scan.

The sweep (:func:`.tracks._appearance_sweep`) places a track the tracker lost at the depth on
its query ray whose projections match the query appearance in most frames. Each candidate depth
gets a score from its per-frame appearance costs (:func:`.appearance.sweep_costs`): the number
of frames that match (cost below ``thr_good``) minus a small term for the mean truncated cost.
Where the textured static tracks around the query pixel give a surface depth (a prior), the
choice is penalised away from it (:func:`prior_penalty`).

The coarse scan (:func:`coarse_costs`) first scans a track with a prior only at the depths
around that prior; the rest of its ray is scanned only when those cannot settle what the full
scan would decide. On a dense clip most lost tracks lie on plain surfaces near their prior,
where that window settles them (static_0 tracked densely: 33,315 of the 41,109 swept tracks;
the refine report's ``n_sweep_window_settled``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .static import in_image

SWEEP_COST_WEIGHT = 0.5     # score = matching frames - weight * mean truncated cost / threshold
SWEEP_UNIQUE = 0.8          # unambiguous: depths > 2 steps from the best match in fewer frames
# Surface prior of the sweep: on plain surfaces every depth "matches" (the appearance cannot
# choose), so the score is penalised by PRIOR_WEIGHT * (log(depth / surface depth) /
# PRIOR_SIGMA)^2, the surface depth coming from a robust local plane through nearby textured
# static-fit tracks (:mod:`.neighbours`). Measured on static_0 (the sweep's tracks, 27 % of
# the queries, mostly a plain wall): their delta-like score 0.40 -> 0.50; AJ of the clip
# 0.571 -> 0.618 (with the doubted fits), other kinds of the full suite up to +0.065.
PRIOR_WEIGHT = 1.0
PRIOR_SIGMA = 0.2           # log-depth units
#: coarse depths scanned first on each side of a track's prior (of 48): wider settles more
#: tracks at once but scans more depths for each (a 3,000-ray sample of static_0 tracked
#: densely: 5 -> 71 %, 7 -> 79 % settled)
PRIOR_WINDOW = 7
_MARGIN = 1e-6              # a settled choice beats every unscanned depth by more than this


def sweep_scores(cost: np.ndarray, thr_good: float, thr_occ: float):
    """(finite (n, D, T) bool, good (n, D) int, score (n, D) float) of appearance costs ``cost``
    (n, D, T) (NaN: no candidate in that frame): the frames that match (cost below
    ``thr_good``) and the score, those less ``SWEEP_COST_WEIGHT`` times the mean cost truncated
    at ``thr_occ`` over ``thr_occ`` (so score <= good)."""
    inf = np.isfinite(cost)
    good = (cost < thr_good).sum(-1)
    trunc = np.where(inf, np.minimum(cost, thr_occ), 0).sum(-1) / np.maximum(inf.sum(-1), 1)
    return inf, good, good - SWEEP_COST_WEIGHT * trunc / thr_occ


def prior_penalty(log_depth: np.ndarray, log_prior: np.ndarray, has_prior: np.ndarray
                  ) -> np.ndarray:
    """Penalty (n, D) of candidate log depths ``log_depth`` (n, D) away from each track's prior
    ``log_prior`` (n,) (log depth along the ray; used where ``has_prior`` (n,) bool, else 0)."""
    return np.where(has_prior[:, None], PRIOR_WEIGHT * (
        (log_depth - log_prior[:, None]) / PRIOR_SIGMA) ** 2, 0.0)


def accepts(good: np.ndarray, inf: np.ndarray, b: np.ndarray, frac: float) -> np.ndarray:
    """(n,) bool: candidate ``b`` (n,) of each track matches in at least ``frac`` of the frames
    it is in (and in 3 or more)."""
    r = np.arange(len(b))
    return good[r, b] >= np.maximum(3, frac * inf[r, b].sum(-1))


def ambiguous(good: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) bool: a depth more than 2 steps from the chosen ``b`` matches in at least
    ``SWEEP_UNIQUE`` times as many frames (repetitive or weak texture along the ray)."""
    far = np.abs(np.arange(good.shape[1])[None] - b[:, None]) > 2
    return np.where(far, good, 0).max(1) >= SWEEP_UNIQUE * good[np.arange(len(b)), b]


def choose(cost: np.ndarray, cand: np.ndarray, log_prior: np.ndarray, has_prior: np.ndarray,
           thr_good: float, thr_occ: float, frac: float, coarse: bool):
    """The sweep's choice among candidate depths ``cand`` ((D,) or (n, D)) from their costs
    ``cost`` (n, D, T): (index b (n,), accepted (n,), unique (n,), prior kept (n,)). The prior
    (``log_prior`` / ``has_prior``, :func:`prior_penalty`) chooses among the depths; in the
    ``coarse`` scan it is dropped where its choice is not accepted (another surface in front,
    a moving point) and the best score chooses. ``unique`` (coarse scans of more than 5 depths;
    else all True): no depth away from the choice matches nearly as often."""
    inf, good, score = sweep_scores(cost, thr_good, thr_occ)
    lc = np.log(np.broadcast_to(cand, score.shape))
    b_pr = np.argmax(score - prior_penalty(lc, log_prior, has_prior), 1)
    if coarse:
        has_prior = has_prior & accepts(good, inf, b_pr, frac)
    b = np.where(has_prior, b_pr, np.argmax(score, 1))
    unique = ~ambiguous(good, b) if coarse and good.shape[1] > 5 else np.ones(len(b), bool)
    return b, accepts(good, inf, b, frac), unique, has_prior


def coarse_costs(costs: Callable[[np.ndarray, np.ndarray], np.ndarray], uv: np.ndarray,
                 depths: np.ndarray, qt: np.ndarray, log_prior: np.ndarray,
                 has_prior: np.ndarray, thr_good: float, thr_occ: float, frac: float,
                 image_size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """(costs, settled): appearance costs (n, D, T) float32 of the coarse candidates, the query
    frame ``qt`` (n,) NaN, and how many rays their window settled, for the sweep's decisions (:func:`.tracks._appearance_sweep`): the same decisions as
    from every depth of every ray, with fewer depths scanned.

    ``costs(rows, uv_rows)`` returns :func:`.appearance.sweep_costs` of the tracks ``rows``
    (m,) at candidate positions ``uv_rows`` (m, d, T, 2); ``uv`` (n, D, T, 2) input px of every
    candidate (``depths`` (D,) ascending along each ray); ``image_size`` (W, H) of those pixels.

    A track with a prior is scanned first at the ``2 * PRIOR_WINDOW + 1`` depths around it. An
    unscanned depth's score is at most the number of frames its candidate is in the image
    (score <= matching frames), so when the window's best prior-penalised score beats that bound
    less the penalty at every unscanned depth, the window holds the full scan's choice; when that
    choice is also accepted and already ambiguous among the scanned depths, no other depth can
    change the outcome, and the track's unscanned depths stay NaN (there they count as matching
    nowhere, below the bound). Every other track gets the rest of its ray."""
    n, D, T = uv.shape[:3]
    L = 2 * PRIOR_WINDOW + 1
    cost = np.full((n, D, T), np.nan, np.float32)
    rest = np.ones((n, D), bool)            # depths still to scan
    rows = np.flatnonzero(has_prior) if D > L else np.zeros(0, int)
    n_settled = 0
    if len(rows):
        r = np.arange(len(rows))
        lc = np.log(np.broadcast_to(depths, (len(rows), D)))
        j0 = np.clip(np.abs(lc - log_prior[rows, None]).argmin(1) - PRIOR_WINDOW, 0, D - L)
        J = j0[:, None] + np.arange(L)
        cw = costs(rows, uv[rows[:, None], J])          # (m, L, T)
        cost[rows[:, None], J] = cw
        rest[rows[:, None], J] = False
        cw[r, :, qt[rows]] = np.nan
        inf, good_w, score = sweep_scores(cw, thr_good, thr_occ)
        pen = prior_penalty(lc, log_prior[rows], np.ones(len(rows), bool))
        val = score - pen[r[:, None], J]
        bw = np.argmax(val, 1)
        good = np.zeros((len(rows), D), good_w.dtype)     # unscanned: matching nowhere
        good[r[:, None], J] = good_w
        # the bound of each unscanned depth: frames its candidate is in the image, less penalty
        inside = in_image(uv, *image_size)
        inside[np.arange(n), :, qt] = False
        bound = np.where(rest[rows], inside[rows].sum(-1) - pen, -np.inf).max(1)
        settled = (val[r, bw] > bound + _MARGIN) & accepts(good_w, inf, bw, frac) \
            & ambiguous(good, J[r, bw])
        rest[rows[settled]] = False
        n_settled = int(settled.sum())
    todo = np.flatnonzero(rest.any(1))
    if len(todo):
        # every unsettled track has all D depths or all but its window to scan
        for m in (rest[todo].sum(1) == D, rest[todo].sum(1) == D - L):
            r = todo[m]
            if len(r):
                J = np.nonzero(rest[r])[1].reshape(len(r), -1)
                cost[r[:, None], J] = costs(r, uv[r[:, None], J])
    cost[np.arange(n), :, qt] = np.nan          # the query frame matches trivially
    return cost, n_settled
