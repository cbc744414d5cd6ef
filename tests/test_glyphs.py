"""Text in every script a catalogue holds: real glyphs (never .notdef boxes), right-to-left order,
Arabic joining, and a ``missing_glyphs`` QC failure where a character cannot be drawn."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from genhook.backends.base import BackendRegistry
from genhook.backends.procedural import ProceduralBackend
from genhook.engine import Engine
from genhook.media.procedural import glyph_audit, render
from genhook.media.procedural.fonts import FACES, TypeFace, face_for, font, runs, visual
from genhook.presets import Presets
from genhook.sinks import DirectorySink

NAMES = {
    "latin-extended": ["Amélie's corner", "Crème Brûlée", "Æble", "Øl", "Łódź Żółć"],
    "greek": ["Ελληνικό μέλι"],
    "cyrillic": ["Русский чай", "Українська"],
    "arabic": ["مقهى الياسمين"],
    "hebrew": ["שלום עולם"],
    "cjk": ["抹茶ラテ", "한국 찻잔", "繁體中文"],
}
ALL = [name for names in NAMES.values() for name in names]
SIZE = 48
UNDRAWABLE = "\ue000"  # private use: no face maps it


def ink(text: str, size: int = SIZE) -> np.ndarray:
    """``text`` drawn black on white by the renderer's type face, as a boolean ink mask."""
    face = TypeFace(size)
    width = int(face.getlength(text)) + 2 * size
    img = Image.new("RGB", (width, 2 * size), (255, 255, 255))
    face.draw(ImageDraw.Draw(img), (size, 1.4 * size), text, (0, 0, 0))
    return np.asarray(img.convert("L")) < 128


def notdef(face: int, size: int = SIZE) -> np.ndarray:
    """Face ``face``'s .notdef box, as FreeType draws it for a character the face lacks."""
    return np.asarray(font(face, size).getmask(UNDRAWABLE), dtype=np.uint8).reshape(-1)


@pytest.mark.parametrize("name", ALL)
def test_every_character_is_drawn_from_a_face_that_has_it(name: str) -> None:
    """Each character gets a face whose glyph bitmap has ink and is not that face's .notdef."""
    for ch in set(visual(name)) - {" "}:
        face = face_for(ch)
        assert face is not None, f"{ch!r} U+{ord(ch):04X} has no face"
        glyph = np.asarray(font(face, SIZE).getmask(ch), dtype=np.uint8).reshape(-1)
        assert glyph.any(), f"{ch!r} drew no ink"
        box = notdef(face)
        same = glyph.shape == box.shape and np.array_equal(glyph, box)
        assert not same, f"{ch!r} drew {FACES[face]}'s .notdef box"


@pytest.mark.parametrize("name", ALL)
def test_rendered_heading_has_no_missing_glyphs(name: str) -> None:
    """The whole renderer, at three aspect ratios, sets each name with nothing missing."""
    base = {"prompt": "a product", "palette": ["#f2e3d5", "#d9a441"], "lighting": "softbox"}
    for width, height in ((320, 320), (480, 270), (270, 480)):
        with glyph_audit() as missing:
            render(subject=name, width=width, height=height, seed=3, **base)
        assert missing == set(), (width, height)


def test_undrawable_character_is_recorded_and_leaves_no_box() -> None:
    """A private-use character is reported missing and drawn as nothing (a gap), not a box."""
    with glyph_audit() as missing:
        drawn = ink(f"A{UNDRAWABLE}B")
    assert missing == {UNDRAWABLE}
    assert runs(f"A{UNDRAWABLE}B") == ((0, "A"), (None, UNDRAWABLE), (0, "B"))
    columns = np.nonzero(drawn.any(axis=0))[0]
    gaps = np.diff(columns)
    assert gaps.max() > 0.3 * SIZE, "a blank gap where the character would be"
    assert np.count_nonzero(drawn) < 1.2 * np.count_nonzero(ink("AB")), "no box drawn"


def test_hebrew_runs_right_to_left() -> None:
    """The first letter of a Hebrew word is drawn rightmost: the word's right end is its glyph."""
    word = "שלום"
    assert visual(word) == word[::-1]
    drawn = ink(word)
    first = ink(word[0])
    cols_word = np.nonzero(drawn.any(axis=0))[0]
    cols_first = np.nonzero(first.any(axis=0))[0]
    span = cols_first.max() - cols_first.min() + 1
    right = drawn[:, cols_word.max() - span + 1 : cols_word.max() + 1]
    alone = first[:, cols_first.min() : cols_first.max() + 1]
    assert np.mean(right == alone) > 0.98


def test_mixed_direction_keeps_latin_left_to_right() -> None:
    """Latin inside a Hebrew name keeps its own order; the Hebrew around it is reversed."""
    assert visual("קפה Roma") == "Roma הפק"


def test_arabic_letters_join() -> None:
    """Arabic is shaped: ``سلم`` (three joining letters, no dots) is one connected stroke, where
    its isolated letters set side by side would be three."""
    joined = ink("سلم").astype(np.uint8)
    isolated = ink("\ufeb1\ufedd\ufee1").astype(np.uint8)  # the isolated forms
    count = cv2.connectedComponents(joined, connectivity=8)[0] - 1
    apart = cv2.connectedComponents(isolated, connectivity=8)[0] - 1
    assert count == 1 and apart == 3
    assert visual("سلم")[0] == "\ufee2", "the final meem is drawn leftmost"


TEMPLATE = textwrap.dedent(
    """\
    id: glyphs
    input:
      required: [name]
      properties:
        name: {{type: string}}
    nodes:
      image:
        kind: generate
        with:
          prompt: "product photo of ${{input.name}}"
          subject: ${{input.name}}
          width: 320
          height: 320
      qc:
        kind: quality_check
        with:
          result: ${{image.result}}
          max_retries: 1
          on_fail: {on_fail}
      export:
        kind: export
        with:
          image: ${{qc.image}}
          platforms: avatar
    outputs:
      assets:
        - ${{export.assets}}
    """
)


def run(tmp_path: Path, presets: Presets, name: str, on_fail: str) -> dict[str, Any]:
    wf_dir = tmp_path / "wf"
    wf_dir.mkdir()
    (wf_dir / "glyphs.yaml").write_text(TEMPLATE.format(on_fail=on_fail), encoding="utf-8")
    backends = BackendRegistry()
    backends.register(ProceduralBackend())
    engine = Engine.load(wf_dir, presets=presets, backends=backends)
    outcome = engine.execute(engine.workflow("glyphs"), {"name": name}, DirectorySink(tmp_path))
    return outcome.payload.to_json()


def test_missing_glyph_fails_the_job_under_fail_policy(tmp_path: Path, presets: Presets) -> None:
    """A name with an undrawable character never ends ``success`` silently: with on_fail: fail
    the job fails with quality_check_failed naming the character."""
    payload = run(tmp_path, presets, f"Shop {UNDRAWABLE} Nord", "fail")
    assert payload["status"] == "failed"
    assert payload["error"]["error_code"] == "quality_check_failed"
    assert "missing_glyphs" in payload["error"]["error_description"]
    assert "U+E000" in payload["error"]["error_description"]


def test_missing_glyph_is_a_quality_warning(tmp_path: Path, presets: Presets) -> None:
    """With deliver_with_warning the image is delivered and the warning names the character."""
    payload = run(tmp_path, presets, f"Øl {UNDRAWABLE}", "deliver_with_warning")
    assert payload["status"] == "success"
    (check,) = payload["quality_warning"]["failed_checks"]
    assert check["check"] == "missing_glyphs"
    assert check["characters"] == [UNDRAWABLE]
    assert check["measured"] == 1 and check["threshold"] == 0
    assert payload["metadata"]["generations"] == 1, "no retry spent on what a retry cannot fix"


def test_drawable_names_pass_quality(tmp_path: Path, presets: Presets) -> None:
    """Names in every tested script go through the same workflow with no warning."""
    payload = run(tmp_path, presets, "Crème Brûlée 抹茶 שלום مقهى", "fail")
    assert payload["status"] == "success" and payload["quality_warning"] is None
