"""Resident pages of disk memory maps: drop them from the process once a block is done.

Reading or writing a shared file-backed ``np.memmap`` maps its pages into the process, and they
count towards its resident set until the mapping is closed -- so a scan of a large on-disk array
(the track file's arrays, the tracker's per-clip scratch) grows the resident set to the array's
size. :func:`release_pages` gives them back with ``madvise(MADV_DONTNEED)``: for a *shared*
mapping the data stays in the file / the OS page cache (dirty pages are written back as usual)
and is paged back in on the next access, so nothing is lost; only the process' share goes.

Standard library only (``mmap``), so the light modules (:mod:`engine.trackfile`) and the
tracker (:mod:`engine.track.memory`) can both use it.
"""
from __future__ import annotations

import mmap


def release_pages(a) -> None:
    """Drop the resident pages of the whole mapping behind ``a`` from this process when ``a`` is
    (a view of) a shared file-backed ``np.memmap`` (modes ``r``, ``r+``, ``w+``).

    A no-op for in-RAM arrays, private copy-on-write maps (mode ``c``: dropping their pages
    would lose their changes), closed maps, and where the OS has no ``madvise`` (Windows).
    """
    mm = getattr(a, "_mmap", None)
    if mm is None or getattr(a, "mode", "c") not in ("r", "r+", "w+"):
        return  # not a memory map, or a private copy-on-write one (would lose its changes)
    advise = getattr(mm, "madvise", None)
    flag = getattr(mmap, "MADV_DONTNEED", None)
    if advise is None or flag is None:
        return
    try:
        advise(flag)
    except (OSError, ValueError):  # closed map or an OS that refuses: only a missed saving
        pass
