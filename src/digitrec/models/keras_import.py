"""Importing the notebook's Keras 3 model: a ``.keras`` zip read with h5py (no TensorFlow), mapped onto ``seed``.

The reference notebook saves ``Sequential([Conv2D(32, 3, relu), MaxPooling2D(2), Conv2D(64, 3,
relu), MaxPooling2D(2), Flatten(), Dense(128, relu), Dense(10, softmax)])``; that stack (any
filter and unit counts) becomes the registered ``seed`` architecture. Keras keeps images
channels-last: convolution kernels are (H, W, in, out) and ``Flatten`` walks (H, W, C), so the
kernels are transposed and the first dense layer's rows reordered for this channels-first
model. The notebook scales pixels by 1/255 only, so the file stores an identity normalisation.
Nothing in the archive is unpickled or run: only ``config.json`` (JSON) and the weight arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from digitrec.data.preprocess import Normalization
from digitrec.errors import ConfigError, ModelFileError
from digitrec.models.checkpoint import save_model
from digitrec.models.registry import create_model

__all__ = ["import_keras", "keras_layers"]

_LAYOUT = ("Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense")  # the notebook's stack
_MAX_ARCHIVE_BYTES = 256 * 1024 * 1024  # refuse absurd archives before reading them


def _refuse(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")


def keras_layers(config: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The layers of a Keras ``Sequential`` config that the notebook's stack is made of; one clear error otherwise."""
    if config.get("class_name") != "Sequential":
        raise _refuse(path, f"a {config.get('class_name')!r} model; only a Sequential stack imports")
    layers = [layer for layer in config.get("config", {}).get("layers", []) if layer.get("class_name") != "InputLayer"]
    kinds = tuple(layer.get("class_name") for layer in layers)
    unsupported = sorted({k for k in kinds if k not in _LAYOUT})
    if unsupported:
        raise _refuse(path, f"unsupported layer(s) {', '.join(map(str, unsupported))} (supported: the notebook's "
                      "Conv2D, MaxPooling2D, Flatten and Dense)")
    if kinds != _LAYOUT:
        raise _refuse(path, f"layers {' -> '.join(kinds)} are not the notebook's stack ({' -> '.join(_LAYOUT)})")
    for layer in layers:
        c, kind = layer.get("config", {}), layer["class_name"]
        if kind == "Conv2D" and (list(c.get("kernel_size", [])) != [3, 3] or list(c.get("strides", [1, 1])) != [1, 1]
                                 or c.get("padding") != "valid" or c.get("activation") != "relu"
                                 or c.get("data_format", "channels_last") != "channels_last"):
            raise _refuse(path, f"{c.get('name')}: only 3x3, stride 1, valid, ReLU convolutions import")
        if kind == "MaxPooling2D" and list(c.get("pool_size", [])) != [2, 2]:
            raise _refuse(path, f"{c.get('name')}: only 2x2 max pooling imports")
        if kind == "Dense" and c.get("activation") not in ("relu", "softmax", "linear"):
            raise _refuse(path, f"{c.get('name')}: activation {c.get('activation')!r} does not import")
    if layers[5]["config"].get("activation") != "relu" or layers[6]["config"].get("activation") not in ("softmax",
                                                                                                         "linear"):
        raise _refuse(path, "the hidden dense layer must use ReLU and the last softmax (or no activation)")
    return layers


def _weights(h5: Any, name: str, shapes: list[tuple[int, ...]], path: Path) -> list[np.ndarray]:
    try:
        arrays = [np.asarray(h5[f"layers/{name}/vars/{i}"], dtype=np.float32) for i in range(len(shapes))]
    except KeyError:
        raise _refuse(path, f"the weights of layer {name!r} are missing") from None
    for array, shape in zip(arrays, shapes):
        if array.shape != shape:
            raise _refuse(path, f"layer {name!r} has weights of shape {array.shape}, expected {shape}")
    return arrays


def import_keras(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Convert the notebook's saved Keras 3 model (``.keras``) into a digitrec model file at ``out``."""
    try:
        import h5py
    except ImportError:
        raise ConfigError("importing Keras files needs h5py: pip install 'digitrec[keras]'") from None
    source = Path(path)
    try:
        if source.stat().st_size > _MAX_ARCHIVE_BYTES:
            raise _refuse(source, "too large for the notebook's model")
        blob = source.read_bytes()
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5")
    except FileNotFoundError:
        raise ModelFileError(f"{source}: no such file") from None
    except zipfile.BadZipFile:
        raise _refuse(source, "not a Keras 3 .keras file (not a zip archive)") from None
    except KeyError as exc:
        raise _refuse(source, f"not a Keras 3 .keras file ({exc.args[0]})") from None
    except (ValueError, OSError) as exc:
        raise _refuse(source, f"cannot read the archive ({exc})") from None
    layers = keras_layers(config, source)
    conv1, conv2, dense1, dense2 = (layers[i]["config"] for i in (0, 2, 5, 6))
    first = next((layer for layer in config["config"]["layers"] if layer.get("class_name") == "InputLayer"), None)
    shape = (first or {}).get("config", {}).get("batch_shape") or layers[0].get("build_config", {}).get("input_shape")
    if not shape or len(shape) != 4 or shape[1] != shape[2]:
        raise _refuse(source, f"input shape {shape} is not a square channels-last image")
    size, channels = int(shape[1]), int(shape[3])
    side = ((size - 2) // 2 - 2) // 2  # after two valid 3x3 convolutions, each pooled by 2
    c1, c2, hidden, classes = (int(conv1["filters"]), int(conv2["filters"]), int(dense1["units"]),
                               int(dense2["units"]))
    if classes != 10:
        raise _refuse(source, f"the last layer has {classes} units; a digit model has 10")
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            k1, b1 = _weights(h5, conv1["name"], [(3, 3, channels, c1), (c1,)], source)
            k2, b2 = _weights(h5, conv2["name"], [(3, 3, c1, c2), (c2,)], source)
            w3, b3 = _weights(h5, dense1["name"], [(side * side * c2, hidden), (hidden,)], source)
            w4, b4 = _weights(h5, dense2["name"], [(hidden, classes), (classes,)], source)
    except OSError as exc:
        raise _refuse(source, f"truncated or corrupt weights file ({exc})") from None
    # Keras's Flatten walks (H, W, C); this model's walks (C, H, W): reorder the dense rows to match.
    w3 = w3.reshape(side, side, c2, hidden).transpose(2, 0, 1, 3).reshape(-1, hidden)
    model_config = {"in_channels": channels, "image_size": size, "conv1_channels": c1, "conv2_channels": c2,
                    "hidden": hidden, "num_classes": classes}
    model = create_model("seed", model_config)
    state = {
        "features.0.weight": k1.transpose(3, 2, 0, 1), "features.0.bias": b1,  # (H, W, in, out) -> (out, in, H, W)
        "features.3.weight": k2.transpose(3, 2, 0, 1), "features.3.bias": b2,
        "classifier.0.weight": w3.T, "classifier.0.bias": b3,  # (in, out) -> (out, in)
        "classifier.2.weight": w4.T, "classifier.2.bias": b4,
    }
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    extra = {"imported_from": {"format": "keras", "file": source.name, "sha256": hashlib.sha256(blob).hexdigest()}}
    return save_model(out, model.eval(), "seed", model_config, normalization=Normalization(mean=0.0, std=1.0),
                      extra=extra)
