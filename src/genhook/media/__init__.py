"""Image work: the in-memory pixel type, procedural rendering, quality measures, export."""

import numpy as np
import numpy.typing as npt

Pixels = npt.NDArray[np.uint8]
"""An image between nodes: a C-contiguous ``(height, width, 3)`` uint8 RGB array."""
