"""The long-clip benchmark's synthetic pan: its ground truth must be exact, its scoring sound."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from benchmarks.longclip import PanSettings, render, score  # noqa: E402
from engine.trackfile import TrackData, make_metadata, save_trackfile  # noqa: E402


@pytest.fixture(scope="module")
def pan(tmp_path_factory):
    st = PanSettings(frames=40, queries_every=15, noise=0.0)
    out = render(st, tmp_path_factory.mktemp("pan"))
    return st, out, dict(np.load(out / "gt.npz"))


def _patch(img, xy):
    return cv2.getRectSubPix(img, (7, 7), (float(xy[0]), float(xy[1])))


def test_ground_truth_follows_the_texture(pan):
    st, out, gt = pan
    frames = [cv2.imread(str(out / "frames" / f"{t:05d}.png"), 0).astype(np.float32)
              for t in range(st.frames)]
    q, tr, vis = gt["query"], gt["tracks_2d"], gt["visible"]
    assert len(q) > 50 and vis.any(axis=1).all()
    at_truth, beside = [], []
    for i in range(0, len(q), 3):
        t0 = int(q[i, 0])
        ref = _patch(frames[t0], q[i, 1:])
        for t in np.nonzero(vis[i])[0][::4]:
            at_truth.append(np.abs(_patch(frames[t], tr[i, t]) - ref).mean())
            beside.append(np.abs(_patch(frames[t], tr[i, t] + 1.5) - ref).mean())
    # bicubic resampling only: the truth matches to a fraction of a grey level, 1.5 px off does not
    assert np.median(at_truth) < 1.5 < np.median(beside)
    # the occluder hides background points: some frames inside the image are not visible
    x, y = tr[..., 0], tr[..., 1]
    inside = (x >= 0) & (x <= st.size[0] - 1) & (y >= 0) & (y <= st.size[1] - 1)
    assert (inside & ~vis).any()


def test_render_is_cached_by_settings(pan):
    st, out, _ = pan
    before = (out / "frames" / "00000.png").stat().st_mtime_ns
    render(st, out)
    assert (out / "frames" / "00000.png").stat().st_mtime_ns == before


def test_scoring_the_truth_is_perfect_and_an_offset_is_not(pan, tmp_path):
    st, _, gt = pan
    n, t = gt["visible"].shape

    def save(tracks, name):
        data = TrackData(query=gt["query"], tracks_2d=tracks.astype(np.float32),
                         visible=gt["visible"], confidence=gt["visible"].astype(np.float32),
                         tracks_3d=np.full((n, t, 3), np.nan, np.float32),
                         cam_to_world=np.tile(np.eye(4, dtype=np.float32), (t, 1, 1)),
                         K=np.tile(np.eye(3, dtype=np.float32), (t, 1, 1)),
                         metadata=make_metadata(st.size, (0, t - 1), 24.0))
        return save_trackfile(tmp_path / name, data)

    perfect = score(gt, save(gt["tracks_2d"], "a.npz"), st.size)
    assert perfect["average_jaccard"] == pytest.approx(1.0)
    assert perfect["occlusion_accuracy"] == pytest.approx(1.0)
    off = score(gt, save(gt["tracks_2d"] + 3.0, "b.npz"), st.size)
    assert off["average_jaccard"] < 0.7
