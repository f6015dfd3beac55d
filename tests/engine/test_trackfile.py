"""Track file: round trip, chunked writing/reading, and clear errors on malformed files."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from engine.trackfile import (FORMAT_VERSION, TrackData, TrackFileError, TrackFileWriter,
                              load_trackfile, make_metadata, save_trackfile, validate)

W, H = 64, 48


def make_data(n=7, t=5, rng=None, **extra) -> TrackData:
    rng = rng or np.random.default_rng(0)
    c2w = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1))
    c2w[:, 0, 3] = np.arange(t)  # dolly along x
    K = np.tile(np.array([[80, 0, 31.5], [0, 80, 23.5], [0, 0, 1]], np.float32), (t, 1, 1))
    vis = rng.random((n, t)) > 0.3
    tr = rng.uniform(0, 60, (n, t, 2)).astype(np.float32)
    tr[~vis] = np.nan  # hidden points may be NaN: allowed
    q = np.stack([rng.integers(0, t, n), rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)],
                 1).astype(np.float32)
    return TrackData(query=q, tracks_2d=tr, visible=vis,
                     confidence=vis.astype(np.float32) * 0.9,
                     tracks_3d=rng.normal(size=(n, t, 3)).astype(np.float32),
                     cam_to_world=c2w, K=K,
                     metadata=make_metadata((W, H), (10, 10 + t - 1), 24.0,
                                            source={"path": "clip.mp4", "hash": "abc"}),
                     **extra)


def test_round_trip_all_arrays(tmp_path):
    n, t = 7, 5
    d = make_data(n, t, group=np.array([-1, -1, 0, 0, 1, -1, 1], np.int32),
                  colors=np.full((n, 3), 200, np.uint8),
                  reproj_error=np.linspace(0, 1, n).astype(np.float32),
                  depth=np.ones((t, H, W), np.float32))
    p = save_trackfile(tmp_path / "a.npz", d)
    e = load_trackfile(p)
    for name, a in d.arrays().items():
        b = e.arrays()[name]
        assert b.dtype == a.dtype and b.shape == a.shape, name
        np.testing.assert_array_equal(np.asarray(b), a, err_msg=name)
    assert e.metadata == json.loads(json.dumps(d.metadata))
    assert e.metadata["version"] == FORMAT_VERSION
    assert e.image_size == (W, H) and e.n_frames == t and e.n_tracks == n
    # members are stored, so arrays are memory maps of the file, not copies
    assert isinstance(e.tracks_2d, np.memmap)
    with zipfile.ZipFile(p) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    # a plain numpy reader understands the file too
    with np.load(p) as z:
        np.testing.assert_array_equal(z["visible"], d.visible)
        assert json.loads(str(z["metadata"]))["format"] == "worldtrack.trackfile"


def test_compressed_file_still_loads(tmp_path):
    d = make_data()
    p = tmp_path / "c.npz"
    arrays = d.arrays()
    np.savez_compressed(p, metadata=np.array(json.dumps(d.metadata)), **arrays)
    e = load_trackfile(p)
    np.testing.assert_array_equal(e.K, d.K)


def test_chunked_writer_is_atomic_and_bounded(tmp_path):
    n, t = 1000, 12
    md = make_metadata((W, H), (1, t), 30.0)
    K = np.tile(np.array([[50, 0, 32], [0, 50, 24], [0, 0, 1]], np.float32), (t, 1, 1))
    out = tmp_path / "w.npz"
    with TrackFileWriter(out, n, t, md) as w:
        w["K"][:] = K
        for s in range(0, n, 128):  # producer fills one chunk of tracks at a time
            e = min(n, s + 128)
            w["query"][s:e, 1] = np.arange(s, e) % W
            w["tracks_2d"][s:e] = np.arange(s, e, dtype=np.float32)[:, None, None]
            w["visible"][s:e] = True
            w["confidence"][s:e] = 1.0
        w.add("group")[::2] = 3
        assert not out.exists()  # nothing published before close
    data = load_trackfile(out)
    chunks = list(data.iter_track_chunks(300))
    assert [c[0] for c in chunks] == [slice(0, 300), slice(300, 600), slice(600, 900),
                                     slice(900, 1000)]
    sl, part = chunks[2]
    np.testing.assert_array_equal(part.tracks_2d[:, 0, 0], np.arange(600, 900))
    assert part.cam_to_world.shape == (t, 4, 4)
    assert (data.group[::2] == 3).all() and (data.group[1::2] == -1).all()
    assert not list(tmp_path.glob(".wt-*")), "scratch directory left behind"


def test_writer_cancelled_leaves_nothing_and_keeps_old_file(tmp_path):
    out = tmp_path / "keep.npz"
    save_trackfile(out, make_data())
    before = out.read_bytes()
    md = make_metadata((W, H), (1, 4), 24.0)
    with pytest.raises(KeyboardInterrupt):
        with TrackFileWriter(out, 10, 4, md) as w:
            w["K"][:] = np.eye(3)
            raise KeyboardInterrupt
    assert out.read_bytes() == before  # the earlier result is intact
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".wt-*"))


def test_writer_refuses_invalid_result(tmp_path):
    out = tmp_path / "bad.npz"
    with pytest.raises(TrackFileError, match="positive focal"):
        with TrackFileWriter(out, 3, 2, make_metadata((W, H), (0, 1), 24.0)):
            pass  # K never filled: all zeros
    assert not out.exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: setattr(d, "tracks_2d", d.tracks_2d[:, :, :1]), r"'tracks_2d' has shape"),
    (lambda d: setattr(d, "visible", d.visible.astype(np.uint8)), r"'visible' has dtype uint8"),
    (lambda d: d.cam_to_world.__setitem__((2, 0, 3), np.nan), r"cam_to_world.*NaN"),
    (lambda d: d.cam_to_world.__setitem__((1, 0, 0), 3.0), r"not orthonormal"),
    (lambda d: d.metadata.__setitem__("version", FORMAT_VERSION + 1), r"newer than this"),
    (lambda d: d.metadata.__setitem__("version", "1"), r"must be an integer"),
    (lambda d: d.metadata.__setitem__("format", "other"), r"not a Worldtrack track file"),
    (lambda d: d.metadata.pop("fps"), r"missing required keys: fps"),
    (lambda d: d.metadata.__setitem__("frame_range", [0, 99]), r"spans 100 frames"),
    (lambda d: d.confidence.__setitem__((0, 0), 1.5), r"confidence must lie in \[0, 1\]"),
    (lambda d: d.query.__setitem__((0, 0), 99), r"query frame indices"),
    (lambda d: d.tracks_2d.__setitem__((0, slice(None)), np.nan) or d.visible.__setitem__(0, True),
     r"NaN/inf at frames marked visible"),
    (lambda d: setattr(d, "group", np.full(d.n_tracks, -2, np.int32)), r"group ids"),
])
def test_validation_messages(mutate, message):
    d = make_data()
    validate(d)
    mutate(d)
    with pytest.raises(TrackFileError, match=message):
        validate(d)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(TrackFileError, match="not found"):
        load_trackfile(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(TrackFileError, match="not a readable track file"):
        load_trackfile(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(TrackFileError, match="no metadata"):
        load_trackfile(plain)
    # a newer format is refused with an actionable message, via load too
    d = make_data()
    d.metadata["version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.npz"
    np.savez(newer, metadata=np.array(json.dumps(d.metadata)), **d.arrays())
    with pytest.raises(TrackFileError, match="update Worldtrack"):
        load_trackfile(newer)
    # truncated file (e.g. a copy interrupted half way)
    good = save_trackfile(tmp_path / "good.npz", make_data())
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TrackFileError):
        load_trackfile(cut)


def test_cli_validate_and_info(tmp_path):
    p = save_trackfile(tmp_path / "a.npz", make_data())
    r = subprocess.run([sys.executable, "-m", "engine", "validate", str(p)], capture_output=True,
                       text=True, cwd=str(__import__("engine").__path__[0] + "/.."))
    assert r.returncode == 0 and "ok: 7 tracks x 5 frames" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "engine", "info", str(p)], capture_output=True,
                       text=True, cwd=str(__import__("engine").__path__[0] + "/.."))
    assert r.returncode == 0 and json.loads(r.stdout)["frames"] == 5
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"xx")
    r = subprocess.run([sys.executable, "-m", "engine", "validate", str(bad)], capture_output=True,
                       text=True, cwd=str(__import__("engine").__path__[0] + "/.."))
    assert r.returncode == 2 and "invalid:" in r.stderr


def test_validation_scans_in_aligned_blocks(monkeypatch):
    """Arrays of different row widths are scanned block by block with the same rows."""
    import engine.trackfile as tf

    monkeypatch.setattr(tf, "_BLOCK_BYTES", 64)  # force many small blocks
    d = make_data(n=50, t=5)
    validate(d)
    d.tracks_2d[37, 2] = np.nan
    d.visible[37, 2] = True
    with pytest.raises(TrackFileError, match="NaN/inf at frames marked visible"):
        validate(d)


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _write_with_blocks(path, block_bytes, n=301, t=9):
    """A writer-made file with every array, filled partly by the producer, in ``block_bytes``."""
    rng = np.random.default_rng(3)
    md = make_metadata((W, H), (5, 5 + t - 1), 25.0, source={"path": "x.mp4", "hash": "h"})
    with TrackFileWriter(path, n, t, md, block_bytes=block_bytes) as w:
        w["K"][:] = np.array([[70, 0, 31.5], [0, 70, 23.5], [0, 0, 1]], np.float32)
        w["query"][:, 0] = rng.integers(0, t, n)
        w["query"][:, 1:] = rng.uniform(0, 40, (n, 2))
        w["tracks_2d"][::3] = rng.uniform(0, 60, (len(range(0, n, 3)), t, 2))  # rest stays NaN
        w["visible"][::3] = True
        w["confidence"][::3] = 0.75
        w["tracks_3d"][1::4] = rng.normal(size=(len(range(1, n, 4)), t, 3))
        w.add("group")[::5] = 2                       # rest stays -1
        w.add("colors")[:] = rng.integers(0, 256, (n, 3))
        w.add("reproj_error")[:] = rng.random(n)
        w.add("depth")[:] = rng.random((t, H, W))
    return path


def test_block_size_does_not_change_the_file(tmp_path):
    """Filling, validating and packing in tiny blocks (one row at a time) gives the same archive
    members, byte for byte, as the default block size, via the writer and via save_trackfile."""
    a = _members(_write_with_blocks(tmp_path / "default.npz", None))
    b = _members(_write_with_blocks(tmp_path / "tiny.npz", 1))
    c = _members(_write_with_blocks(tmp_path / "small.npz", 4096))
    assert list(a) == list(b) == list(c) and len(a) == 12       # 11 arrays + metadata
    for name in a:
        assert a[name] == b[name] == c[name], name
    d = load_trackfile(tmp_path / "default.npz")
    assert np.isnan(d.tracks_2d[1]).all() and (d.group[1::5] == -1).all()
    assert (np.asarray(d.cam_to_world) == np.eye(4, dtype=np.float32)).all()
    # in-RAM data, one array Fortran-ordered: still C-order bytes, whatever the block size
    data = make_data(n=40, t=6)
    data.tracks_3d = np.asfortranarray(data.tracks_3d)
    p1 = save_trackfile(tmp_path / "s1.npz", data)
    p2 = save_trackfile(tmp_path / "s2.npz", data, block_bytes=7)
    assert _members(p1) == _members(p2)
    np.testing.assert_array_equal(load_trackfile(p2).tracks_3d, data.tracks_3d)


_RSS_SCRIPT = r"""
import sys
import numpy as np
from engine.pages import release_pages
from engine.trackfile import TrackFileWriter, load_trackfile, make_metadata

def status_mb(key):
    # this process' own memory (not ru_maxrss: Linux carries a forking parent's peak over exec)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) / 1024

def peak_mb():
    return status_mb("VmHWM")

def rss_mb():
    return status_mb("VmRSS")

mode, path, n, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
block = int(sys.argv[5]) or None
base = rss_mb()
if mode == "write":
    md = make_metadata((64, 48), (0, t - 1), 24.0)
    with TrackFileWriter(path, n, t, md, block_bytes=block) as w:
        w["K"][:] = np.array([[50, 0, 32], [0, 50, 24], [0, 0, 1]], np.float32)
        w["query"][:, 1] = np.arange(n) % 64
        for s in range(0, n // 2, 1000):    # a producer that releases what it wrote
            w["tracks_3d"][s:s + 1000] = 1.5
            w["visible"][s:s + 1000] = True
            w["confidence"][s:s + 1000] = 0.5
            w["tracks_2d"][s:s + 1000] = 3.0
            w.release("tracks_3d", "visible", "confidence")
            release_pages(w["tracks_2d"])   # the same helper, as a producer may use directly
else:
    d = load_trackfile(path)                # validates: reads every per-track array
    assert float(d.tracks_3d[n // 2 - 1, -1, 0]) == 1.5 and np.isnan(d.tracks_3d[-1, 0, 0])
print(peak_mb() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status, madvise")
@pytest.mark.parametrize("block_mb, bound_mb", [(0, 40), (2, 12)])
def test_writer_and_validation_memory_stays_one_block(tmp_path, block_mb, bound_mb):
    """Writing (NaN fill, validation, packing) and loading (validation) a ~100 MB track file
    raise the process' peak resident memory by about one block and its temporaries (default
    16 MiB, or 2 MiB for the writer here), not by the file size: each block's pages of the disk
    memory maps are dropped after use. (Before, writing grew it by ~158 MB, loading by ~87.)"""
    n, t = 100_000, 40
    size_mb = n * t * (2 * 4 + 1 + 4 + 3 * 4) / 2**20                 # 95 MiB of track arrays
    path = tmp_path / "big.npz"
    grew = {}
    for mode in ("write", "load"):
        r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, mode, str(path), str(n), str(t),
                            str(block_mb << 20)], capture_output=True, text=True,
                           cwd=str(__import__("engine").__path__[0] + "/.."), timeout=120)
        assert r.returncode == 0, r.stderr
        grew[mode] = float(r.stdout)
    assert path.stat().st_size > size_mb * 2**20
    # (loading validates in the default 16 MiB blocks)
    assert grew["write"] < bound_mb and grew["load"] < 40, (grew, size_mb)
