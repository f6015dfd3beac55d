"""PC2 writer/reader and the point-cache mesh at scale.

The 1,000,000-vertex x 100-frame measurement is opt-in (``-m slow``); it prints the timings."""
import time

import numpy as np
import pytest



def _pc2():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "wt_pc2", Path(__file__).resolve().parents[2] / "operators" / "pc2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pc2_roundtrip_chunked(tmp_path):
    pc2 = _pc2()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 7, 3)).astype(np.float32)  # (N,T,3) like tracks_3d
    X[5, 2:4] = np.nan  # unknown -> held
    X[9, :3] = np.nan   # unknown before it appears -> first known
    X[11] = np.nan      # never known -> 0
    tf = np.diag([2.0, 2.0, 2.0, 1.0])
    path = pc2.write_pc2(tmp_path / "a.pc2", pc2.track_position_chunks(X, np.arange(1000), tf, chunk=128),
                         1000, 7, start=12.0, sampling=1.0)
    h = pc2.read_pc2_header(path)
    assert h == {"version": 1, "n_verts": 1000, "start": 12.0, "sampling": 1.0, "n_frames": 7}
    assert path.stat().st_size == 32 + 1000 * 7 * 12
    with open(path, "rb") as fh:
        assert fh.read(12) == b"POINTCACHE2\0"
    Y = np.asarray(pc2.read_pc2(path))
    ok = np.isfinite(X).all(-1)
    assert np.array_equal(Y.transpose(1, 0, 2)[ok], 2 * X[ok])
    assert np.array_equal(Y[2:4, 5], np.stack([2 * X[5, 1]] * 2))
    assert np.array_equal(Y[:3, 9], np.stack([2 * X[9, 3]] * 3))
    assert not Y[:, 11].any()
    assert not list(tmp_path.glob("*.partial"))


def test_pc2_subset_and_bad_chunk(tmp_path):
    pc2 = _pc2()
    X = np.arange(10 * 4 * 3, dtype=np.float32).reshape(10, 4, 3)
    ids = np.array([1, 4, 5, 9])
    p = pc2.write_pc2(tmp_path / "s.pc2", pc2.track_position_chunks(X, ids, chunk=3), 4, 4)
    assert np.array_equal(np.asarray(pc2.read_pc2(p)), X[ids].transpose(1, 0, 2))
    with pytest.raises(ValueError, match="shape"):
        pc2.write_pc2(tmp_path / "b.pc2", [(slice(0, 2), np.zeros((3, 2, 3)))], 2, 4)
    assert not (tmp_path / "b.pc2").exists() and not (tmp_path / "b.pc2.partial").exists()


def _big_trackdata(tmp_path, n, T):
    """n tracks x T frames as on-disk memory maps, filled chunk by chunk (like a big result).

    Built directly as a TrackData (not through TrackFileWriter) so this measures only the
    Blender side; arrays the point cache does not read are zero-stride views."""
    from engine.trackfile import TrackData, make_metadata

    md = make_metadata((1920, 1080), (0, T - 1), 24.0)
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(tmp_path / "tracks_3d.npy", "w+", np.float32, (n, T, 3))
    step = 1 << 16
    for s in range(0, n, step):
        k = min(step, n - s)
        base = rng.uniform(-5, 5, (k, 1, 3)).astype(np.float32)
        drift = np.linspace(0, 1, T, dtype=np.float32)[None, :, None] * rng.normal(size=(k, 1, 3)).astype(np.float32)
        X[s:s + k] = base + 0.1 * drift
    X.flush()
    K = np.tile(np.array([[1000, 0, 960], [0, 1000, 540], [0, 0, 1]], np.float32), (T, 1, 1))
    return TrackData(query=np.zeros((n, 3), np.float32),
                     tracks_2d=np.broadcast_to(np.zeros((1, 1, 2), np.float32), (n, T, 2)),
                     visible=np.broadcast_to(np.ones((1, 1), bool), (n, T)),
                     confidence=np.broadcast_to(np.ones((1, 1), np.float32), (n, T)),
                     tracks_3d=np.load(tmp_path / "tracks_3d.npy", mmap_mode="r"),
                     cam_to_world=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)), K=K, metadata=md)


def _point_cache_scale(tmp_path, n, T):
    bpy = pytest.importorskip("bpy")
    from worldtrack.operators import build

    data = _big_trackdata(tmp_path, n, T)
    t0 = time.perf_counter()
    ob = build.create_point_cache_mesh(bpy.context.scene, data, None, tmp_path / "big.pc2")
    total = time.perf_counter() - t0
    t = dict(ob["worldtrack_timings"])
    bpy.context.scene.frame_set(T // 2 + 1)
    t1 = time.perf_counter()
    dg = bpy.context.evaluated_depsgraph_get()
    me = ob.evaluated_get(dg).to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ob.evaluated_get(dg).to_mesh_clear()
    t["evaluate_frame_s"] = time.perf_counter() - t1
    t["total_s"] = total
    print(f"\npoint cache {n} x {T}: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
    want = np.asarray(data.tracks_3d[:, T // 2])
    assert np.abs(co.reshape(-1, 3) - want).max() < 1e-5
    return t


@pytest.mark.blender
def test_point_cache_mesh_200k(scene, tmp_path):
    t = _point_cache_scale(tmp_path, 200_000, 20)
    assert t["total_s"] < 60


@pytest.mark.blender
@pytest.mark.slow
def test_point_cache_mesh_1m_x_100(scene, tmp_path):
    t = _point_cache_scale(tmp_path, 1_000_000, 100)
    assert t["total_s"] < 180, t
