"""Full-resolution polish (engine/track/polish.py): sub-pixel tracks at the input resolution
when the tracker matched on downscaled frames."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engine.decode import open_footage  # noqa: E402
from engine.progress import Cancelled, Progress  # noqa: E402
from engine.track import track_clip  # noqa: E402
from engine.track.polish import polish_wanted  # noqa: E402
from engine.trackfile import load_trackfile  # noqa: E402
from track_synth import make_clip, write_sequence  # noqa: E402


@pytest.fixture(scope="module")
def hd(tmp_path_factory):
    """A 320x240 clip tracked at a 120-px working resolution (a 2.7x downscale)."""
    c = make_clip(width=320, height=240, n_frames=12, seed=3, square=64, sq_speed=5.0,
                  query_stride=16)
    return c, write_sequence(c, tmp_path_factory.mktemp("hd"))


def _errors(c, d):
    vis = c.visible & np.asarray(d.visible)
    e = np.linalg.norm(np.asarray(d.tracks_2d) - c.tracks, axis=-1)
    later = np.arange(c.tracks.shape[1])[None] > np.round(c.query[:, :1])   # not the query frame
    return e[vis & later]


def test_polish_brings_downscaled_tracks_to_subpixel(hd, tmp_path):
    c, pat = hd
    off = load_trackfile(track_clip(pat, tmp_path / "off.npz", queries=c.query, device="cpu",
                                    max_side=120, polish="off", progress=Progress("quiet")))
    on = load_trackfile(track_clip(pat, tmp_path / "on.npz", queries=c.query, device="cpu",
                                   max_side=120, polish="auto", progress=Progress("quiet")))
    st = on.metadata["engine"]["settings"]["polish"]
    assert st["moved"] > 0.5 * st["point_frames"] > 0, st
    assert "polish" not in off.metadata["engine"]["settings"]
    e_off, e_on = _errors(c, off), _errors(c, on)
    m_off, m_on = np.median(e_off), np.median(e_on)
    # the tracker's error is a fraction of a working pixel (2.7 input px); the polish takes it
    # to a fraction of an input pixel and does not create gross errors
    assert m_on < 0.5 * m_off and m_on < 0.15, (m_off, m_on)
    assert np.mean(e_on > 4) <= np.mean(e_off > 4) + 0.01
    # visibility stays the tracker's, except points it saw hidden that match their template
    # unmistakably: those must really be visible
    v_on, v_off = np.asarray(on.visible), np.asarray(off.visible)
    assert not (v_off & ~v_on).any()
    refound = v_on & ~v_off
    assert refound.sum() == st["refound"]
    assert c.visible[refound].mean() >= 0.95 if refound.any() else True


def test_polish_auto_only_when_downscaled(hd):
    c, pat = hd
    assert polish_wanted("auto", open_footage(pat, max_side=120), 1000)
    assert not polish_wanted("auto", open_footage(pat, max_side=None), 1000)    # full resolution
    assert not polish_wanted("auto", open_footage(pat, max_side=120), 10 ** 6)  # too many tracks
    assert polish_wanted("on", open_footage(pat, max_side=None), 10 ** 6)
    with pytest.raises(ValueError, match="polish"):
        polish_wanted("maybe", open_footage(pat), 10)


def test_polish_cancel_leaves_no_file(hd, tmp_path):
    c, pat = hd
    prog = Progress("quiet")

    def cb(stage, done, total, eta):
        # the stage's first report (progress reports are rate-limited, so not "after n frames")
        if stage == "polish":
            prog.cancel()

    prog.callback = cb
    out = tmp_path / "x.npz"
    with pytest.raises(Cancelled):
        track_clip(pat, out, queries=c.query, device="cpu", max_side=120, polish="on",
                   progress=prog)
    assert not out.exists()
