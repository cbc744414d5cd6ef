"""The procedural renderer: a deterministic, offline, designed composition made from a prompt.

:func:`render` paints, in order: a palette gradient lit by a named lighting setup (radial glow,
vignette, window light or neon glows), decorative geometry (corner blobs, a halo disc or rounded
card, an arc, a dot grid, confetti), a shaded product (bottle, jar, ball, mug or tube: the one the
subject names, else one at random) on a podium with soft shadows standing in for the subject,
the subject's name in large type (the prompt is never printed), and a small honest corner label.
Text is set in faces with wide script coverage and per-glyph fallback; characters no face has
are collected by :func:`glyph_audit` (see :mod:`.fonts`).

Determinism: every random choice comes from a numpy ``Generator`` seeded with a SHA-256 of the
seed, prompt and subject (never Python's salted ``hash``). Per-pixel arithmetic uses only
exactly rounded float32 operations (``+``, ``-``, ``*``, ``/``, ``sqrt``; no ``exp``/``pow``,
whose SIMD versions differ between CPUs), OpenCV's bit-exact ``INTER_LINEAR_EXACT`` upscale,
Pillow's integer drawing, resampling and blur, and FreeType text, so the same arguments give
byte-identical pixels. The same seed, prompt and subject at another size give the same
composition laid out for that aspect ratio.

Speed: the smooth backdrop is computed on a grid four times coarser and upscaled; shapes are
drawn as 3x supersampled masks only over their own bounding boxes; blurred shadows and glows are
drawn small, blurred and scaled up. Measured on a 2-core dev box: about 0.1 s at 1024x1024 and
0.2 s at 2048x2048.
"""

from genhook.media.procedural.compose import render
from genhook.media.procedural.fonts import glyph_audit

__all__ = ["glyph_audit", "render"]
