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

import json
import logging
import os
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from mrcnn.atomic import atomic_write
from mrcnn.checkpoints import UnreadableWeightsError, optimizer_state_path

logger = logging.getLogger(__name__)

FORMAT_NAME = "spineseg-by-name-1"

# File names of ImageNet ResNet weights we look for in the caller's weights folder, per
# backbone (mrcnn keeps no folder of its own: an installed package has no repository root).
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
    layer_list = _weighted_layers(model)

    def write(tmp: Path) -> None:
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

    atomic_write(filepath, write)


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
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # not HDF5 (signature not found) or cut short (truncated file)
        raise UnreadableWeightsError(
            f"{path} is not a readable weights file (truncated or corrupt: {exc})") from None
    with f:
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
        try:
            values = [np.asarray(group[name][w]) for w in weight_names]
        except (OSError, RuntimeError, KeyError) as exc:  # damaged inside the HDF5 file
            raise UnreadableWeightsError(
                f"{path} is not a readable weights file (layer {name!r}: {exc})") from None
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


def get_imagenet_weights(backbone: str, weights_dir: str | os.PathLike) -> str:
    """Path of ImageNet-trained ResNet weights for backbone in weights_dir (never downloads).

    Raises FileNotFoundError with instructions when no file is there.
    """
    folder = Path(weights_dir)
    names = IMAGENET_FILES.get(str(backbone), [])
    for name in names:
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(
        f"No ImageNet weights for {backbone} in {folder}. Download "
        f"{names[0] if names else 'a ResNet ImageNet .h5'} (e.g. the Keras ResNet50 'notop' "
        f"file from github.com/fchollet/deep-learning-models/releases) on a machine with "
        f"internet access and copy it to {folder}/; this program never downloads.")


def _extra_state(model: keras.Model) -> list[Any]:
    """Model variables that are not weights: the random-seed states of layers that sample
    (DetectionTargetLayer's ROI subsets), so a resumed run draws what the whole run would."""
    weight_ids = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


def save_training_state(model: keras.Model, filepath: str | os.PathLike,
                        info: dict[str, Any]) -> None:
    """Write the optimizer's state (iteration count, momenta: every optimizer variable but
    the learning rate, which each train() call sets), the layers' seed states and info
    (JSON: epoch, stage) to filepath (.npz, atomic).

    Optimizer slots are keyed by their name, which Keras derives from the model variable they
    follow (fpn_c5p5_kernel_momentum), so they find their variable again in a rebuilt model
    (their path also holds the optimizer's own name, adam_2, which differs per instance).
    """
    arrays: dict[str, np.ndarray] = {"info": np.array(json.dumps(info))}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        for variable in optimizer.variables:
            if variable.name != "learning_rate":
                arrays[f"optimizer/{variable.name}"] = keras.ops.convert_to_numpy(variable)
    for i, variable in enumerate(_extra_state(model)):
        arrays[f"model/{i}/{variable.path}"] = keras.ops.convert_to_numpy(variable)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(filepath, write)


def load_training_state(filepath: str | os.PathLike
                        ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(info, arrays) from save_training_state's file; None (with a warning) when it is
    missing or unreadable, so the caller starts the optimizer afresh."""
    path = Path(filepath)
    if not path.is_file():
        logger.warning("%s not found: the optimizer starts afresh (weights-only resume)",
                       path.name)
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        info = json.loads(str(arrays.pop("info")))
    # A damaged file raises any of OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError;
    # all mean the same here: resume with the weights alone.
    except Exception as exc:
        logger.warning("%s is unreadable (%s): the optimizer starts afresh", path.name, exc)
        return None
    return info, arrays


def restore_training_state(model: keras.Model, arrays: dict[str, np.ndarray]) -> int:
    """Assign a saved optimizer state and seed states to a compiled model (optimizer built
    here for the current trainable variables); returns the optimizer variables restored.

    Raises ValueError when the saved slots do not match the optimizer's (another optimizer,
    other trainable layers): a silent partial restore would be a different run.
    """
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    saved = {k.removeprefix("optimizer/"): v for k, v in arrays.items()
             if k.startswith("optimizer/")}
    slots = [v for v in optimizer.variables if v.name != "learning_rate"]
    current = {v.name: v for v in slots}
    if len(current) != len(slots):
        raise ValueError("optimizer slot names are not unique; cannot match them by name")
    if set(saved) != set(current):
        missing = sorted(set(current) - set(saved))[:3]
        extra = sorted(set(saved) - set(current))[:3]
        raise ValueError(f"saved optimizer state does not match (missing {missing}, "
                         f"unexpected {extra})")
    for key, variable in current.items():
        if tuple(variable.shape) != tuple(saved[key].shape):
            raise ValueError(f"saved optimizer slot {key} has shape {saved[key].shape}, "
                             f"the model {tuple(variable.shape)}")
    for key, variable in current.items():
        variable.assign(saved[key].astype(variable.dtype))
    # Seed states by position: their names get a _1, _2 suffix per model built in a process.
    extra_state = _extra_state(model)
    saved_state = sorted((int(k.split("/")[1]), v) for k, v in arrays.items()
                         if k.startswith("model/"))
    if len(saved_state) == len(extra_state):
        for (_, value), variable in zip(saved_state, extra_state, strict=True):
            if tuple(variable.shape) == tuple(value.shape):
                variable.assign(value.astype(variable.dtype))
    return len(current)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the model's weights at each epoch end to filepath.format(epoch=epoch + 1).

    Written through save_weights (temp file + rename), so a crash never leaves a partial
    checkpoint that find_last() would pick up. With state_info, the optimizer's state goes
    beside it first (optimizer_state_path; info plus the epoch): a kill between the two
    files leaves a sidecar without its weights, which the next save of that epoch replaces.
    """

    def __init__(self, model_to_save: keras.Model, filepath: str,
                 state_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model_to_save = model_to_save
        self.filepath = filepath
        self.state_info = state_info

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        path = self.filepath.format(epoch=epoch + 1)
        if self.state_info is not None:
            save_training_state(self.model_to_save, optimizer_state_path(path),
                                {**self.state_info, "epoch": epoch + 1})
        save_weights(self.model_to_save, path)
        logger.info("saved checkpoint %s", path)
