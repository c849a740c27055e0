"""SpineConfig: mrcnn's Config plus the one spine-specific input setting.

NEIGHBOUR_CHANNELS chooses what the network's three input channels hold for a sagittal slice:
- False: the slice itself, repeated (an ordinary grey image, as Matterport's COCO model sees).
- True: (slice above, slice, slice below) in (R, G, B), a "2.5D" input. The lateral partial
  bodies are the hard cases on a single slice (a small blur at the edge of the stack); beside
  the more central neighbour that still shows the whole body they are easy to place.
WINDOW_PERCENTILES sets the intensity window: the volume's 0.5th..99.5th percentiles map to
0..255, one window for the whole volume. spine.model_input.ModelInput turns a volume into
network images from these two settings; training datasets, spine-prepare, spine.pipeline and
the page all call it, so a model always sees at inference what it saw in training.
"""

from __future__ import annotations

from mrcnn.config import Config

# Percentiles of a volume's intensities mapped to black and white in the model input.
WINDOW_PERCENTILES: tuple[float, float] = (0.5, 99.5)


class SpineConfig(Config):
    """Config with NEIGHBOUR_CHANNELS (see the module docstring); TOML key neighbour_channels."""

    NEIGHBOUR_CHANNELS = False


def uses_neighbours(config: Config) -> bool:
    """True if the model behind config expects neighbouring slices in its R and B channels
    (a plain mrcnn Config never does)."""
    return bool(getattr(config, "NEIGHBOUR_CHANNELS", False))
