"""Tracks chosen by a region drawn on the clip (select_mode 'REGION'): a Mask datablock or an
annotation lasso.

- The pure polygon test against OpenCV's ``pointPolygonTest`` (and even-odd self-intersections).
- Mask / annotation coordinates -> track-file pixels: non-square clips (landscape and portrait,
  where the mask space squeezes one axis), a track file at twice the clip's resolution, and an
  independent check against Blender's own mask rasteriser (the compositor's Mask node).
- Create Empties, Create Point Cache Mesh and Attach to Surface with select_mode='REGION' use
  exactly the visible tracks whose ground-truth position lies inside the drawn polygon (computed
  here independently, in normalised frame coordinates with OpenCV); an animated (shape-keyed) mask
  is read at the current frame; nothing drawn gives a clear error and changes nothing.
"""
import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
import cv2  # noqa: E402
import wt_synth  # noqa: E402

pytestmark = pytest.mark.blender

#: A concave pentagon in normalised frame coordinates ((0,0) bottom-left corner, (1,1) top-right).
LASSO = np.array([(0.12, 0.18), (0.72, 0.12), (0.88, 0.62), (0.5, 0.42), (0.28, 0.86)])
NO_REGION = "Draw a closed mask or an annotation lasso on the clip first"


# ------------------------------------------------------------------------------ oracles / helpers
def _cv_inside(poly, pts, scale=1000.0):
    """(strictly inside, on the boundary within 1e-3 units) by OpenCV, for polygon/points in the
    same units (scaled up so float32 contours keep the precision)."""
    c = (np.asarray(poly, np.float64) * scale).astype(np.float32).reshape(-1, 1, 2)
    d = np.array([cv2.pointPolygonTest(c, (float(x) * scale, float(y) * scale), True)
                  for x, y in np.asarray(pts, np.float64)]) / scale
    d = np.nan_to_num(d, nan=-1e9)
    return d > 1e-3, np.abs(d) <= 1e-3


def _mask_coords(uv, W, H):
    """Normalised frame -> mask coordinates, written out from Blender's BKE_mask_coord_from_frame
    (independently of the code under test)."""
    uv = np.asarray(uv, np.float64).copy()
    if W > H:
        uv[:, 1] = (uv[:, 1] - 0.5) * (H / W) + 0.5
    elif W < H:
        uv[:, 0] = (uv[:, 0] - 0.5) * (W / H) + 0.5
    return uv


def _norm(xy, W, H):
    """Track-file pixels -> normalised frame coordinates (marker convention)."""
    xy = np.asarray(xy, np.float64)
    return np.c_[(xy[:, 0] + 0.5) / W, 1.0 - (xy[:, 1] + 0.5) / H]


def _expected(data, t, poly_uv, group=None):
    """(sure, maybe): visible tracks (of ``group``) strictly inside / on the edge of ``poly_uv``."""
    W, H = data.image_size
    vis = np.array(data.visible[:, t], bool)
    if group is not None:
        vis &= np.asarray(data.group) == group
    inside, edge = _cv_inside(poly_uv, _norm(data.tracks_2d[:, t], W, H))
    return set(np.flatnonzero(vis & inside).tolist()), set(np.flatnonzero(vis & edge).tolist())


def _check(got, sure, maybe):
    got = set(int(i) for i in got)
    assert sure <= got <= sure | maybe, (sorted(sure - got), sorted(got - sure - maybe))


def _new_mask(name, pts, handles="VECTOR"):
    """A mask with one closed spline through ``pts`` (mask coordinates). ``handles``: 'VECTOR'
    (straight sides) or a list of (left, right) handle positions."""
    m = bpy.data.masks.new(name)
    sp = m.layers.new(name="Layer").splines.new()
    sp.points.add(len(pts) - 1)
    for p, c in zip(sp.points, pts):
        p.co = tuple(c)
    sp.use_cyclic = True
    for i, p in enumerate(sp.points):
        if handles == "VECTOR":
            p.handle_type = "VECTOR"
        else:
            p.handle_type = "FREE"
            p.handle_left, p.handle_right = (tuple(h) for h in handles[i])
    return m


def _clip_editor(clip, mask=None):
    """Context override for a Movie Clip Editor showing ``clip`` (headless Blender has one window)."""
    win = bpy.context.window_manager.windows[0]
    area = max(win.screen.areas, key=lambda a: a.width * a.height)
    area.type = "CLIP_EDITOR"
    space = area.spaces.active
    space.clip = clip
    if mask is not None:
        space.mode = "MASK"
        space.mask = mask
    region = next(r for r in area.regions if r.type == "WINDOW")
    return dict(window=win, area=area, region=region, space_data=space)


def _draw_annotation(clip, ctx, uv):
    """A stroke drawn with the Annotate tool (the real operator), then placed at ``uv``
    (normalised frame coordinates): headless, the Clip Editor has never been drawn, so its view
    mapping is undefined and the operator stores NaN positions."""
    from worldtrack.operators import regions

    el = [dict(name="", location=(0, 0, 0), mouse=(40 * i, 30 * (i % 2)), mouse_event=(40 * i, 30 * (i % 2)),
               pressure=1.0, size=0, x_tilt=0, y_tilt=0, time=float(i), is_start=(i == 0))
          for i in range(len(uv))]
    if "pen_flip" in bpy.types.OperatorStrokeElement.bl_rna.properties:  # 4.2 needs it
        for e in el:
            e["pen_flip"] = False
    with bpy.context.temp_override(**ctx):
        assert bpy.ops.gpencil.annotate(mode="DRAW", stroke=el, wait_for_input=False) == {"FINISHED"}
    gpd = regions.clip_annotation(clip)
    frame = regions._frame_at(gpd.layers[-1], bpy.context.scene.frame_current)
    stroke = frame.strokes[-1]
    assert len(stroke.points) == len(uv)
    for p, (u, v) in zip(stroke.points, uv):
        p.co = (float(u), float(v), 0.0)
    return stroke


def _setup(scene, tmp_path, W=320, H=180, track_scale=1):
    """A real movie clip (starting at scene frame 5) of W x H and its exact track file, optionally
    at ``track_scale`` times the clip's resolution; the scene at track-file frame 3."""
    from engine.trackfile import TrackData, load_trackfile, save_trackfile
    from worldtrack.operators import build

    syn = wt_synth.make_trackdata(T=8, W=W, H=H, seed=3)
    movie = wt_synth.write_video(tmp_path / "clip.mp4", syn.data)
    d = syn.data
    if track_scale != 1:
        s = track_scale
        K = d.K.copy()
        K[:, :2, :2] *= s
        K[:, :2, 2] = (K[:, :2, 2] + 0.5) * s - 0.5
        d = TrackData(**dict(d.arrays(), tracks_2d=(d.tracks_2d + 0.5) * s - 0.5, K=K),
                      metadata=dict(d.metadata, image_size=[W * s, H * s]))
    path = save_trackfile(tmp_path / "gt.npz", d)
    clip = bpy.data.movieclips.load(str(movie))
    clip.frame_start = 5
    scene.active_clip = clip
    clip.worldtrack.result_path = str(path)
    data = load_trackfile(path)
    t = 3
    scene.frame_set(build.frame_map(data, clip).scene_frame0 + t)
    ws = scene.worldtrack
    ws.select_mode, ws.count, ws.group = "REGION", 100000, -2
    return data, clip, t


def _scene_state():
    return len(bpy.data.objects), len(bpy.data.collections), len(bpy.data.meshes), len(bpy.data.actions)


# ------------------------------------------------------------------------------------ pure numpy
def test_points_in_polygon_matches_opencv(wt):
    from worldtrack.operators import selection

    rng = np.random.default_rng(0)
    for _ in range(40):  # random star-shaped (mostly concave) polygons
        n = int(rng.integers(3, 14))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(10, 90, n)
        poly = np.c_[100 + r * np.cos(ang), 80 + r * np.sin(ang)]
        pts = rng.uniform(0, 200, (600, 2))
        got = selection.points_in_polygon(pts, poly)
        inside, edge = _cv_inside(poly, pts, scale=1.0)
        assert np.array_equal(got[~edge], inside[~edge])
    # Vertices shared by edges and horizontal edges: a grid of points on an axis-aligned square.
    sq = np.array([(0, 0), (4, 0), (4, 4), (0, 4)], float)
    g = np.stack(np.meshgrid(np.arange(-1, 6) + 0.5, np.arange(-1, 6) + 0.5), -1).reshape(-1, 2)
    assert np.array_equal(selection.points_in_polygon(g, sq), (g > 0).all(1) & (g < 4).all(1))
    # Self-intersecting lasso (pentagram): even-odd leaves the doubly covered centre out.
    a = np.pi / 2 + 2 * np.pi * np.arange(5) / 5
    star = np.c_[np.cos(a), np.sin(a)][[0, 2, 4, 1, 3]] * 10
    tip = np.c_[np.cos(a[0]), np.sin(a[0])] * 8
    assert selection.points_in_polygon(np.r_[[[0.0, 0.0]], tip], star).tolist() == [False, True]
    # NaN points and degenerate polygons are never inside.
    assert not selection.points_in_polygon([[np.nan, 1.0]], sq).any()
    assert not selection.points_in_polygon([[1.0, 1.0]], sq[:2]).any()
    # Union of polygons vs even-odd between them (a hole).
    big, small = sq * 3, sq + 4
    p = np.array([[5.0, 5.0], [1.0, 1.0]])
    assert selection.points_in_polygons(p, [big, small]).tolist() == [True, True]
    assert selection.points_in_polygons(p, [big, small], even_odd=True).tolist() == [False, True]


def test_in_polygon_visible_group_cap_and_chunks(wt, monkeypatch):
    from worldtrack.operators import selection

    d = wt_synth.make_trackdata(T=6, W=320, H=180, seed=1).data
    t = 2
    poly = np.array([(20, 20), (300, 40), (250, 170), (120, 90), (40, 160)], float)
    vis = np.asarray(d.visible[:, t])
    inside, edge = _cv_inside(poly, d.tracks_2d[:, t], scale=1.0)
    got = selection.in_polygon(d, t, [poly])
    _check(got, set(np.flatnonzero(vis & inside)), set(np.flatnonzero(vis & edge)))
    assert len(got) > 20 and (vis & ~inside).any()
    g0 = selection.in_polygon(d, t, [poly], group=0)
    assert set(g0) == set(got) & set(np.flatnonzero(np.asarray(d.group) == 0)) and len(g0) > 0
    # Chunked over tracks: same answer with tiny chunks.
    monkeypatch.setattr(selection, "_CHUNK", 7)
    assert np.array_equal(selection.in_polygon(d, t, [poly]), got)
    # Capped: the most reliable inside, spread out, exactly max_tracks of them.
    cap = selection.in_polygon(d, t, [poly], max_tracks=6)
    score = selection.reliability(d)
    assert len(cap) == 6 and set(cap) <= set(got)
    assert score[cap].max() == score[got].max()
    assert len(selection.in_polygon(d, t, [])) == 0


def test_mask_space_and_bezier_sampling(wt):
    from worldtrack.operators import regions

    uv = np.array([[0.0, 0.0], [1.0, 1.0], [0.25, 0.7]])
    for size in [(320, 180), (180, 320), (64, 64), (1920, 817)]:
        m = regions.frame_to_mask(uv, size)
        assert np.allclose(m, _mask_coords(uv, *size))
        assert np.allclose(regions.mask_to_frame(m, size), uv)
    # Landscape 16:9: the frame's top and bottom edges sit at 0.5 -/+ 0.5 * 9/16 in mask space.
    assert np.allclose(regions.frame_to_mask([[0.3, 0.0], [0.3, 1.0]], (320, 180))[:, 1],
                       [0.5 - 0.5 * 180 / 320, 0.5 + 0.5 * 180 / 320])
    # A Bezier circle (4 points, kappa handles) samples to within 0.03 % of its radius.
    k, r, c = 0.5522847498, 50.0, np.array([100.0, 80.0])
    co = c + r * np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], float)
    tang = r * k * np.array([(0, 1), (-1, 0), (0, -1), (1, 0)], float)
    poly = regions.bezier_loop(co, co - tang, co + tang)
    rad = np.linalg.norm(poly - c, axis=1)
    assert len(poly) >= 4 * 20 and np.abs(rad / r - 1).max() < 3e-4
    assert np.linalg.norm(np.diff(np.r_[poly, poly[:1]], axis=0), axis=1).max() <= 2.0


# --------------------------------------------------------------------------------- real Blender
def _blender_raster(scene, mask, W, H, tmp_path):
    """The mask rasterised by Blender's compositor (Mask node, scene size = clip size): (H, W) bool."""
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    if bpy.app.version >= (5, 0, 0):
        ng = bpy.data.node_groups.new("WT Mask", "CompositorNodeTree")
        scene.compositing_node_group = ng
        ng.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        out = ng.nodes.new("NodeGroupOutput")
    else:
        scene.use_nodes = True
        ng = scene.node_tree
        for n in list(ng.nodes):
            ng.nodes.remove(n)
        out = ng.nodes.new("CompositorNodeComposite")
    node = ng.nodes.new("CompositorNodeMask")
    node.mask = mask
    if hasattr(node, "size_source"):
        node.size_source, node.use_feather = "SCENE", False
    ng.links.new(node.outputs[0], out.inputs[0])
    scene.render.filepath = str(tmp_path / "mask.png")
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(write_still=True)
    img = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_GRAYSCALE)
    assert img is not None and img.shape == (H, W)
    return img > 127


@pytest.mark.parametrize("W,H,scale", [(320, 180, 1), (180, 320, 1), (320, 180, 2)])
def test_empties_inside_mask(scene, tmp_path, W, H, scale):
    """Non-square clips (landscape and portrait) and a track file at 2x the clip's resolution."""
    data, clip, t = _setup(scene, tmp_path, W, H, scale)
    mask = _new_mask("Region", _mask_coords(LASSO, W, H))
    scene.worldtrack.region_mask = mask
    assert bpy.ops.worldtrack.create_empties() == {"FINISHED"}
    got = [ob["worldtrack_track"] for ob in bpy.data.collections["Worldtrack Empties"].objects]
    sure, maybe = _expected(data, t, LASSO)
    assert len(sure) >= 15 and len(sure) < int(np.asarray(data.visible[:, t]).sum())
    _check(got, sure, maybe)
    if scale == 1:
        # Blender's own rasteriser agrees (tracks more than 1.5 px from the outline).
        lit = _blender_raster(scene, mask, W, H, tmp_path)
        xy = np.asarray(data.tracks_2d[:, t], np.float64)
        vis = np.flatnonzero(np.asarray(data.visible[:, t]))
        poly_px = np.c_[LASSO[:, 0] * W - 0.5, (1 - LASSO[:, 1]) * H - 0.5]
        c = poly_px.astype(np.float32).reshape(-1, 1, 2)
        far = [i for i in vis if abs(cv2.pointPolygonTest(c, tuple(map(float, xy[i])), True)) > 1.5]
        px = np.rint(xy[far]).astype(int)
        ok = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        far, px = np.asarray(far)[ok], px[ok]
        assert len(far) > 30
        assert np.array_equal(lit[px[:, 1], px[:, 0]], np.isin(far, got))


def test_curved_mask_point_cache(scene, tmp_path):
    """A Bezier circle mask (handles sampled) on a 16:9 clip -> a point cache of exactly the
    tracks within the circle (a circle in mask space is a circle in pixels)."""
    W, H = 320, 180
    data, clip, t = _setup(scene, tmp_path, W, H)
    c_px, r_px = np.array([150.0, 95.0]), 60.0
    c_uv = _norm(c_px[None], W, H)[0]
    c_m = _mask_coords(c_uv[None], W, H)[0]
    r_m, k = r_px / W, 0.5522847498  # mask space is isotropic, one unit = the frame's width
    dirs = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], float)
    co = c_m + r_m * dirs
    tang = r_m * k * np.array([(0, 1), (-1, 0), (0, -1), (1, 0)], float)
    scene.worldtrack.region_mask = _new_mask("Circle", co, list(zip(co - tang, co + tang)))
    scene.worldtrack.region_source = "MASK"
    scene.worldtrack.point_cache_all = False
    assert bpy.ops.worldtrack.create_point_cache() == {"FINISHED"}
    me = bpy.data.objects["Worldtrack Points"].data
    ids = np.empty(len(me.vertices), np.int32)
    me.attributes["track_id"].data.foreach_get("value", ids)
    d = np.linalg.norm(np.asarray(data.tracks_2d[:, t], np.float64) - c_px, axis=1)
    vis = np.asarray(data.visible[:, t])
    sure = set(np.flatnonzero(vis & (d < r_px - 0.1)).tolist())
    maybe = set(np.flatnonzero(vis & (np.abs(d - r_px) <= 0.1)).tolist())
    assert len(sure) >= 10
    _check(ids, sure, maybe)


def test_annotation_lasso_point_cache(scene, tmp_path):
    W, H = 320, 180
    data, clip, t = _setup(scene, tmp_path, W, H)
    ctx = _clip_editor(clip)
    stroke = _draw_annotation(clip, ctx, LASSO)
    if hasattr(stroke, "display_mode"):
        assert stroke.display_mode == "2DSPACE"  # 4.2: what the Annotate tool makes in the Clip Editor
    ws = scene.worldtrack
    ws.region_source, ws.point_cache_all = "ANNOTATION", False
    with bpy.context.temp_override(**ctx):
        assert bpy.ops.worldtrack.create_point_cache() == {"FINISHED"}
    me = bpy.data.objects["Worldtrack Points"].data
    ids = np.empty(len(me.vertices), np.int32)
    me.attributes["track_id"].data.foreach_get("value", ids)
    sure, maybe = _expected(data, t, LASSO)  # annotation space: plain normalised, no aspect squeeze
    assert len(sure) >= 15
    _check(ids, sure, maybe)
    # AUTO (no mask anywhere) falls back to the annotation; before its first key nothing is drawn.
    from worldtrack.operators import common

    ws.region_source = "AUTO"
    _check(common.choose_tracks(bpy.context, clip, data), sure, maybe)
    state = _scene_state()
    scene.frame_set(scene.frame_current - 1)
    with pytest.raises(RuntimeError, match=NO_REGION):
        bpy.ops.worldtrack.create_point_cache()
    assert _scene_state() == state


def test_attach_to_surface_inside_active_mask(scene, tmp_path):
    """The Clip Editor's active mask (Mask mode, no mask chosen in the panel), drawn around the
    moving object: the surface empty follows exactly those tracks."""
    from worldtrack.operators import build

    W, H = 320, 180
    data, clip, t = _setup(scene, tmp_path, W, H)
    moving = np.flatnonzero((np.asarray(data.group) == 0) & np.asarray(data.visible[:, t]))
    xy = np.asarray(data.tracks_2d[moving, t], np.float64)
    hull = cv2.convexHull(xy.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    hull = hull.mean(0) + 1.1 * (hull - hull.mean(0))  # a lasso a little outside the object
    poly_uv = _norm(hull, W, H)
    mask = _new_mask("Object", _mask_coords(poly_uv, W, H))
    ctx = _clip_editor(clip, mask)
    ws = scene.worldtrack
    ws.group = 0
    payload = bpy.data.objects.new("Payload", None)
    scene.collection.objects.link(payload)
    payload.select_set(True)
    with bpy.context.temp_override(**ctx):
        assert bpy.ops.worldtrack.attach_to_surface() == {"FINISHED"}
    surf = bpy.data.objects["Worldtrack Surface"]
    scene.frame_set(scene.frame_current)  # evaluate the new keys
    sure, maybe = _expected(data, t, poly_uv, group=0)
    assert not maybe and sure == set(moving.tolist())
    assert surf["worldtrack_tracks"] == len(sure)
    X = np.asarray(data.tracks_3d[sorted(sure), t], np.float64)
    centre = np.median(X[np.isfinite(X).all(1)], axis=0)
    assert np.allclose(np.array(surf.matrix_world.translation), build.local_to_world(scene, centre[None])[0],
                       atol=1e-4)
    assert payload.parent == surf


def test_animated_mask_read_at_current_frame(scene, tmp_path):
    """A shape-keyed mask (keys at two frames) is read as Blender evaluates it at the current
    frame: at each key, and interpolated in between."""
    from worldtrack.operators import build, common

    W, H = 320, 180
    data, clip, t = _setup(scene, tmp_path, W, H)
    f0 = build.frame_map(data, clip).scene_frame0
    left = np.array([(0.05, 0.1), (0.45, 0.1), (0.45, 0.9), (0.05, 0.9)])
    right = left + [0.5, 0.0]
    mask = _new_mask("Moving", _mask_coords(left, W, H))
    for p in mask.layers[0].splines[0].points:
        p.select = True  # shape keys are inserted for layers with selected points
    ctx = _clip_editor(clip, mask)
    for f, shape in ((f0 + 1, left), (f0 + 5, right)):
        scene.frame_set(f)
        for p, c in zip(mask.layers[0].splines[0].points, _mask_coords(shape, W, H)):
            p.co = tuple(c)
        with bpy.context.temp_override(**ctx):
            assert bpy.ops.mask.shape_key_insert() == {"FINISHED"}
    for f, shape in ((f0 + 1, left), (f0 + 5, right), (f0 + 3, 0.5 * (left + right))):
        scene.frame_set(f)
        with bpy.context.temp_override(**ctx):
            got = common.choose_tracks(bpy.context, clip, data)
        sure, maybe = _expected(data, f - f0, shape)
        assert len(sure) >= 10
        _check(got, sure, maybe)


def test_nothing_drawn_is_a_clear_error(scene, tmp_path):
    data, clip, t = _setup(scene, tmp_path)
    ws = scene.worldtrack
    state = _scene_state()
    # No mask, no annotation.
    with pytest.raises(RuntimeError, match=NO_REGION):
        bpy.ops.worldtrack.create_empties()
    # A mask with only an open spline (the one point a new spline starts with).
    m = bpy.data.masks.new("Empty")
    m.layers.new(name="Layer").splines.new()
    ws.region_mask = m
    for source in ("AUTO", "MASK"):
        ws.region_source = source
        with pytest.raises(RuntimeError, match=NO_REGION):
            bpy.ops.worldtrack.create_empties()
    ws.region_source = "ANNOTATION"
    with pytest.raises(RuntimeError, match=NO_REGION):
        bpy.ops.worldtrack.attach_to_surface()
    ws.point_cache_all = False
    with pytest.raises(RuntimeError, match=NO_REGION):
        bpy.ops.worldtrack.create_point_cache()
    assert _scene_state() == state
    assert NO_REGION in clip.worldtrack.last_error
    # A region drawn where no track is visible: a clear message too, and still nothing made.
    ws.region_source = "MASK"
    ws.region_mask = _new_mask("Off", _mask_coords(np.array([(-0.5, -0.5), (-0.1, -0.5), (-0.1, -0.1)]), 320, 180))
    with pytest.raises(RuntimeError, match="No tracks inside the drawn region"):
        bpy.ops.worldtrack.create_empties()
    assert _scene_state() == state


def test_parented_mask_warns(scene, tmp_path):
    from worldtrack.operators import common

    data, clip, t = _setup(scene, tmp_path)
    tr = clip.tracking.tracks.new(name="Anchor", frame=1)
    mask = _new_mask("Parented", _mask_coords(LASSO, 320, 180))
    p = mask.layers[0].splines[0].points[0]
    p.parent.id = clip
    p.parent.parent = clip.tracking.objects[0].name
    p.parent.sub_parent = tr.name
    scene.worldtrack.region_mask = mask
    notes = []
    got = common.choose_tracks(bpy.context, clip, data, notes)
    assert len(got) > 0 and any("parented" in n for n in notes)


def test_panel_shows_region_controls(scene, tmp_path):
    from test_register import _draw_all

    _setup(scene, tmp_path)
    props = [c[1][1] for c in _draw_all(bpy.context) if c[0] == "prop"]
    assert "region_source" in props and "region_mask" in props and "radius" not in props
    scene.worldtrack.region_source = "ANNOTATION"
    props = [c[1][1] for c in _draw_all(bpy.context) if c[0] == "prop"]
    assert "region_mask" not in props
