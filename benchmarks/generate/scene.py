"""Build a random, animated Blender scene for one clip (deterministic by seed).

World frame: Blender world, z up, metres. Every mesh is built from triangles so that Cycles,
the depsgraph and the ground-truth ray caster see the very same surface, also when deformed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import numpy as np

from . import materials, motion
from .clip import KINDS


@dataclass
class TrackedObject:
    """A mesh object the ground truth follows; ``group`` −1 for static scenery, else k ≥ 0."""

    obj: bpy.types.Object
    group: int
    motion: str  # "static" | "rigid" | "deform"


@dataclass
class BuiltScene:
    scene: bpy.types.Scene
    camera: bpy.types.Object
    objects: list[TrackedObject] = field(default_factory=list)

    @property
    def dynamic_groups(self) -> dict[int, str]:
        return {o.group: o.motion for o in self.objects if o.group >= 0}

    @property
    def group_names(self) -> dict[int, str]:
        return {o.group: o.obj.name for o in self.objects if o.group >= 0}


# ------------------------------------------------------------------------------------ meshes
def _mesh_object(name: str, verts: np.ndarray, tris: np.ndarray, mat) -> bpy.types.Object:
    me = bpy.data.meshes.new(name)
    me.from_pydata(verts.tolist(), [], tris.tolist())
    me.validate()
    me.materials.append(mat)
    for p in me.polygons:
        p.use_smooth = False
    obj = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def box_mesh(sx: float, sy: float, sz: float, z0: float = -0.5) -> tuple[np.ndarray, np.ndarray]:
    """Box of size (sx, sy, sz); its bottom at ``z0 * sz`` (−0.5: centred)."""
    c = np.array([[x, y, z] for z in (0, 1) for y in (-0.5, 0.5) for x in (-0.5, 0.5)], float)
    c[:, 2] += z0
    v = c * [sx, sy, sz]
    q = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    t = [(a, b, c_) for a, b, c_, d in q] + [(a, c_, d) for a, b, c_, d in q]
    return v, np.array(t)


def tube_mesh(radius: float, z0: float, z1: float, seg: int = 24, rings: int = 1
              ) -> tuple[np.ndarray, np.ndarray]:
    """Closed cylinder from z0 to z1 with ``rings`` height segments (for bending)."""
    ang = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    zs = np.linspace(z0, z1, rings + 1)
    ring = np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1)
    v = [np.column_stack([ring, np.full(seg, z)]) for z in zs]
    v = np.concatenate(v + [np.array([[0, 0, z0], [0, 0, z1]])])
    bot, top = len(v) - 2, len(v) - 1
    t = []
    for r in range(rings):
        for i in range(seg):
            a, b = r * seg + i, r * seg + (i + 1) % seg
            t += [(a, b, b + seg), (a, b + seg, a + seg)]
    for i in range(seg):
        t += [(bot, (i + 1) % seg, i), (top, rings * seg + i, rings * seg + (i + 1) % seg)]
    return v, np.array(t)


def sphere_mesh(radius: float, seg: int = 24, rings: int = 12) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(0, np.pi, rings + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    v = [[0, 0, radius]]
    for a in th:
        v += [[radius * np.sin(a) * np.cos(p), radius * np.sin(a) * np.sin(p), radius * np.cos(a)]
              for p in ph]
    v.append([0, 0, -radius])
    v = np.array(v)
    last = len(v) - 1
    t = [(0, 1 + i, 1 + (i + 1) % seg) for i in range(seg)]
    for r in range(rings - 2):
        for i in range(seg):
            a, b = 1 + r * seg + i, 1 + r * seg + (i + 1) % seg
            t += [(a, a + seg, b + seg), (a, b + seg, b)]
    base = 1 + (rings - 2) * seg
    t += [(base + i, last, base + (i + 1) % seg) for i in range(seg)]
    return v, np.array(t)


def _random_solid(rng: np.random.Generator, size: float, on_ground: bool
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Random box/cylinder/sphere of about ``size`` metres; returns verts, tris, half-height."""
    shape = rng.choice(["box", "box", "cylinder", "sphere"])
    if shape == "box":
        s = size * rng.uniform(0.5, 1.2, 3)
        v, t = box_mesh(*s)
        half = s[2] / 2
    elif shape == "cylinder":
        r, h = size * rng.uniform(0.25, 0.5), size * rng.uniform(0.6, 1.4)
        v, t = tube_mesh(r, -h / 2, h / 2, seg=24)
        half = h / 2
    else:
        r = size * rng.uniform(0.3, 0.55)
        v, t = sphere_mesh(r)
        half = r
    bound = float(np.linalg.norm(v, axis=1).max())
    return v, t, (half if on_ground else bound)


# ------------------------------------------------------------------------------------- scene
def _world(rng: np.random.Generator) -> None:
    world = bpy.data.worlds.new("Sky")
    bpy.context.scene.world = world
    world.use_nodes = True
    nt = world.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    tc = nt.nodes.new("ShaderNodeTexCoord")
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    ramp = nt.nodes.new("ShaderNodeValToRGB")
    bg = nt.nodes.new("ShaderNodeBackground")
    out = nt.nodes.new("ShaderNodeOutputWorld")
    nt.links.new(tc.outputs["Generated"], sep.inputs["Vector"])
    nt.links.new(sep.outputs["Z"], ramp.inputs["Fac"])
    hz = rng.uniform(0.75, 0.95)
    ramp.color_ramp.elements[0].color = (hz, hz, min(1.0, hz + 0.05), 1)
    ramp.color_ramp.elements[1].position = 0.6
    ramp.color_ramp.elements[1].color = (0.15, 0.3, rng.uniform(0.6, 0.9), 1)
    nt.links.new(ramp.outputs["Color"], bg.inputs["Color"])
    bg.inputs["Strength"].default_value = float(rng.uniform(0.6, 1.0))
    nt.links.new(bg.outputs["Background"], out.inputs["Surface"])


def _sun(rng: np.random.Generator) -> None:
    light = bpy.data.lights.new("Sun", "SUN")
    light.energy = float(rng.uniform(2.5, 4.5))
    light.angle = np.radians(rng.uniform(0.5, 3.0))
    obj = bpy.data.objects.new("Sun", light)
    bpy.context.scene.collection.objects.link(obj)
    obj.rotation_euler = (np.radians(rng.uniform(25, 55)), 0.0, rng.uniform(-np.pi, np.pi))


def _key_rigid(obj: bpy.types.Object, path: motion.RigidPath, frames: range) -> None:
    obj.rotation_mode = "QUATERNION"
    for i, f in enumerate(frames):
        obj.location = path.location[i].tolist()
        obj.rotation_quaternion = path.quat[i].tolist()
        obj.keyframe_insert("location", frame=f)
        obj.keyframe_insert("rotation_quaternion", frame=f)


def _key_camera(cam: bpy.types.Object, path: motion.CameraPath, frames: range) -> None:
    q = motion.continuous_quats(path.rotation)
    _key_rigid(cam, motion.RigidPath(path.location, q), frames)
    for i, f in enumerate(frames):
        cam.data.lens = float(path.lens[i])
        cam.data.keyframe_insert("lens", frame=f)


def build_scene(kind: str, seed: int, width: int, height: int, n_frames: int, fps: float
                ) -> BuiltScene:
    """Reset Blender to an empty file and build the animated scene for ``kind`` and ``seed``.

    Blender frame number f = frame index t (0-based), matching the PNG names.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown clip kind {kind!r}; choose one of {', '.join(KINDS)}")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.frame_start, sc.frame_end = 0, n_frames - 1
    sc.render.resolution_x, sc.render.resolution_y = width, height
    sc.render.resolution_percentage = 100
    sc.render.pixel_aspect_x = sc.render.pixel_aspect_y = 1.0
    fps_int = max(1, int(round(fps)))
    sc.render.fps, sc.render.fps_base = fps_int, fps_int / fps
    frames = range(0, n_frames)
    times = np.arange(n_frames) / fps
    # Independent streams so that e.g. adding dynamic objects does not move the static set.
    rng_cam, rng_world, rng_props, rng_dyn = (np.random.default_rng([seed, i, 7]) for i in range(4))

    target = np.array([0.0, 0.0, 0.6]) + rng_cam.normal(size=3) * [0.3, 0.3, 0.1]
    cpath = motion.camera_path(rng_cam, kind, times, target)
    cam_data = bpy.data.cameras.new("Camera")
    cam_data.sensor_fit = "AUTO"
    cam_data.sensor_width = 36.0
    cam_data.clip_start, cam_data.clip_end = 0.05, 1000.0
    cam = bpy.data.objects.new("Camera", cam_data)
    sc.collection.objects.link(cam)
    sc.camera = cam
    _key_camera(cam, cpath, frames)

    built = BuiltScene(sc, cam)
    _world(rng_world)
    _sun(rng_world)

    # Ground and walls (static).
    gmat = materials.make_material("Ground", rng_world, str(rng_world.choice(
        ["gravel", "noise", "checker", "brick", "voronoi"])), scale=float(rng_world.uniform(0.4, 1.2)))
    gv = np.array([[-60, -60, 0], [60, -60, 0], [60, 60, 0], [-60, 60, 0]], float)
    ground = _mesh_object("Ground", gv, np.array([[0, 1, 2], [0, 2, 3]]), gmat)
    built.objects.append(TrackedObject(ground, -1, "static"))
    view_dir = target[:2] - cpath.location[len(times) // 2, :2]
    az = np.arctan2(view_dir[1], view_dir[0])
    for w in range(2):
        wa = az + (0 if w == 0 else rng_world.choice([-1, 1]) * np.radians(rng_world.uniform(55, 90)))
        dist = rng_world.uniform(7, 11)
        width_m, h = rng_world.uniform(14, 24), rng_world.uniform(2.5, 6.0)
        v, t = box_mesh(0.3, width_m, h, z0=0.0)
        recipe = str(rng_world.choice(["brick", "flat", "noise", "wave"]))
        wobj = _mesh_object(f"Wall{w}", v, t, materials.make_material(
            f"Wall{w}", rng_world, recipe, scale=float(rng_world.uniform(0.5, 1.5))))
        wobj.location = (target[0] + dist * np.cos(wa), target[1] + dist * np.sin(wa), 0.0)
        wobj.rotation_euler = (0.0, 0.0, wa)
        built.objects.append(TrackedObject(wobj, -1, "static"))

    # Static props, kept away from the camera path.
    n_props = int(rng_props.integers(6, 11))
    placed: list[np.ndarray] = []
    for i in range(n_props):
        size = rng_props.uniform(0.3, 1.5)
        for _ in range(50):
            p = target[:2] + rng_props.uniform(-4.5, 4.5, 2)
            if (np.linalg.norm(cpath.location[:, :2] - p, axis=1).min() > 1.5 + size
                    and all(np.linalg.norm(p - q) > 0.6 + size * 0.5 for q in placed)):
                break
        placed.append(p)
        v, t, half = _random_solid(rng_props, size, on_ground=True)
        obj = _mesh_object(f"Prop{i}", v, t, materials.make_material(
            f"Prop{i}", rng_props, scale=float(rng_props.uniform(1.0, 4.0))))
        obj.location = (p[0], p[1], half)
        obj.rotation_euler = (0.0, 0.0, rng_props.uniform(0, 2 * np.pi))
        built.objects.append(TrackedObject(obj, -1, "static"))

    # Moving rigid objects.
    n_rigid = {"dynamic": int(rng_dyn.integers(2, 6)), "deform": int(rng_dyn.integers(1, 3))}.get(kind, 0)
    group = 0
    for i in range(n_rigid):
        near = i == 0
        size = rng_dyn.uniform(0.6, 1.0) if near else rng_dyn.uniform(0.35, 1.0)
        v, t, bound = _random_solid(rng_dyn, size, on_ground=False)
        obj = _mesh_object(f"Mover{group}", v, t, materials.make_material(
            f"Mover{group}", rng_dyn, str(rng_dyn.choice(
                ["noise", "voronoi", "checker", "brick", "wave"])), scale=float(rng_dyn.uniform(2, 5))))
        _key_rigid(obj, motion.crossing_path(rng_dyn, times, cpath.location, target, bound, near),
                   frames)
        built.objects.append(TrackedObject(obj, group, "rigid"))
        group += 1
    if kind == "deform":
        built.objects.append(TrackedObject(
            _deforming_tube(rng_dyn, times, frames, cpath, target), group, "deform"))
    return built


def _deforming_tube(rng: np.random.Generator, times: np.ndarray, frames: range,
                    cpath: motion.CameraPath, target: np.ndarray) -> bpy.types.Object:
    """A textured tube standing on the ground, bending and twisting (modifier-driven), drifting."""
    radius, h = rng.uniform(0.3, 0.45), rng.uniform(1.5, 2.2)
    v, t = tube_mesh(radius, 0.0, h, seg=24, rings=16)
    mat = materials.make_material("Deformer", rng, str(rng.choice(["checker", "noise", "brick"])),
                                  coords="Generated", scale=float(rng.uniform(3, 6)))
    obj = _mesh_object("Deformer", v, t, mat)
    c0 = cpath.location[len(times) // 2]
    start = c0 + rng.uniform(0.45, 0.6) * (target - c0)
    start[2] = 0.0
    bend = obj.modifiers.new("Bend", "SIMPLE_DEFORM")
    bend.deform_method, bend.deform_axis = "BEND", "X"
    twist = obj.modifiers.new("Twist", "SIMPLE_DEFORM")
    twist.deform_method, twist.deform_axis = "TWIST", "Z"
    a_b, f_b, p_b = np.radians(rng.uniform(40, 90)), rng.uniform(0.4, 1.0), rng.uniform(0, 6.3)
    a_t, f_t, p_t = np.radians(rng.uniform(30, 90)), rng.uniform(0.3, 0.9), rng.uniform(0, 6.3)
    for i, f in enumerate(frames):
        bend.angle = float(a_b * np.sin(2 * np.pi * f_b * times[i] + p_b))
        twist.angle = float(a_t * np.sin(2 * np.pi * f_t * times[i] + p_t))
        obj.keyframe_insert('modifiers["Bend"].angle', frame=f)
        obj.keyframe_insert('modifiers["Twist"].angle', frame=f)
    _key_rigid(obj, motion.slow_path(rng, times, start), frames)
    return obj
