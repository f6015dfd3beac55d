"""Random procedural materials (Cycles shader nodes available in Blender 4.2 and 5.x).

Textures are driven by object-space coordinates (``'Object'``) for rigid objects, so they stick
to moving objects, and by the undeformed ``'Generated'`` coordinates for deforming meshes, so they
stick to the deforming surface. Some recipes are deliberately low-texture.
"""
from __future__ import annotations

import bpy
import numpy as np

RECIPES = ("noise", "voronoi", "checker", "brick", "wave", "flat", "gravel")


def _color(rng: np.random.Generator, sat=(0.1, 0.7), val=(0.08, 0.85)) -> tuple:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return (r, g, b, 1.0)


def _ramp(nt, rng: np.random.Generator, n_stops: int):
    ramp = nt.nodes.new("ShaderNodeValToRGB")
    els = ramp.color_ramp.elements
    pos = np.sort(rng.uniform(0.05, 0.95, n_stops))
    while len(els) < n_stops:
        els.new(0.5)
    for e, p in zip(els, pos):
        e.position = float(p)
        e.color = _color(rng)
    return ramp


def make_material(name: str, rng: np.random.Generator, recipe: str | None = None,
                  coords: str = "Object", scale: float = 1.0) -> bpy.types.Material:
    """A Principled material with a random procedural base colour.

    ``scale`` is the texture frequency per metre (object units); ``coords`` the texture space.
    """
    recipe = recipe or str(rng.choice(RECIPES))
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = float(rng.uniform(0.35, 0.95))
    nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    tc = nt.nodes.new("ShaderNodeTexCoord")
    mapping = nt.nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (scale, scale, scale)
    mapping.inputs["Location"].default_value = tuple(rng.uniform(-50, 50, 3))
    nt.links.new(tc.outputs[coords], mapping.inputs["Vector"])
    vec = mapping.outputs["Vector"]
    base = bsdf.inputs["Base Color"]

    if recipe == "flat":  # low texture: one colour, a barely visible large-scale variation
        noise = nt.nodes.new("ShaderNodeTexNoise")
        noise.inputs["Scale"].default_value = 0.3
        nt.links.new(vec, noise.inputs["Vector"])
        ramp = nt.nodes.new("ShaderNodeValToRGB")
        c = np.array(_color(rng, sat=(0.0, 0.4), val=(0.3, 0.8)))
        ramp.color_ramp.elements[0].color = tuple(np.clip(c * 0.97, 0, 1))
        ramp.color_ramp.elements[1].color = tuple(np.clip(c * 1.03, 0, 1))
        nt.links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], base)
    elif recipe == "noise":
        noise = nt.nodes.new("ShaderNodeTexNoise")
        noise.inputs["Scale"].default_value = float(rng.uniform(2, 8))
        noise.inputs["Detail"].default_value = float(rng.uniform(2, 6))
        nt.links.new(vec, noise.inputs["Vector"])
        ramp = _ramp(nt, rng, 4)
        nt.links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], base)
    elif recipe in ("voronoi", "gravel"):
        vor = nt.nodes.new("ShaderNodeTexVoronoi")
        vor.inputs["Scale"].default_value = float(rng.uniform(3, 10) * (2 if recipe == "gravel" else 1))
        nt.links.new(vec, vor.inputs["Vector"])
        ramp = _ramp(nt, rng, 3)
        nt.links.new(vor.outputs["Distance"], ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], base)
    elif recipe == "checker":
        chk = nt.nodes.new("ShaderNodeTexChecker")
        chk.inputs["Scale"].default_value = float(rng.uniform(2, 6))
        chk.inputs["Color1"].default_value = _color(rng)
        chk.inputs["Color2"].default_value = _color(rng)
        nt.links.new(vec, chk.inputs["Vector"])
        nt.links.new(chk.outputs["Color"], base)
    elif recipe == "brick":
        brick = nt.nodes.new("ShaderNodeTexBrick")
        brick.inputs["Scale"].default_value = float(rng.uniform(2, 5))
        brick.inputs["Color1"].default_value = _color(rng)
        brick.inputs["Color2"].default_value = _color(rng)
        brick.inputs["Mortar"].default_value = _color(rng, sat=(0, 0.2), val=(0.6, 0.9))
        nt.links.new(vec, brick.inputs["Vector"])
        nt.links.new(brick.outputs["Color"], base)
    elif recipe == "wave":
        wave = nt.nodes.new("ShaderNodeTexWave")
        wave.inputs["Scale"].default_value = float(rng.uniform(1, 4))
        wave.inputs["Distortion"].default_value = float(rng.uniform(2, 10))
        wave.inputs["Detail"].default_value = 4.0
        nt.links.new(vec, wave.inputs["Vector"])
        ramp = _ramp(nt, rng, 3)
        nt.links.new(wave.outputs["Fac"], ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], base)
    else:
        raise ValueError(f"unknown material recipe {recipe!r}")
    return mat
