"""The sweep's coarse scan (engine.refine.sweep.coarse_costs): it scans fewer depths than every
depth of every ray, and the sweep's choice from its costs is the choice from all of them."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.refine.sweep import PRIOR_WINDOW, choose, coarse_costs  # noqa: E402

THR_GOOD, THR_OCC, FRAC = 0.3, 1.0, 0.5


def _table(n: int, D: int, T: int, seed: int):
    """Costs (n, D, T) of a mix of rays, and candidate pixels (n, D, T, 2) that encode each
    cost's depth index (x = j in the image, x = -10 - j out of it; y = row) so that a cost
    function can look costs up from the pixels it is handed."""
    rng = np.random.default_rng(seed)
    cost = np.empty((n, D, T), np.float32)
    kind = rng.integers(0, 5, n)
    for i in range(n):
        if kind[i] == 0:        # plain surface: every depth matches about as well
            cost[i] = rng.uniform(0.05, 0.35, (D, T))
        elif kind[i] == 1:      # textured: one depth matches, the rest do not
            j = rng.integers(0, D)
            cost[i] = rng.uniform(0.4, 2.0, (D, T))
            cost[i, max(0, j - 1):j + 2] = rng.uniform(0.0, 0.2, (min(D, j + 2) - max(0, j - 1), T))
        elif kind[i] == 2:      # repetitive: two depths far apart match
            j, k = rng.choice(D, 2, replace=False)
            cost[i] = rng.uniform(0.4, 2.0, (D, T))
            cost[i, [j, k]] = rng.uniform(0.0, 0.25, (2, T))
        elif kind[i] == 3:      # occluded or moving: matches rarely anywhere
            cost[i] = rng.uniform(0.2, 1.5, (D, T))
        else:                   # weak texture, and one depth that matches in every frame
            cost[i] = rng.uniform(0.1, 0.42, (D, T))
            cost[i, rng.integers(0, D)] = rng.uniform(0.0, 0.1, T)
    out = rng.random((n, D, T)) < np.where(rng.random(n) < 0.3, 0.5, 0.05)[:, None, None]
    cost[out] = np.nan
    j = np.broadcast_to(np.arange(D)[None, :, None], (n, D, T)).astype(np.float64)
    uv = np.stack([np.where(out, -10.0 - j, j),
                   np.broadcast_to(np.arange(n)[:, None, None], (n, D, T)).astype(np.float64)],
                  -1)
    return cost, uv, kind, rng


def test_coarse_scan_makes_the_full_scans_choice_with_fewer_depths():
    n, D, T = 600, 48, 48
    cost, uv, kind, rng = _table(n, D, T, seed=0)
    depths = np.geomspace(0.5, 40.0, D)
    qt = rng.integers(0, T, n)
    # priors: near a depth, between depths, outside the range, and none
    log_prior = np.log(depths[rng.integers(0, D, n)]) + rng.normal(0, 0.1, n)
    log_prior[:20] = np.log(0.1)
    log_prior[20:40] = np.log(200.0)
    has_prior = rng.random(n) < 0.85
    # weak texture whose prior is 8-10 depths from the depth that matches everywhere: the
    # window's plain best loses to it only after the prior's penalty, which the bound must see
    for i in np.flatnonzero(kind == 4):
        j = int(np.nanargmin(np.nanmean(cost[i], 1)))
        k = j + rng.choice([-1, 1]) * rng.integers(8, 11)
        log_prior[i] = np.log(depths[np.clip(k, 0, D - 1)])
    scanned = np.zeros((n, D), int)

    def costs(rows, uv_rows):
        j = np.where(uv_rows[..., 0] >= 0, uv_rows[..., 0], -10.0 - uv_rows[..., 0]).astype(int)
        assert (j == j[:, :, :1]).all()                  # one depth per candidate
        np.add.at(scanned, (rows[:, None], j[:, :, 0]), 1)
        return cost[rows[:, None, None], j, np.arange(T)]

    got, n_settled = coarse_costs(costs, uv, depths, qt, log_prior, has_prior, THR_GOOD,
                                  THR_OCC, FRAC, (D, n))
    full = cost.copy()
    full[np.arange(n), :, qt] = np.nan
    want = choose(full, depths, log_prior, has_prior, THR_GOOD, THR_OCC, FRAC, coarse=True)
    for w, g in zip(want, choose(got, depths, log_prior, has_prior, THR_GOOD, THR_OCC, FRAC,
                                 coarse=True)):
        np.testing.assert_array_equal(g, w)
    assert scanned.max() == 1                            # no depth scanned twice
    seen = scanned.astype(bool)
    # what was scanned is exactly the full scan's cost; the rest stays NaN
    np.testing.assert_array_equal(got[seen], full[seen])
    assert np.isnan(got[~seen]).all()
    part = has_prior & ~seen.all(1)
    assert (seen[~has_prior].all(1)).all()               # no prior: the whole ray
    assert (seen[part].sum(1) == 2 * PRIOR_WINDOW + 1).all()
    assert 0.2 < part.mean() < has_prior.mean()          # some settled, not all
    assert n_settled == part.sum()
    inside = (log_prior > np.log(depths[0])) & (log_prior < np.log(depths[-1]))
    plain = has_prior & inside & (kind == 0)
    assert part[plain].mean() > 0.8                      # plain rays near their prior settle
    assert seen.sum() < 0.9 * seen.size


def test_coarse_scan_of_real_footage_equals_the_full_sweep(tmp_path):
    """On rendered footage, the costs the coarse scan gets from :func:`sweep_costs` of a window
    of depths are the same float32 values as the full sweep's."""
    from track_synth import make_clip, write_sequence

    from engine.decode import open_footage
    from engine.refine.appearance import DescriptorCache, sweep_costs

    clip = make_clip(160, 120, n_frames=10, seed=3, square=30, sq_speed=4.0, query_stride=10,
                     noise=0.01)
    fo = open_footage(write_sequence(clip, tmp_path / "seq"))
    q = clip.query.astype(np.float32)
    n, T = clip.tracks.shape[:2]
    D = 24
    rng = np.random.default_rng(1)
    shift = np.linspace(-6.0, 6.0, D)[None, :, None, None] * np.array([1.0, 0.3])
    uv = clip.tracks[:, None].astype(np.float64) + shift + rng.normal(0, 0.2, (n, 1, T, 2))
    depths = np.geomspace(1.0, 10.0, D)
    qt = np.clip(np.round(clip.query[:, 0]).astype(int), 0, T - 1)
    log_prior = np.log(depths[rng.integers(0, D, n)])
    has_prior = np.ones(n, bool)
    descs = DescriptorCache(fo, max_bytes=1 << 30)
    full = sweep_costs(fo, q, uv, descs=descs)
    full[np.arange(n), :, qt] = np.nan

    def costs(rows, uv_rows):
        return sweep_costs(fo, q[rows], uv_rows, descs=descs)

    got, n_settled = coarse_costs(costs, uv, depths, qt, log_prior, has_prior, 0.3, 1.0, FRAC,
                                  fo.input_size)
    seen = np.isfinite(got)
    np.testing.assert_array_equal(got[seen], full[seen])
    assert seen.any() and not seen.all()        # some rays settled in their window
    assert 0 < n_settled < n
    for w, g in zip(choose(full, depths, log_prior, has_prior, 0.3, 1.0, FRAC, coarse=True),
                    choose(got, depths, log_prior, has_prior, 0.3, 1.0, FRAC, coarse=True)):
        np.testing.assert_array_equal(g, w)
