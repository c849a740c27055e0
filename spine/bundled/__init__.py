"""Files shipped with the package: the demo model, the config presets, the example scan.

In the repository they stay at the top level (weights/, configs/, examples/); pyproject.toml
maps each folder into this package as spine.bundled.weights, .configs and .examples
(setuptools package-dir), so a wheel carries them inside the package and a checkout or an
editable install finds the same folders through the same importlib.resources lookup. Each
folder holds an __init__.py only so that it can be a package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_WEIGHTS = "spineseg_demo.weights.h5"
DEMO_CONFIG = "demo.toml"
PAPER_CONFIG = "paper.toml"


def _folder(name: str) -> Path:
    """The folder of the bundled package spine.bundled.NAME on the file system."""
    root = resources.files(f"{__name__}.{name}")
    if not isinstance(root, Path):  # zipimport: h5py and nibabel need real files
        raise RuntimeError(f"{__name__}.{name} is not on the file system ({root}); install "
                           "the package unzipped (pip does)")
    return root


def weights_dir() -> Path:
    """The bundled weights folder (weights/ in a checkout): the demo model, and where
    spine-train looks for COCO/ImageNet files you copy in yourself (weights/README.md)."""
    return _folder("weights")


def configs_dir() -> Path:
    """The bundled config presets (configs/ in a checkout)."""
    return _folder("configs")


def examples_dir() -> Path:
    """The bundled example scan with its citation (examples/ in a checkout)."""
    return _folder("examples")


def demo_weights() -> Path:
    """The bundled demo model's weights (trained with demo_config())."""
    return weights_dir() / DEMO_WEIGHTS


def demo_config() -> Path:
    """The config the bundled demo model was trained with."""
    return configs_dir() / DEMO_CONFIG


def paper_config() -> Path:
    """The paper's training setup (ResNet-101, 1024 px)."""
    return configs_dir() / PAPER_CONFIG
