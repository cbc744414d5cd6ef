"""Memory settings for a process that renders and exports images: a worker.

A worker allocates and frees full-size image buffers all day (a 2048x2048 RGB image is 12 MiB
as an array, 16 MiB in Pillow), from several threads (the job's, the export's, libvips'). With
glibc's defaults a worker exporting social_pack jobs peaked at 434-470 MiB after six of them
(363 the first), because freed buffers stayed resident (measured in ``bench/memory.py``; see
docs/benchmarks.md):

* the *mmap threshold* (the size from which a block gets its own mapping, returned to the
  system when freed) starts at 128 KiB but rises to the size of every mapped block freed, up
  to 32 MiB: after the first image, image buffers come from the heaps, where a freed buffer
  stays resident until what lies above it is freed too. :data:`MMAP_THRESHOLD` fixes it, so
  that numpy's full-size arrays are mapped apart (numpy asks for huge pages for them: they cost
  few page faults) and go back when freed;
* every thread that allocates may get an *arena* of its own (up to 8 per core), each keeping
  its freed memory apart, and which thread lands in which arena changes from run to run: one
  arena (:data:`ARENA_MAX`) made the peak both lower and the same every run;
* Pillow allocates an image in blocks of up to 16 MiB, so each canvas and mask was mapped and
  faulted in anew: in blocks of :data:`PILLOW_BLOCK_SIZE` they come from the heap and are
  reused from one render to the next, and the heap keeps up to :data:`TRIM_THRESHOLD` free at
  its top for that (a fixed mmap threshold would otherwise return every free byte at once,
  and a job took 78,000-92,000 page faults, about 0.3 s of CPU, instead of 10,000-14,000);
* libvips keeps the last 100 operations it ran, their images included (and with them the
  arrays those read), to answer a repeated call at once. A worker never repeats one: its cache
  is turned off;
* libvips runs each pipeline on as many threads as there are cores, each with its own
  buffers, while the export already encodes several presets at once (one thread each, see
  :func:`~genhook.media.export.export_all`) and the other workers want the cores too: one
  thread a pipeline (:data:`VIPS_THREADS`) unless ``VIPS_CONCURRENCY`` says otherwise.

What a job leaves free in the heap after its export (about 30-40 MiB for social_pack) goes
back to the system by :func:`release_free_memory` (glibc's ``malloc_trim``), which the export
node calls when it is done.

:func:`configure_for_rendering` applies the settings; ``genhook worker`` calls it as it starts
(the worker processes of ``genhook serve --workers N`` are ``genhook worker`` processes).
Nothing here changes a pixel or a byte of output.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import cast

log = logging.getLogger("genhook.media")

MMAP_THRESHOLD = 4 * 1024 * 1024
"""Blocks of this size or more (an image plane of 2 megapixels, a float field) are mapped
apart and returned to the system when freed; smaller ones come from the heaps."""
ARENA_MAX = 1
"""Most malloc arenas in the process: every thread shares the one heap."""
VIPS_THREADS = 1
"""Threads per libvips pipeline (when ``VIPS_CONCURRENCY`` is not set)."""

TRIM_THRESHOLD = 64 * 1024 * 1024
"""Free memory at the top of a heap kept for the next allocation rather than returned at once
(:func:`release_free_memory` returns it between jobs)."""
RELEASE_LEAST = 8 * 1024 * 1024
""":func:`release_free_memory` does nothing while the heaps hold less free memory than this."""
PILLOW_BLOCK_SIZE = 1024 * 1024
"""Pillow allocates an image in blocks of at most this many bytes (its default: 16 MiB)."""

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 and later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library, when it is glibc (it has ``mallopt`` and ``malloc_trim``); else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    libc = _glibc()
    function = getattr(libc, "mallinfo2", None) if libc is not None else None
    if function is None:  # glibc before 2.33
        return None
    function.argtypes, function.restype = [], _MallInfo2
    return cast("Callable[[], _MallInfo2]", function)


def configure_for_rendering() -> bool:
    """Apply the settings above to this process; False where glibc's ``mallopt`` is missing
    (another C library: its defaults stay; libvips' and Pillow's settings apply still).
    ``PILLOW_BLOCK_SIZE`` and ``VIPS_CONCURRENCY``, when set, are left as they say."""
    import pyvips
    from PIL import _imaging

    pyvips.cache_set_max(0)
    if not os.environ.get("VIPS_CONCURRENCY", "").strip():
        pyvips.concurrency_set(VIPS_THREADS)
    if not os.environ.get("PILLOW_BLOCK_SIZE", "").strip():
        _imaging.set_block_size(PILLOW_BLOCK_SIZE)
    libc = _glibc()
    if libc is None:
        return False
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_ARENA_MAX, ARENA_MAX),
    )
    done = all([int(libc.mallopt(param, value)) == 1 for param, value in settings])
    if not done:
        log.warning("mallopt refused the worker's memory settings; glibc's defaults stay")
    return done


def release_free_memory(least: int = RELEASE_LEAST) -> bool:
    """Return the free memory of every heap to the system, when there is at least ``least``
    bytes of it (a small job's few free blocks are not worth the ~2 ms); True if it did.
    A no-op but on glibc."""
    libc = _glibc()
    if libc is None:
        return False
    info = _mallinfo2()
    if info is not None and int(info().fordblks) < least:
        return False
    libc.malloc_trim(0)
    return True
