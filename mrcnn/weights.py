"""Saving and loading weights by layer name, across backends and across model modes.

Keras 3's native `.weights.h5` names layers by class and position, so a checkpoint written by
the training graph would not load into the (differently shaped) inference graph. We write
`.weights.h5` files in the Keras-2 by-name layout that Matterport's mask_rcnn_coco.h5 uses:
root attribute `layer_names`, one group per layer with attribute `weight_names` and one
dataset per weight. Values are plain numpy arrays, so a file written on one backend loads on
any other. The same reader loads Matterport's legacy files (root or `model_weights` group)
and, as a fallback, native Keras 3 files into an identically built model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

logger = logging.getLogger(__name__)

FORMAT_NAME = "spineseg-by-name-1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

# File names of ImageNet ResNet weights we look for under weights/, per backbone.
IMAGENET_FILES = {
    "resnet50": ["resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"],
    "resnet101": ["resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"],
    "resnet18": ["resnet18_imagenet.weights.h5"],
    "resnet34": ["resnet34_imagenet.weights.h5"],
}


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Top-level layers that own weights (a nested model such as rpn_model counts as one)."""
    return [layer for layer in model.layers if layer.weights]


def _weight_names(layer: keras.layers.Layer) -> list[str]:
    """Keras-2 style weight names of a layer, e.g. conv1/kernel:0, rpn_conv_shared/bias:0."""
    if isinstance(layer, keras.Model):
        names = []
        for sub in layer.layers:
            names += [f"{sub.name}/{w.name}:0" for w in sub.weights]
        return names
    return [f"{layer.name}/{w.name}:0" for w in layer.weights]


def save_weights(model: keras.Model, filepath: str | os.PathLike) -> None:
    """Write every weighted layer's weights by layer name (atomic: temp file + rename).

    The file holds numpy arrays only: it loads on any backend and into either mode's graph.
    """
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    layer_list = _weighted_layers(model)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["backend"] = keras.backend.backend()
            f.attrs["keras_version"] = keras.__version__
            f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in layer_list]
            for layer in layer_list:
                group = f.create_group(layer.name)
                names = _weight_names(layer)
                group.attrs["weight_names"] = [n.encode("utf8") for n in names]
                for name, variable in zip(names, layer.weights, strict=True):
                    group.create_dataset(name, data=keras.ops.convert_to_numpy(variable.value))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _decode(values: Any) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def load_weights(
    model: keras.Model,
    filepath: str | os.PathLike,
    by_name: bool = False,
    exclude: list[str] | None = None,
) -> dict[str, list[str]]:
    """Load weights into model, matching layers by name.

    by_name=True (or an exclude list) skips layers missing from the file or the model;
    by_name=False requires every weighted layer of the model to be in the file. Layers in
    exclude are left untouched. A weight whose shape differs raises ValueError naming it.
    Returns {"loaded": [...], "skipped": [...]} layer names (also logged).
    """
    path = Path(filepath)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    exclude = set(exclude or [])
    with h5py.File(path, "r") as f:
        group = f
        if "layer_names" not in f.attrs and "model_weights" in f:
            group = f["model_weights"]
        if "layer_names" not in group.attrs:
            if exclude or by_name:
                raise ValueError(
                    f"{path} is a native Keras 3 weights file: it loads only into the same "
                    "model, without by_name/exclude. Re-save it with MaskRCNN.save_weights.")
            model.load_weights(str(path))
            logger.info("loaded native Keras 3 weights from %s", path)
            return {"loaded": [layer.name for layer in _weighted_layers(model)], "skipped": []}
        return _load_by_name(model, group, path, strict=not (by_name or exclude),
                             exclude=exclude)


def _load_by_name(model: keras.Model, group: Any, path: Path, strict: bool,
                  exclude: set[str]) -> dict[str, list[str]]:
    """Assign each file layer's arrays to the model layer of the same name, in order."""
    by_name = {layer.name: layer for layer in _weighted_layers(model)}
    file_layers = _decode(group.attrs["layer_names"])
    loaded, skipped = [], []
    if strict:
        missing = [name for name in by_name if name not in file_layers]
        if missing:
            raise ValueError(f"{path} lacks weights for layers {missing[:10]}"
                             f"{' ...' if len(missing) > 10 else ''}; use by_name=True")
    for name in file_layers:
        weight_names = _decode(group[name].attrs.get("weight_names", []))
        if not weight_names:
            continue
        if name in exclude or name not in by_name:
            skipped.append(name)
            continue
        layer = by_name[name]
        values = [np.asarray(group[name][w]) for w in weight_names]
        variables = layer.weights
        if len(values) != len(variables):
            raise ValueError(
                f"layer {name!r}: the file has {len(values)} weights, the model "
                f"{len(variables)}; is the file for another architecture?")
        for variable, value, wname in zip(variables, values, weight_names, strict=True):
            if tuple(variable.shape) != tuple(value.shape):
                raise ValueError(
                    f"layer {name!r} weight {wname!r}: shape {tuple(value.shape)} in {path} "
                    f"but {tuple(variable.shape)} in the model (different NUM_CLASSES or "
                    f"backbone? exclude the layer)")
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value.astype(variable.dtype))
        loaded.append(name)
    not_in_file = [name for name in by_name if name not in file_layers]
    logger.info("loaded %d layers from %s; skipped %d (%s); %d model layers not in the file",
                len(loaded), path.name, len(skipped), ", ".join(skipped[:20]), len(not_in_file))
    return {"loaded": loaded, "skipped": skipped}


def get_imagenet_weights(backbone: str = "resnet50", weights_dir: str | os.PathLike | None = None
                         ) -> str:
    """Path of ImageNet-trained ResNet weights under weights/ (never downloads).

    Raises FileNotFoundError with instructions when no file is there.
    """
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    names = IMAGENET_FILES.get(str(backbone), [])
    for name in names:
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(
        f"No ImageNet weights for {backbone} in {folder}. Download "
        f"{names[0] if names else 'a ResNet ImageNet .h5'} (e.g. the Keras ResNet50 'notop' "
        f"file from github.com/fchollet/deep-learning-models/releases) on a machine with "
        f"internet access and copy it to {folder}/; this program never downloads.")


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the model's weights at each epoch end to filepath.format(epoch=epoch + 1).

    Written through save_weights (temp file + rename), so a crash never leaves a partial
    checkpoint that find_last() would pick up.
    """

    def __init__(self, model_to_save: keras.Model, filepath: str) -> None:
        super().__init__()
        self.model_to_save = model_to_save
        self.filepath = filepath

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        path = self.filepath.format(epoch=epoch + 1)
        save_weights(self.model_to_save, path)
        logger.info("saved checkpoint %s", path)
