"""The named lighting setups, looked up forgivingly and mirrored left-right on request."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from genhook.media.procedural.palette import RGB


@dataclass(frozen=True)
class Light:
    """A lighting setup: how the backdrop is lit and how the hero object is shaded."""

    glow: tuple[float, float]  # glow centre as a fraction of (width, height)
    glow_radius: float  # as a fraction of the longer side
    glow_strength: float  # 0..1, how far the glow pulls the backdrop toward ``tint``
    tint: RGB
    vignette: float  # 0..1 darkening toward the corners
    direction: tuple[float, float, float]  # toward the light: x right, y up, z to the viewer
    ambient: float
    specular: float
    rim: float
    shadow_blur: float  # as a fraction of the hero's height
    shadow_length: float  # horizontal reach of shadows, fraction of the hero's height
    shadow_opacity: float
    window: bool = False
    neon: bool = False


# fmt: off
_LIGHTS: dict[str, Light] = {
    "softbox": Light((0.5, 0.15), 0.75, 0.35, (255, 255, 255), 0.18, (-0.5, 0.6, 0.62),
                     0.42, 0.35, 0.12, 0.10, 0.25, 0.38),
    "golden_hour": Light((0.88, 0.22), 0.85, 0.5, (255, 184, 108), 0.3, (0.85, 0.25, 0.47),
                         0.38, 0.45, 0.3, 0.07, 0.95, 0.42),
    "diffuse": Light((0.5, 0.35), 1.0, 0.18, (255, 255, 255), 0.1, (-0.2, 0.5, 0.84),
                     0.6, 0.12, 0.05, 0.18, 0.12, 0.25),
    "rim": Light((0.5, 0.42), 0.42, 0.35, (255, 246, 228), 0.55, (0.0, 0.25, 0.35),
                 0.22, 0.25, 0.95, 0.08, 0.15, 0.55),
    "hard_key": Light((0.18, 0.12), 0.6, 0.32, (255, 255, 255), 0.22, (-0.72, 0.55, 0.42),
                      0.28, 0.6, 0.08, 0.012, 0.6, 0.45),
    "window": Light((0.2, 0.3), 0.8, 0.25, (240, 246, 255), 0.22, (-0.8, 0.3, 0.52),
                    0.4, 0.3, 0.18, 0.05, 0.7, 0.36, window=True),
    "neon": Light((0.5, 0.5), 0.6, 0.12, (255, 255, 255), 0.5, (0.0, 0.3, 0.6),
                  0.32, 0.5, 0.75, 0.1, 0.2, 0.5, neon=True),
    "daylight": Light((0.5, -0.1), 1.1, 0.3, (255, 252, 238), 0.07, (-0.3, 0.85, 0.43),
                      0.55, 0.25, 0.05, 0.05, 0.3, 0.3),
}
# fmt: on
_DEFAULT_LIGHT = "softbox"


def named_light(name: str, mirror: bool) -> Light:
    """The named setup (unknown names give softbox), mirrored left-right when ``mirror``."""
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    light = _LIGHTS.get(key, _LIGHTS[_DEFAULT_LIGHT])
    if not mirror:
        return light
    (gx, gy), (dx, dy, dz) = light.glow, light.direction
    return replace(light, glow=(1.0 - gx, gy), direction=(-dx, dy, dz))
