"""Quality measurements on real images: flat, photographic, blurred, composed, animal."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from genhook.media import Pixels
from genhook.media.procedural import render
from genhook.media.qc import Face, face_confidence, looks_graphic, measure
from genhook.presets import Presets


@pytest.fixture(scope="module")
def astronaut() -> Pixels:
    return np.ascontiguousarray(skdata.astronaut())


def blurred(pixels: Pixels, sigma: float) -> Pixels:
    return np.asarray(cv2.GaussianBlur(pixels, (0, 0), sigma), dtype=np.uint8)


def resized(pixels: Pixels, width: int, height: int) -> Pixels:
    shrink = width < pixels.shape[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(pixels, (width, height), interpolation=method), dtype=np.uint8)


def confident(faces: tuple[Face, ...] | None, above: float = 0.5) -> list[Face]:
    assert faces is not None
    return [f for f in faces if f.confidence > above]


def test_flat_image_has_no_contrast_or_sharpness() -> None:
    """A uniform grey image has contrast 0, sharpness ~0, brightness equal to its level."""
    m = measure(np.full((240, 320, 3), 128, dtype=np.uint8), detect_faces=True)
    assert m.contrast == pytest.approx(0.0, abs=1e-9)
    assert m.sharpness < 1e-6
    assert m.brightness == pytest.approx(128.0)
    assert m.faces == ()


def test_photo_has_high_contrast_and_sharpness(astronaut: Pixels) -> None:
    """The astronaut photograph has contrast > 50 and sharpness > 300."""
    m = measure(astronaut)
    assert m.contrast > 50
    assert m.sharpness > 300
    assert 60 < m.brightness < 200


def test_photo_has_one_confident_face_on_the_face(astronaut: Pixels) -> None:
    """The astronaut has exactly one face above 0.5, boxed over her face (x~177-270, y~67-160)."""
    faces = confident(measure(astronaut, detect_faces=True).faces)
    assert len(faces) == 1
    face = faces[0]
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    assert 200 < cx < 250 and 90 < cy < 140
    assert 60 < face.w < 140 and 60 < face.h < 140
    assert 0.5 < face.confidence <= 1.0


def test_face_boxes_are_in_original_coordinates(astronaut: Pixels) -> None:
    """On a 1600 px copy (searched at 800 px) the face box scales with the image."""
    small = confident(measure(astronaut, detect_faces=True).faces)[0]
    big = confident(measure(resized(astronaut, 1600, 1600), detect_faces=True).faces)[0]
    scale = 1600 / 512
    assert big.x == pytest.approx(small.x * scale, abs=0.15 * big.w)
    assert big.y == pytest.approx(small.y * scale, abs=0.15 * big.h)
    assert big.w == pytest.approx(small.w * scale, rel=0.2)


def test_faces_sorted_by_confidence(astronaut: Pixels) -> None:
    """Two faces side by side (sharp and blurred) come back most confident first."""
    pair = np.ascontiguousarray(np.hstack([blurred(astronaut, 6), astronaut]))
    faces = measure(pair, detect_faces=True).faces
    assert faces is not None and len(faces) >= 2
    confidences = [f.confidence for f in faces]
    assert confidences == sorted(confidences, reverse=True)
    assert faces[0].x > 512  # the sharp copy, on the right, scores higher


def test_blur_lowers_sharpness(astronaut: Pixels) -> None:
    """A Gaussian blur (sigma 6) cuts sharpness to under a tenth and keeps contrast similar."""
    sharp, soft = measure(astronaut), measure(blurred(astronaut, 6))
    assert soft.sharpness < 0.1 * sharp.sharpness
    assert soft.contrast > 0.7 * sharp.contrast


def test_sharpness_measured_at_a_common_scale(astronaut: Pixels) -> None:
    """An image over 1024 px is measured as its 1024 px INTER_AREA copy would be."""
    big = resized(np.tile(astronaut, (4, 4, 1)), 2048, 2048)
    assert measure(big).sharpness == pytest.approx(
        measure(resized(big, 1024, 1024)).sharpness, rel=0.05
    )


@pytest.mark.parametrize(
    ("style", "seed", "size"),
    [("studio_white", 1, (1024, 1024)), ("luxury", 2, (1200, 630)), ("tech", 3, (1080, 1920))],
)
def test_procedural_render_has_no_face(
    presets: Presets, style: str, seed: int, size: tuple[int, int]
) -> None:
    """Procedural renders (shapes and lettering, no people) have no detected face."""
    preset = presets.styles[style]
    pixels = render(
        prompt=f"Deluxe Coffee Beans, {preset.prompt}",
        subject="Deluxe Coffee Beans",
        palette=preset.palette,
        lighting=preset.lighting,
        width=size[0],
        height=size[1],
        seed=seed,
        label=f"procedural render · seed {seed}",
    )
    assert measure(pixels, detect_faces=True).faces == ()


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_cat_and_coffee_have_no_confident_face(name: str) -> None:
    """The cat photo and the coffee cup photo give no face above 0.5."""
    pixels = np.ascontiguousarray(getattr(skdata, name)())
    assert confident(measure(pixels, detect_faces=True).faces) == []


def test_light_lettering_on_dark_is_not_a_face() -> None:
    """A bold light 'e' on a dark ground, which trips the Haar cascade, is discarded."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (600, 300), (20, 30, 60))
    font = ImageFont.load_default(size=160)
    ImageDraw.Draw(image).text((40, 40), "eee", font=font, fill=(250, 250, 250), stroke_width=5)
    assert measure(np.asarray(image).copy(), detect_faces=True).faces == ()


def test_detect_faces_off_gives_none(astronaut: Pixels) -> None:
    """Without detect_faces the result's faces is None, not an empty tuple."""
    assert measure(astronaut).faces is None


@pytest.mark.parametrize(("width", "height"), [(451, 300), (300, 451), (1, 7), (2000, 90)])
def test_sizes_reported_for_non_square_arrays(width: int, height: int) -> None:
    """Width and height are the array's columns and rows."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    m = measure(pixels, detect_faces=True)
    assert (m.width, m.height) == (width, height)


def test_strided_views_are_measured() -> None:
    """A non-contiguous view (a crop or a channel flip) is measured like its copy."""
    photo = np.ascontiguousarray(skdata.coffee())
    view = photo[10:300:2, ::-1, ::-1]
    assert measure(view) == measure(np.ascontiguousarray(view))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 4), dtype=np.uint8),
        np.zeros((10, 10, 3), dtype=np.float32),
        np.zeros((0, 10, 3), dtype=np.uint8),
    ],
)
def test_rejects_non_rgb_arrays(bad: Pixels) -> None:
    """Anything but a non-empty (h, w, 3) uint8 array is a ValueError."""
    with pytest.raises(ValueError):
        measure(bad)


def test_face_confidence_is_monotone_and_bounded() -> None:
    """Confidence rises with the cascade weight, stays in [0, 1], and is 0.5 at weight 4.5."""
    weights = np.linspace(-50.0, 80.0, 500)
    values = [face_confidence(float(w)) for w in weights]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert face_confidence(4.5) == pytest.approx(0.5)
    assert face_confidence(-1000.0) == 0.0


def test_graphic_patches_are_recognised() -> None:
    """Flat and two-tone patches look graphic; a crop of a photographed face does not."""
    face = cv2.cvtColor(skdata.astronaut()[67:160, 177:270], cv2.COLOR_RGB2GRAY)
    two_tone = np.where(np.indices((60, 60)).sum(axis=0) % 20 < 10, 30, 220).astype(np.uint8)
    assert looks_graphic(np.full((40, 40), 90, dtype=np.uint8))
    assert looks_graphic(two_tone)
    assert not looks_graphic(np.asarray(face, dtype=np.uint8))
