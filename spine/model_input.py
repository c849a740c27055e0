"""The model input: how a volume becomes the images the network is shown. One definition.

ModelInput holds the two settings that define it (spine.config: the intensity window
WINDOW_PERCENTILES, and NEIGHBOUR_CHANNELS) and does the two steps:
- stack(data): float [S, H, W] -> uint8 [S, H, W], one percentile window for the volume;
- image(stack, s): uint8 [H, W, 3] for slice s (grey repeated, or slices s-1, s, s+1).
Training datasets (spine.dataset), spine-prepare, inference (spine.pipeline) and the page
use it; spine-prepare records describe() in split.json and spine-train refuses images made
with a different input than its config's (mismatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spine.config import WINDOW_PERCENTILES, uses_neighbours
from spine.volume import slice_channels, window_percentile


@dataclass(frozen=True)
class ModelInput:
    """What the network's input holds (see the module docstring)."""

    neighbour_channels: bool = False
    percentiles: tuple[float, float] = WINDOW_PERCENTILES

    @classmethod
    def of(cls, config: Any = None) -> ModelInput:
        """The input a model built from config expects (None: a grey-slice model)."""
        return cls(neighbour_channels=config is not None and uses_neighbours(config))

    def stack(self, data: np.ndarray) -> np.ndarray:
        """Intensities float [S, H, W] -> uint8 [S, H, W] with one window for the volume."""
        low, high = self.percentiles
        return window_percentile(data, low, high)

    def image(self, stack: np.ndarray, index: int) -> np.ndarray:
        """The network's image uint8 [H, W, 3] of slice index of a windowed stack [S, H, W]."""
        return slice_channels(stack, index, self.neighbour_channels)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (spine-prepare writes it into split.json as "input")."""
        return {"neighbour_channels": self.neighbour_channels,
                "window_percentiles": list(self.percentiles)}  # fmt: skip

    @classmethod
    def from_description(cls, doc: dict[str, Any]) -> ModelInput:
        """The inverse of describe(); keys a split.json from before they existed lacks take
        the values that split was made with (grey slices, WINDOW_PERCENTILES)."""
        low, high = doc.get("window_percentiles", WINDOW_PERCENTILES)
        return cls(bool(doc.get("neighbour_channels", False)), (float(low), float(high)))

    def mismatch(self, other: ModelInput) -> list[str]:
        """Human-readable differences from other ([] when they define the same input)."""
        out = []
        if self.neighbour_channels != other.neighbour_channels:
            out.append(f"neighbour_channels {str(self.neighbour_channels).lower()} vs "
                       f"{str(other.neighbour_channels).lower()}")  # fmt: skip
        if not np.allclose(self.percentiles, other.percentiles):
            out.append(f"window percentiles {list(self.percentiles)} vs {list(other.percentiles)}")
        return out
