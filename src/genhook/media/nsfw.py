"""The optional NSFW detector: NudeNet's ONNX model, as its package ships it (no download).

``pip install genhook[nsfw]`` installs ``nudenet`` (with ``onnxruntime``); its wheel carries
the 320n detector (``nudenet/320n.onnx``), which :func:`detector` loads once per process from
the installed package. :func:`detect` returns the exposed-body labels of :data:`NSFW_LABELS`
that the model found, each with its highest score; covered body parts, faces and feet are not
counted. Without the package, :func:`unavailable` says what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any

import numpy as np

from genhook.media import Pixels

INSTALL_HINT = "pip install genhook[nsfw]"
NSFW_LABELS = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
"""NudeNet's labels that make an image unsafe for work (its other labels do not)."""

_lock = threading.Lock()
_detector: Any = None


def unavailable() -> str | None:
    """Why the detector cannot run here (its package is missing), else None."""
    if importlib.util.find_spec("nudenet") is None:
        return f"the nsfw check needs nudenet: {INSTALL_HINT}"
    return None


def detector() -> Any:
    """The process's one ``nudenet.NudeDetector``, loaded at first use from the model file in
    the installed package."""
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                nudenet = importlib.import_module("nudenet")  # untyped

                _detector = nudenet.NudeDetector()
    return _detector


def detect(pixels: Pixels) -> dict[str, float]:
    """The NSFW labels found in ``pixels`` (RGB uint8), each with its highest score (0..1)."""
    bgr = np.ascontiguousarray(pixels[:, :, 2::-1])  # the detector reads OpenCV's BGR order
    found: dict[str, float] = {}
    for item in detector().detect(bgr):
        label, value = str(item.get("class", "")), float(item.get("score", 0.0))
        if label in NSFW_LABELS and value > found.get(label, 0.0):
            found[label] = round(value, 4)
    return found
