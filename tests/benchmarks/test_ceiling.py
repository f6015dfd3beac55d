"""benchmarks.ceiling: the true-camera triangulation ceiling and the noisy-truth track file."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from solve_synth import make_scene  # noqa: E402

from benchmarks.ceiling import noisy_truth, triangulation_apd  # noqa: E402
from engine.trackfile import TrackData, make_metadata  # noqa: E402


def _truth(sc) -> TrackData:
    """The scene's exact tracks as a ground-truth track file (as the generator writes one)."""
    N, T = sc["visible"].shape
    xy = sc["true_2d"].astype(np.float32)
    first = np.argmax(sc["visible"], axis=1)
    q = np.stack([first, xy[np.arange(N), first, 0], xy[np.arange(N), first, 1]], 1)
    return TrackData(query=q.astype(np.float32), tracks_2d=xy, visible=sc["visible"].copy(),
                     confidence=sc["visible"].astype(np.float32),
                     tracks_3d=sc["tracks_3d"].astype(np.float32),
                     cam_to_world=sc["c2w"].astype(np.float32), K=sc["K"].astype(np.float32),
                     group=sc["group"].astype(np.int32),
                     metadata=make_metadata((sc["W"], sc["H"]), (0, T - 1), 24.0))


def _refuses_other_queries(call, rec: TrackData) -> None:
    """``call(rec)`` raises ValueError once ``rec``'s queries differ from the truth's."""
    rec.query = rec.query + 1
    with pytest.raises(ValueError):
        call(rec)


def test_triangulation_ceiling_is_exact_without_noise_and_falls_with_it():
    sc = make_scene("orbit", T=16, n_points=300, W=320, H=240, seed=2, outlier_frac=0.0)
    gt = _truth(sc)
    exact = triangulation_apd(gt, 0.0)
    assert min(exact) > 0.999
    noisy = triangulation_apd(gt, 2.0)
    assert noisy[0] < 0.9 and all(a <= b + 1e-12 for a, b in zip(noisy, noisy[1:]))


def test_noisy_truth_keeps_queries_and_visibility():
    sc = make_scene("orbit", T=12, n_points=200, W=320, H=240, seed=4, outlier_frac=0.0)
    gt = _truth(sc)
    tpl = _truth(sc)
    tpl.tracks_2d = np.zeros_like(tpl.tracks_2d)       # the recorded tracker output, replaced
    out = noisy_truth(gt, tpl, 0.5)
    assert np.array_equal(out.visible, gt.visible)
    d = (out.tracks_2d - gt.tracks_2d)[gt.visible]
    assert 0.45 < d.std() < 0.55
    _refuses_other_queries(lambda t: noisy_truth(gt, t, 0.5), tpl)


def test_parallax_slope_sees_smoothed_parallax():
    """A tracker that keeps 90 % of each point's parallax (the rest follows the dominant plane
    motion) gets slope 0.9 at every gap; the truth itself gets 1."""
    import cv2

    from benchmarks.ceiling import parallax_slope

    sc = make_scene("orbit", T=12, n_points=300, W=320, H=240, seed=5, outlier_frac=0.0)
    gt = _truth(sc)
    xy = np.asarray(gt.tracks_2d, np.float64)
    first = np.argmax(gt.visible, axis=1)
    smooth = xy.copy()
    for i in range(len(xy)):          # shrink each track's parallax relative to its first frame
        t0 = first[i]
        for t in range(t0 + 1, xy.shape[1]):
            both = gt.visible[:, t0] & gt.visible[:, t]
            Hm, _ = cv2.findHomography(xy[both, t0], xy[both, t], 0)
            w = cv2.perspectiveTransform(xy[i:i + 1, t0][None], Hm)[0, 0]
            smooth[i, t] = w + 0.9 * (xy[i, t] - w)
    assert all(abs(v - 1) < 1e-6 for v in parallax_slope(gt, gt, gaps=(2, 4)).values())
    pred = _truth(sc)
    pred.tracks_2d = smooth.astype(np.float32)
    s = parallax_slope(gt, pred, gaps=(1,))
    assert 0.85 < s[1] < 0.95, s


def test_query_parallax_slope_sees_parallax_lost_near_the_query_frame():
    """A tracker that keeps 70 % of the parallax 1-2 frames from each track's query frame and
    all of it farther away gets 0.7 in the first two bins and 1 in the others."""
    import cv2

    from benchmarks.ceiling import query_parallax_slope

    sc = make_scene("orbit", T=12, n_points=300, W=320, H=240, seed=5, outlier_frac=0.0)
    gt = _truth(sc)
    xy = np.asarray(gt.tracks_2d, np.float64)
    qt = np.asarray(gt.query)[:, 0].astype(int)
    pred = xy.copy()
    for q in np.unique(qt):
        rows = qt == q
        for t in (q - 2, q - 1, q + 1, q + 2):
            if not 0 <= t < xy.shape[1]:
                continue
            both = rows & gt.visible[:, q] & gt.visible[:, t]
            if both.sum() < 8:
                continue
            Hm, _ = cv2.findHomography(xy[both, q], xy[both, t], 0)
            w = cv2.perspectiveTransform(xy[both, q][None], Hm)[0]
            pred[both, t] = w + 0.7 * (xy[both, t] - w)
    s = query_parallax_slope(gt, gt, bins=(1, 3, 8))
    assert all(abs(v - 1) < 1e-6 for v in s.values()), s
    rec = _truth(sc)
    rec.tracks_2d = pred.astype(np.float32)
    s = query_parallax_slope(gt, rec, bins=(1, 3, 8))
    assert abs(s[1] - 0.7) < 0.02 and abs(s[3] - 1) < 1e-6 and abs(s[8] - 1) < 1e-6, s


def test_plain_split_separates_plain_from_textured_queries(tmp_path):
    """Queries on a flat half of a frame are 'plain'; a method exact on the textured half and
    5 px off on the plain half scores 1 / 0 there."""
    import cv2

    from benchmarks.ceiling import plain_split

    rng = np.random.default_rng(0)
    T, N = 4, 40
    img = np.full((60, 80, 3), 128, np.uint8)
    img[:, 40:] = rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)      # textured right half
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(T):
        cv2.imwrite(str(folder / f"f_{t:03d}.png"), img)
    xs = np.where(np.arange(N) < N // 2, rng.uniform(5, 30, N), rng.uniform(50, 75, N))
    q = np.c_[np.zeros(N), xs, rng.uniform(5, 55, N)].astype(np.float32)
    from types import SimpleNamespace

    gt = SimpleNamespace(tracks_2d=np.repeat(q[:, None, 1:], T, 1), visible=np.ones((N, T), bool),
                         query=q)
    off = gt.tracks_2d.copy()
    off[: N // 2] += 5.0
    meth = SimpleNamespace(tracks_2d=off)
    r = plain_split(gt, folder, {"m": meth})
    assert r["plain_fraction"] == 0.5
    assert r["m"] == {"plain_lt1px": 0.0, "textured_lt1px": 1.0}


def test_error_split_inputs_separate_the_observation_set_from_the_errors():
    """The truth at the tracker's observations keeps exactly its truly visible observations
    (none of its error); the small-error input keeps the tracker's own positions where they
    are within the gross threshold of the truth and hides the rest."""
    from benchmarks.ceiling import small_errors_only, truth_at_tracker_visibility

    sc = make_scene("orbit", T=12, n_points=200, W=320, H=240, seed=6, outlier_frac=0.0)
    gt = _truth(sc)
    rng = np.random.default_rng(0)
    rec = _truth(sc)
    rec.visible = gt.visible & (rng.random(gt.visible.shape) < 0.8)
    rec.visible[:5] = True                              # also "seen" where truly hidden
    err = np.zeros(gt.tracks_2d.shape, np.float32)
    gross = rng.random(gt.visible.shape) < 0.1
    err[..., 0] = np.where(gross, 5.0, 0.5)
    rec.tracks_2d = gt.tracks_2d + err
    rec.confidence = rng.random(gt.visible.shape).astype(np.float32)

    t = truth_at_tracker_visibility(gt, rec, 0.25)
    assert np.array_equal(t.visible, rec.visible & gt.visible)
    d = (np.asarray(t.tracks_2d) - gt.tracks_2d)[t.visible]
    assert 0.2 < d.std() < 0.3 and abs(d.mean()) < 0.05
    assert np.array_equal(t.confidence, rec.confidence)

    s = small_errors_only(gt, rec, 2.0)
    assert np.array_equal(s.visible, rec.visible & gt.visible & ~gross)
    assert np.array_equal(s.tracks_2d, rec.tracks_2d)
    _refuses_other_queries(lambda r: small_errors_only(gt, r, 2.0), rec)
