"""Platform export: exact sizes, formats, fits, encoder settings and errors, checked by decoding."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
import pyvips
from PIL import Image

from genhook.errors import ErrorCode, GenhookError
from genhook.media.export import Encoded, export, export_all, to_vips
from genhook.presets import PlatformPreset, load_presets

PRESETS = {code: p for code, p in load_presets().platforms.items() if not p.is_video}
CROP = [p for p in PRESETS.values() if p.fit == "crop"]
PAD = [p for p in PRESETS.values() if p.fit == "pad"]
PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG", "avif": "AVIF"}
Array = npt.NDArray[np.uint8]


def gradient(width: int, height: int) -> Array:
    """Red rises left to right, green top to bottom; never near white or black."""
    x = np.linspace(40, 210, width, dtype=np.float32)[None, :]
    y = np.linspace(40, 210, height, dtype=np.float32)[:, None]
    red, green = np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width))
    blue = np.full((height, width), 90, np.float32)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def with_object(pixels: Array, left: int, top: int, size: int = 160) -> Array:
    """A copy of ``pixels`` with a bright red/blue 10x10 checkerboard, blue in its corners."""
    out = pixels.copy()
    yy, xx = np.mgrid[0:size, 0:size]
    checks = ((xx // (size // 10) + yy // (size // 10)) % 2).astype(bool)
    out[top : top + size, left : left + size] = np.where(
        checks[..., None], np.array([255, 30, 30], np.uint8), np.array([30, 60, 255], np.uint8)
    )
    return out


@pytest.fixture(scope="module")
def source() -> Array:
    """1536x1024 (3:2) gradient with an object off-centre, right of middle."""
    return with_object(gradient(1536, 1024), left=1100, top=300)


def decode(encoded: Encoded) -> Image.Image:
    image = Image.open(io.BytesIO(encoded.data))
    image.load()
    return image


def rgb(encoded: Encoded) -> npt.NDArray[np.int16]:
    return np.asarray(decode(encoded).convert("RGB"), dtype=np.int16)


def custom(**fields: object) -> PlatformPreset:
    base: dict[str, object] = {"code": "custom", "label": "Custom", "width": 640, "height": 480}
    return PlatformPreset.model_validate({**base, **fields})


def object_box(pixels: npt.NDArray[np.int16]) -> tuple[int, int] | None:
    """Width and height of the checkerboard's blue squares' bounding box (no other pixel is blue).

    Returns None when there is no blue at all; asserts the box does not touch the image's edge.
    """
    ys, xs = np.nonzero(pixels[..., 2] > 170)
    if not len(xs):
        return None
    height, width = pixels.shape[:2]
    assert 0 < xs.min() <= xs.max() < width - 1 and 0 < ys.min() <= ys.max() < height - 1
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def about(size: tuple[int, int] | None, expected: float) -> bool:
    return size is not None and all(abs(side - expected) <= 3 for side in size)


@pytest.mark.parametrize("preset", list(PRESETS.values()), ids=list(PRESETS))
def test_every_shipped_preset_decodes_to_its_exact_size_and_format(
    source: Array, preset: PlatformPreset
) -> None:
    """Every shipped preset's output decodes as its format, at its exact size, 8-bit RGB."""
    encoded = export(to_vips(source), preset)
    assert (encoded.width, encoded.height) == (preset.width, preset.height)
    assert encoded.format == preset.format
    assert encoded.media_type == preset.media_type
    image = decode(encoded)
    assert image.format == PIL_FORMAT[preset.format]
    assert image.size == (preset.width, preset.height)
    assert image.mode == "RGB"
    assert image.getbands() == ("R", "G", "B")
    vips = pyvips.Image.new_from_buffer(encoded.data, "")
    assert (vips.width, vips.height, vips.bands, vips.format) == (
        preset.width,
        preset.height,
        3,
        "uchar",
    )
    assert vips.interpretation == "srgb"


def test_every_shipped_preset_strips_metadata() -> None:
    """EXIF and ICC metadata of a source do not reach any output."""
    exif = Image.Exif()
    exif[0x010F] = "genhook-test-camera"  # Make
    buffer = io.BytesIO()
    Image.fromarray(gradient(600, 400)).save(buffer, "JPEG", exif=exif)
    source = pyvips.Image.new_from_buffer(buffer.getvalue(), "")
    assert "exif-data" in source.get_fields()
    for encoded in export_all(source, list(PRESETS.values())):
        info = decode(encoded).info
        assert "exif" not in info and "icc_profile" not in info and "xmp" not in info
        assert b"genhook-test-camera" not in encoded.data


@pytest.mark.parametrize("preset", PAD, ids=[p.code for p in PAD])
def test_pad_presets_letterbox_a_wider_source_on_the_background(
    source: Array, preset: PlatformPreset
) -> None:
    """A 3:2 source in a shipped pad preset gets background bands above and below, none beside."""
    pixels = rgb(export(to_vips(source), preset))
    background = np.array([int(preset.background[i : i + 2], 16) for i in (1, 3, 5)])
    content = round(preset.width * 1024 / 1536)
    band = (preset.height - content) // 2
    assert band > 100
    for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
        assert np.abs(corner - background).max() <= 3
    top, bottom = pixels[: band - 4], pixels[-(band - 4) :]
    assert np.abs(top - background).max() <= 6 and np.abs(bottom - background).max() <= 6
    middle = pixels[preset.height // 2]
    assert np.abs(middle[0] - background).max() > 40  # the image reaches the left edge
    assert np.abs(middle[-1] - background).max() > 40  # and the right edge


def test_pad_uses_the_preset_background_colour_beside_a_narrower_image(source: Array) -> None:
    """Pad into a wider box: exact #ff8000 side bands (PNG is lossless), whole image between."""
    preset = custom(width=800, height=400, fit="pad", format="png", background="#ff8000")
    pixels = rgb(export(to_vips(source), preset))
    assert pixels.shape == (400, 800, 3)
    side = (800 - 600) // 2
    assert (pixels[:, : side - 1] == [255, 128, 0]).all()
    assert (pixels[:, -(side - 1) :] == [255, 128, 0]).all()
    inner = pixels[:, side + 1 : -side - 1]
    assert not (inner == [255, 128, 0]).all(axis=-1).any()
    assert about(object_box(pixels), 160 * 400 / 1024)  # the whole object, scaled


@pytest.mark.parametrize("preset", CROP, ids=[p.code for p in CROP])
def test_crop_presets_fill_the_frame_without_borders(source: Array, preset: PlatformPreset) -> None:
    """Crop presets have no fill: each edge follows the source gradient, none is a flat band."""
    pixels = rgb(export(to_vips(source), preset))
    assert pixels.shape == (preset.height, preset.width, 3)
    for row in (pixels[1], pixels[-2]):  # red rises left to right along every row
        assert row[-1, 0] - row[0, 0] > 40
    for column in (pixels[:, 1], pixels[:, -2]):  # green rises top to bottom down every column
        assert column[-1, 1] - column[0, 1] > 20
    corners = np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    assert (corners < 235).all() and (corners > 20).any(axis=-1).all()


def test_smart_crop_keeps_an_off_centre_object() -> None:
    """The attention crop follows a detailed object that a centre crop would cut off."""
    plain = np.full((1024, 1536, 3), 120, np.uint8)
    pixels = with_object(plain, left=1340, top=420, size=180)
    preset = PRESETS["instagram_feed"]  # 1080x1080: a third of the resized width is cut
    assert about(object_box(rgb(export(to_vips(pixels), preset))), 180 * 1080 / 1024)
    centre = to_vips(pixels).thumbnail_image(1080, height=1080, crop="centre")
    assert object_box(np.asarray(centre.numpy(), dtype=np.int16)) is None  # a centre crop loses it


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_quality_sets_the_encoded_size(source: Array, fmt: str) -> None:
    """Quality 40 encodes smaller than quality 95, in every lossy format."""
    low = export(to_vips(source), custom(width=512, height=512, format=fmt, quality=40))
    high = export(to_vips(source), custom(width=512, height=512, format=fmt, quality=95))
    assert len(low.data) < len(high.data)


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_smaller_sources_are_upscaled_to_the_exact_size(fit: str) -> None:
    """A 1024x1024 source fills a 2048x2048 preset (crop or pad): upscaled, not padded."""
    pixels = with_object(gradient(1024, 1024), left=600, top=200)
    preset = PRESETS["shopify_product"].model_copy(update={"fit": fit})
    out = rgb(export(to_vips(pixels), preset))
    assert out.shape == (2048, 2048, 3)
    corners = np.stack([out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]])
    assert (corners < 235).all()  # no white padding
    assert about(object_box(out), 2 * 160)  # the object, doubled in size


def test_export_all_matches_export_for_every_preset(source: Array) -> None:
    """export_all returns, in order, byte-identical results to export per preset."""
    presets = list(PRESETS.values())
    one_by_one = [export(to_vips(source), p) for p in presets]
    assert export_all(to_vips(source), presets) == one_by_one
    assert export_all(to_vips(source), presets, workers=1) == one_by_one
    assert export_all(to_vips(source), []) == []


def test_export_all_of_a_lazy_source_matches_export() -> None:
    """A file-backed (lazy) source gives the same bytes through export_all as through export."""
    buffer = io.BytesIO()
    Image.fromarray(gradient(900, 600)).save(buffer, "PNG")
    presets = [PRESETS["facebook_link"], PRESETS["og_image"], PRESETS["avatar"]]
    expected = [export(pyvips.Image.new_from_buffer(buffer.getvalue(), ""), p) for p in presets]
    lazy = pyvips.Image.new_from_buffer(buffer.getvalue(), "")
    assert export_all(lazy, presets) == expected


def test_alpha_and_grey_sources_become_three_band_srgb() -> None:
    """An RGBA source is flattened onto the background and a grey one becomes RGB."""
    rgba = np.zeros((100, 200, 4), np.uint8)  # fully transparent
    preset = custom(width=100, height=50, format="png", background="#336699")
    flattened = rgb(export(pyvips.Image.new_from_array(rgba), preset))
    assert (flattened == [0x33, 0x66, 0x99]).all()
    grey = pyvips.Image.new_from_array(np.full((100, 200), 77, np.uint8))
    out = decode(export(grey, preset))
    assert out.mode == "RGB"
    assert (np.asarray(out) == 77).all()


def truncated_jpeg() -> pyvips.Image:
    buffer = io.BytesIO()
    Image.fromarray(gradient(512, 512)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return pyvips.Image.new_from_buffer(data[: len(data) // 3], "", fail_on="truncated")


def test_a_libvips_failure_surfaces_as_export_failed() -> None:
    """A libvips error (a truncated JPEG source) raises GenhookError export_failed, with cause."""
    preset = PRESETS["avatar"]
    with pytest.raises(GenhookError) as caught:
        export(truncated_jpeg(), preset)
    assert caught.value.code is ErrorCode.EXPORT_FAILED
    assert "avatar" in caught.value.description
    assert isinstance(caught.value.__cause__, pyvips.Error)
    with pytest.raises(GenhookError) as caught:
        export_all(truncated_jpeg(), [preset, PRESETS["og_image"]])
    assert caught.value.code is ErrorCode.EXPORT_FAILED
    assert isinstance(caught.value.__cause__, pyvips.Error)


def test_to_vips_refuses_arrays_that_are_not_rgb_uint8() -> None:
    """to_vips accepts only (height, width, 3) uint8 arrays."""
    with pytest.raises(GenhookError) as caught:
        to_vips(np.zeros((4, 4), np.uint8))
    assert caught.value.code is ErrorCode.EXPORT_FAILED
    with pytest.raises(GenhookError):
        to_vips(np.zeros((4, 4, 3), np.float32))


def test_on_white_presets_snap_a_near_white_backdrop_to_pure_white() -> None:
    """An engine's off-white backdrop (250, 250, 248) around a product becomes exactly 255 in
    an on_white preset, padding included; an ordinary pad preset keeps it as it came."""
    photo = np.full((900, 1200, 3), (250, 250, 248), np.uint8)
    photo[300:600, 450:750] = (40, 90, 160)  # the product
    white = custom(width=800, height=800, fit="pad", format="png", on_white=True)
    plain = custom(width=800, height=800, fit="pad", format="png")
    out, kept = rgb(export(to_vips(photo), white)), rgb(export(to_vips(photo), plain))
    product = np.zeros(out.shape[:2], bool)
    product[298:502, 298:502] = True  # 300..600 x 450..750 scaled by 2/3, centred: 300..500
    assert (out[~product] == 255).all()
    assert (kept[400, 100] == (250, 250, 248)).all()
    assert (out[400, 400] == (40, 90, 160)).all()


def test_on_white_needs_a_white_background() -> None:
    """A preset cannot be on white and pad on another colour."""
    with pytest.raises(ValueError, match="on_white needs background #ffffff"):
        custom(fit="pad", on_white=True, background="#000000")


def test_a_crop_reports_the_part_of_the_source_it_kept() -> None:
    """``Encoded.crop`` is the kept box, as fractions: the output equals that box of the source
    resized, and it holds the off-centre object (the attention point)."""
    source = with_object(gradient(1536, 1024), left=1200, top=400)
    preset = custom(width=512, height=1024, format="png")
    encoded = export(to_vips(source), preset)
    assert encoded.crop is not None
    x0, y0, x1, y1 = encoded.crop
    assert (y0, y1) == (0.0, 1.0) and x1 - x0 == pytest.approx(512 / 1536, abs=1e-3)
    assert x0 * 1536 <= 1200 and x1 * 1536 >= 1360
    cut = source[:, round(x0 * 1536) : round(x1 * 1536)].astype(np.int16)
    assert np.abs(rgb(encoded) - cut).mean() < 2.0
    same_shape = export(to_vips(source), custom(width=768, height=512, format="png"))
    assert same_shape.crop is None
