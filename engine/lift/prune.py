"""Rigid groups too small to be an object are dissolved into non-rigid paths.

The segmentation (:mod:`engine.lift.rigid`) finds a group's motion from a sample of the moving
tracks; the tracks that finally follow it are decided later (the lift's assignment, or the
refinement's geometry pass, which first makes static every track it can). A group that ends with
fewer than ``MIN_GROUP_TRACKS`` tracks (and, on dense input, ``MIN_GROUP_FRACTION`` of all
tracks) is not an object: on the benchmark suite every such group (6 of them, 0-10 tracks each)
was made mostly of truly static tracks that the tracker had let drift, and a dense static shot
(static_0, 104,842 tracks) ended with four "moving objects" of 7-18 tracks each whose motions
turn 85-154 degrees. Their tracks become non-rigid (a path at the depth of the surrounding
static surface, the tracker's own 2D), the remaining groups are renumbered 0..k-1 and the
non-rigid group follows them, as the track file's ``group`` expects.
"""
from __future__ import annotations

import numpy as np

#: fewest tracks a rigid group must end with (the segmentation's own minimum,
#: :func:`engine.lift.rigid.find_groups`' ``min_tracks``)
MIN_GROUP_TRACKS = 20
#: ... and this fraction of all tracks, on dense input (a 9x9-pixel patch of a 320x240 frame
#: tracked at every pixel): dense static_0 (no moving object, 104,842 tracks) ended with a
#: "moving object" of exactly 20 drifting background tracks once moving tracks were fitted to
#: the groups robustly (:func:`engine.lift.rigid.fit_to_groups_robust`); the moving objects
#: of dense dynamic_0 keep 2,000-4,000 tracks. Sparse input (the suite's 1,024 queries) is
#: left to ``MIN_GROUP_TRACKS``.
MIN_GROUP_FRACTION = 0.001


def min_group_tracks(n_tracks: int) -> int:
    """Fewest tracks a rigid group of a file of ``n_tracks`` tracks must end with."""
    return max(MIN_GROUP_TRACKS, int(np.ceil(MIN_GROUP_FRACTION * n_tracks)))

_BLOCK = 1 << 20


def group_counts(group, n_min: int = 0) -> np.ndarray:
    """Tracks per id ``k >= 0`` of ``group`` (N,) (read in blocks: it may be a memory map), at
    least ``n_min`` entries."""
    counts = np.zeros(n_min, np.int64)
    for s in range(0, len(group), _BLOCK):
        blk = np.asarray(group[s:s + _BLOCK])
        c = np.bincount(blk[blk >= 0])
        if len(c) > len(counts):
            counts = np.r_[counts, np.zeros(len(c) - len(counts), np.int64)]
        counts[:len(c)] += c
    return counts


def dissolve_small_groups(lift_report: dict, group, lifter, tracks_2d, visible, out_tracks_3d,
                          out_reproj, restore: tuple | None = None,
                          min_tracks: int | None = None) -> np.ndarray:
    """Dissolve the rigid groups of ``lift_report["groups"]`` that fewer than ``min_tracks``
    (default :func:`min_group_tracks` of N) tracks of ``group`` (N,) follow; updates ``group``,
    the report and, for those tracks, ``out_tracks_3d`` / ``out_reproj`` (their non-rigid paths
    from ``tracks_2d`` / ``visible`` through ``lifter.paths``, :class:`engine.lift.Lifter`) in
    place.

    ``restore``: ``(sources, destinations)``, two tuples of arrays (e.g. the tracker's
    ``tracks_2d``, ``visible``, ``confidence`` and the output's) whose rows of those tracks are
    copied back: the refinement had replaced them by the dissolved group's predictions.
    Returns the dissolved tracks' indices (sorted); the report's ``dissolved_groups`` lists the
    groups (old id, tracks, scale). Every group's ``n_tracks`` in the report becomes the count
    of tracks that carry its id in ``group`` (the refinement's final pass makes more tracks
    static after its geometry pass counted them)."""
    groups = lift_report.get("groups", [])
    if not groups:
        return np.zeros(0, np.int64)
    N = len(group)
    if min_tracks is None:
        min_tracks = min_group_tracks(N)
    counts = group_counts(group, max(int(g["id"]) for g in groups) + 1)
    for g in groups:        # the tracks that carry each id in the end
        g["n_tracks"] = int(counts[int(g["id"])])
    rigid = [g for g in groups if g["kind"] == "rigid"]
    small = [g for g in rigid if counts[int(g["id"])] < min_tracks]
    if not small:
        return np.zeros(0, np.int64)
    kept = [g for g in rigid if counts[int(g["id"])] >= min_tracks]
    new_nr = len(kept)
    # kept groups renumbered in order; the dissolved ones, the old non-rigid group (and any id the
    # report does not list) become the non-rigid group
    remap = np.full(len(counts), new_nr, np.int64)
    for i, g in enumerate(kept):
        remap[int(g["id"])] = i
    small_ids = np.array([int(g["id"]) for g in small])
    rows = []
    for s in range(0, N, _BLOCK):
        blk = np.asarray(group[s:s + _BLOCK])
        rows.append(s + np.flatnonzero(np.isin(blk, small_ids)))
        group[s:s + _BLOCK] = np.where(blk >= 0, remap[np.maximum(blk, 0)], blk).astype(np.int32)
    rows = np.concatenate(rows)
    if restore is not None:
        for src, dst in zip(*restore):
            dst[rows] = np.asarray(src[rows])
    lifter.paths(tracks_2d, visible, rows, out_tracks_3d, out_reproj)
    entries = [{"old_id": int(g["id"]), "n_tracks": int(counts[int(g["id"])]),
                "scale": g.get("scale")} for g in small]
    n_nr = int(counts.sum()) - sum(int(counts[int(g["id"])]) for g in kept)
    new_groups = [{**g, "id": i} for i, g in enumerate(kept)]     # (n_tracks set above)
    nr = next((g for g in groups if g["kind"] == "nonrigid"),
              {"kind": "nonrigid", "rule": "depth of surrounding static surface, smoothed"})
    new_groups.append({**nr, "id": new_nr, "n_tracks": n_nr})
    lift_report["groups"] = new_groups
    lift_report["dissolved_groups"] = {
        "rule": f"rigid groups that fewer than {min_tracks} tracks follow become non-rigid "
                "paths (the tracker's 2D)", "groups": entries}
    return rows
