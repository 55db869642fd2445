"""Model registry and architectures. Every model takes its config and returns logits.

Register a new architecture with ``@register_model("name", ConfigClass)``; it then works with
``--arch name`` everywhere, and checkpoints rebuild it from the stored name and config. Digit
models (task ``"digits"``) map (B, 1, 28, 28) images to (B, classes) logits; line readers
(task ``"lines"``) map (B, 1, 32, W) lines of digits to (B, 11, W/4) per-frame CTC logits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from digitrec.data.preprocess import IMAGE_SIZE
from digitrec.errors import ConfigError, first_line

__all__ = [
    "ModelSpec",
    "register_model",
    "list_models",
    "get_model_spec",
    "create_model",
    "check_model_output",
    "check_line_output",
    "TASKS",
    "SeedCNNConfig",
    "SeedCNN",
    "VGGNetConfig",
    "VGGNet",
    "EnsembleConfig",
    "Ensemble",
    "FastCNNConfig",
    "FastCNN",
    "LineCNNConfig",
    "LineCNN",
    "LineCRNNConfig",
    "LineCRNN",
    "LINE_HEIGHT",
    "LINE_STRIDE",
    "LayerInfo",
    "layer_table",
    "example_input_shape",
    "format_summary",
    "count_parameters",
    "model_config_dict",
]

M = TypeVar("M", bound=nn.Module)

TASKS = ("digits", "lines")  # what a registered architecture reads: one 28x28 digit, or a line of digits
LINE_HEIGHT = 32  # height of a line reader's input, pixels (digits are 20 high, as in MNIST)
LINE_STRIDE = 4  # input columns per output frame of a line reader


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its constructor, its config class and a one-line description."""

    name: str
    builder: Callable[[Any], nn.Module]
    config_cls: type
    description: str
    task: str = "digits"  # one of TASKS


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, config_cls: type, description: str = "", task: str = "digits"
) -> Callable[[type[M]], type[M]]:
    """Class decorator that registers an architecture under ``name`` for ``task`` (see TASKS)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; available: {', '.join(TASKS)}")

    def decorator(cls: type[M]) -> type[M]:
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} is already registered")
        doc = description or (cls.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = ModelSpec(name=name, builder=cls, config_cls=config_cls, description=doc, task=task)
        return cls

    return decorator


def list_models(task: str | None = "digits") -> list[str]:
    """Names of the registered architectures for ``task`` (None: all of them)."""
    return sorted(n for n, s in _REGISTRY.items() if task is None or s.task == task)


def get_model_spec(name: str) -> ModelSpec:
    """The registered spec for ``name``; raises :class:`ConfigError` for unknown names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {name!r}; available: {', '.join(list_models(None))}"
        ) from None


def create_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build architecture ``name`` from a (possibly partial) config dict of its config class.

    Raises :class:`ConfigError` for unknown names or fields and for values the architecture
    cannot be built with.
    """
    spec = get_model_spec(name)
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"model config for {name!r} must be a mapping, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = set(config or {}) - fields
    if unknown:
        raise ConfigError(f"unknown config field(s) for {name!r}: {', '.join(sorted(unknown))}")
    try:
        return spec.builder(spec.config_cls(**(config or {})))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot build {name!r} with config {config or {}}: {first_line(exc)}") from exc


def _probe(model: nn.Module, shape: tuple[int, ...], what: str) -> object:
    """``model``'s output for one all-zero input of ``shape`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            return model(torch.zeros(*shape, device=device))
    except (RuntimeError, ValueError, TypeError, StopIteration) as exc:
        raise ConfigError(f"model does not accept {'x'.join(map(str, shape[1:]))} {what} ({first_line(exc)})") from exc
    finally:
        model.train(was_training)


def _check_shape(out: object, expected: tuple[int, ...], what: str) -> None:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model outputs {shape} for one {what}, expected {expected} logits")


def check_model_output(model: nn.Module, num_classes: int = 10) -> None:
    """Raise :class:`ConfigError` unless ``model`` maps a (1, 1, 28, 28) image to (1, num_classes).

    digitrec feeds 28x28 grey images and reads ten digit classes; a model built or stored
    for anything else is refused up front rather than failing (or answering NaN) later.
    """
    _check_shape(_probe(model, (1, 1, IMAGE_SIZE, IMAGE_SIZE), "images"), (1, num_classes), "image")


def check_line_output(model: nn.Module, num_classes: int = 11) -> None:
    """Raise :class:`ConfigError` unless ``model`` maps a (1, 1, 32, 64) line to (1, num_classes, 16).

    A line reader answers one frame of ``num_classes`` logits (the CTC blank and the digits)
    per ``LINE_STRIDE`` input columns.
    """
    width = 16 * LINE_STRIDE
    out = _probe(model, (1, 1, LINE_HEIGHT, width), "lines")
    _check_shape(out, (1, num_classes, width // LINE_STRIDE), "line (frame logits)")


def _flat_size(features: nn.Module, in_channels: int, image_size: int) -> int:
    """Values per image that ``features`` hands to the dense head (one probe image, eval mode)."""
    was_training = features.training
    with torch.no_grad():
        flat = features.eval()(torch.zeros(1, in_channels, image_size, image_size)).numel()
    features.train(was_training)
    return flat


@dataclass(frozen=True)
class SeedCNNConfig:
    """The reference notebook's CNN."""

    in_channels: int = 1  # input image channels (MNIST: grey)
    image_size: int = IMAGE_SIZE  # input side, pixels
    conv1_channels: int = 32  # filters in the first 3x3 convolution
    conv2_channels: int = 64  # filters in the second 3x3 convolution
    hidden: int = 128  # units in the dense hidden layer
    num_classes: int = 10  # output classes (digits 0-9)


@register_model("seed", SeedCNNConfig, "The notebook CNN: 2x(conv3x3+ReLU+maxpool), dense 128, dense 10")
class SeedCNN(nn.Module):
    """Conv(32,3x3)-ReLU-MaxPool-Conv(64,3x3)-ReLU-MaxPool-Flatten-Dense(128)-ReLU-Dense(10).

    Pooling runs before each ReLU: the same function, computed faster.
    """

    def __init__(self, config: SeedCNNConfig) -> None:
        super().__init__()
        self.config = config
        # Pooling before ReLU computes exactly the notebook's relu-then-pool (ReLU is monotonic,
        # so max and ReLU commute, gradients included) with ReLU on 4x fewer values; training
        # gives bit-identical weights and runs faster. Parameter names are unchanged.
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, config.conv1_channels, 3),  # (B, 32, 26, 26)
            nn.MaxPool2d(2),  # (B, 32, 13, 13)
            nn.ReLU(),
            nn.Conv2d(config.conv1_channels, config.conv2_channels, 3),  # (B, 64, 11, 11)
            nn.MaxPool2d(2),  # (B, 64, 5, 5)
            nn.ReLU(),
            nn.Flatten(),  # (B, 1600)
        )
        flat = _flat_size(self.features, config.in_channels, config.image_size)  # 1600, not hard-coded
        self.classifier = nn.Sequential(
            nn.Linear(flat, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.num_classes),  # logits; softmax lives in the loss
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) standardised images -> (B, 10) logits."""
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class VGGNetConfig:
    """A VGG-style CNN with BatchNorm, built for accuracy (about 0.33M parameters at width 32)."""

    in_channels: int = 1  # input image channels (MNIST: grey)
    width: int = 32  # filters in the first block; the second block has 2x, the head 4x
    dropout: float = 0.4  # dropout probability after each block and before the classifier
    num_classes: int = 10  # output classes (digits 0-9)


def _conv_bn(cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding: int = 0) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model("vgg", VGGNetConfig,
                "VGG-style CNN with BatchNorm and dropout: 2 blocks of (3x3, 3x3, 5x5 stride 2), 4x4 head")
class VGGNet(nn.Module):
    """32C3-32C3-32C5S2-64C3-64C3-64C5S2-128C4 (all with BatchNorm+ReLU), dropout, dense 10.

    The stride-2 5x5 convolutions replace max-pooling with a learnt down-sampling; the last
    4x4 convolution acts as a dense layer over the 4x4 map.
    """

    def __init__(self, config: VGGNetConfig) -> None:
        super().__init__()
        if config.width < 1 or not 0.0 <= config.dropout < 1.0:
            raise ValueError("width must be >= 1 and dropout in [0, 1)")
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            *_conv_bn(config.in_channels, w, 3),  # (B, w, 26, 26)
            *_conv_bn(w, w, 3),  # (B, w, 24, 24)
            *_conv_bn(w, w, 5, stride=2, padding=2),  # (B, w, 12, 12)
            nn.Dropout(config.dropout),
            *_conv_bn(w, 2 * w, 3),  # (B, 2w, 10, 10)
            *_conv_bn(2 * w, 2 * w, 3),  # (B, 2w, 8, 8)
            *_conv_bn(2 * w, 2 * w, 5, stride=2, padding=2),  # (B, 2w, 4, 4)
            nn.Dropout(config.dropout),
            *_conv_bn(2 * w, 4 * w, 4),  # (B, 4w, 1, 1)
            nn.Flatten(),  # (B, 4w)
            nn.Dropout(config.dropout),
        )
        self.classifier = nn.Linear(4 * w, config.num_classes)  # logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) standardised images -> (B, 10) logits."""
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class FastCNNConfig:
    """A narrow CNN that down-samples at once: little compute per image, for 99% in seconds."""

    in_channels: int = 1  # input image channels (MNIST: grey)
    image_size: int = IMAGE_SIZE  # input side, pixels
    conv1_channels: int = 16  # filters in the first (stride-2) 5x5 convolution
    conv2_channels: int = 32  # filters in the second 5x5 convolution
    kernel_size: int = 5  # side of both convolution kernels, pixels
    hidden: int = 128  # units in the dense hidden layer
    num_classes: int = 10  # output classes (digits 0-9)


@register_model("fast", FastCNNConfig,
                "Narrow CNN for the fast preset: conv5x5/2+BN, conv5x5+maxpool+BN, dense 128")
class FastCNN(nn.Module):
    """Conv(16,5x5,stride 2)-BN-ReLU-Conv(32,5x5)-MaxPool-BN-ReLU-Flatten-Dense(128)-ReLU-Dense(10).

    The stride-2 first convolution replaces convolution-then-pool: it computes a quarter of
    the outputs instead of discarding three in four, and batch norm runs on the pooled maps.
    Measured on a 2-core Zen 4 (one thread, batch 256), a training step took 15 ms against
    24 ms for conv-BN-pool pairs, at equal or better one-epoch validation accuracy. Batch
    norm lets one-cycle training use a high peak learning rate. About 0.94 M multiply-adds
    per image (the seed CNN: 2.6 M).
    """

    def __init__(self, config: FastCNNConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, k = config.conv1_channels, config.conv2_channels, config.kernel_size
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, c1, k, stride=2, bias=False),  # (B, 16, 12, 12); BN supplies the bias
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, k, bias=False),  # (B, 32, 8, 8)
            nn.MaxPool2d(2),  # (B, 32, 4, 4); pooling first: batch norm on a quarter of the values
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.Flatten(),  # (B, 512)
        )
        flat = _flat_size(self.features, config.in_channels, config.image_size)
        self.classifier = nn.Sequential(
            nn.Linear(flat, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) standardised images -> (B, 10) logits."""
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class LineCNNConfig:
    """A fully convolutional line reader: per-frame digit logits for CTC decoding."""

    in_channels: int = 1  # input image channels (grey)
    width: int = 16  # filters in the first layer; later stages have 2x, 4x and 8x
    dropout: float = 0.2  # dropout probability before the column features and the classifier
    num_classes: int = 11  # frame classes: the CTC blank (index 0), then the digits 0-9


@register_model("line-ctc", LineCNNConfig,
                "Line reader: a CNN over a 32-pixel-high line, one 11-class frame per 4 columns (CTC)",
                task="lines")
class LineCNN(nn.Module):
    """Reads a whole line of digits without cutting it: CTC frame logits from a CNN.

    Convolutions and pooling shrink the 32-pixel height to one row and the width by
    ``LINE_STRIDE``; a 1-D convolution over the frames (about two digits wide in all) gives
    each frame context from its neighbours, so touching and overlapping digits are read
    where they are, with no segmentation.
    """

    def __init__(self, config: LineCNNConfig) -> None:
        super().__init__()
        if config.width < 1 or not 0.0 <= config.dropout < 1.0 or config.num_classes < 2:
            raise ValueError("width must be >= 1, dropout in [0, 1) and num_classes >= 2")
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            *_conv_bn(config.in_channels, w, 3, padding=1), nn.MaxPool2d(2),  # (B, w, 16, W/2)
            *_conv_bn(w, 2 * w, 3, padding=1),
            *_conv_bn(2 * w, 2 * w, 3, padding=1), nn.MaxPool2d(2),  # (B, 2w, 8, W/4)
            *_conv_bn(2 * w, 4 * w, 3, padding=1),
            *_conv_bn(4 * w, 4 * w, 3, padding=1), nn.MaxPool2d((2, 1)),  # (B, 4w, 4, W/4)
            nn.Dropout(config.dropout),
            *_conv_bn(4 * w, 8 * w, (4, 1)),  # (B, 8w, 1, W/4): one feature column per frame
        )
        self.frames = nn.Sequential(
            nn.Conv1d(8 * w, 8 * w, 5, padding=2, bias=False), nn.BatchNorm1d(8 * w), nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Conv1d(8 * w, config.num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 32, W) standardised lines, W a multiple of 4 -> (B, 11, W/4) frame logits."""
        return self.frames(self.features(x).flatten(2))  # (B, 8w, W/4) -> (B, 11, W/4)


@dataclass(frozen=True)
class LineCRNNConfig:
    """A CRNN line reader: convolutions for the strokes, a bidirectional LSTM for the order of digits."""

    in_channels: int = 1  # input image channels (grey)
    width: int = 24  # filters in the first layer; later stages have 2x, 3x and 4x
    hidden: int = 96  # LSTM units per direction
    dropout: float = 0.15  # dropout probability before the LSTM and before the classifier
    num_classes: int = 11  # frame classes: the CTC blank (index 0), then the digits 0-9


@register_model("line-crnn", LineCRNNConfig,
                "Grey line reader: CNN + BiLSTM over a 32-pixel-high line, one 11-class frame per 4 columns (CTC)",
                task="lines")
class LineCRNN(nn.Module):
    """Reads a whole line of digits from the grey picture (Shi et al., 2015, CRNN, made small).

    The convolutions shrink the height to one row and the width by ``LINE_STRIDE``; the LSTM
    runs over the frames in both directions, so each frame knows the strokes around it (a
    separator dot beside a digit, the joint of two touching digits) before it is classified.
    """

    def __init__(self, config: LineCRNNConfig) -> None:
        super().__init__()
        if config.width < 1 or config.hidden < 1 or not 0.0 <= config.dropout < 1.0 or config.num_classes < 2:
            raise ValueError("width and hidden must be >= 1, dropout in [0, 1) and num_classes >= 2")
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            *_conv_bn(config.in_channels, w, 3, padding=1), nn.MaxPool2d(2),  # (B, w, 16, W/2)
            *_conv_bn(w, 2 * w, 3, padding=1), nn.MaxPool2d(2),  # (B, 2w, 8, W/4)
            *_conv_bn(2 * w, 3 * w, 3, padding=1),
            *_conv_bn(3 * w, 3 * w, 3, padding=1), nn.MaxPool2d((2, 1)),  # (B, 3w, 4, W/4)
            *_conv_bn(3 * w, 4 * w, 3, padding=1), nn.MaxPool2d((2, 1)),  # (B, 4w, 2, W/4)
            *_conv_bn(4 * w, 4 * w, (2, 1)),  # (B, 4w, 1, W/4): one feature column per frame
            nn.Dropout(config.dropout),
        )
        self.rnn = nn.LSTM(4 * w, config.hidden, batch_first=True, bidirectional=True)
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * config.hidden, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 32, W) standardised lines, W a multiple of 4 -> (B, 11, W/4) frame logits."""
        frames = self.features(x).flatten(2).transpose(1, 2)  # (B, W/4, 4w)
        context, _ = self.rnn(frames.float())  # (B, W/4, 2 * hidden); the LSTM runs in fp32
        return self.classifier(context).transpose(1, 2)  # (B, 11, W/4)


def _default_members() -> tuple[dict[str, Any], ...]:
    return ({"arch": "seed"}, {"arch": "seed"})


@dataclass(frozen=True)
class EnsembleConfig:
    """Members of an ensemble; its weights are the members' under ``members.<i>.``."""

    # Each member: {"arch": registered name, "model_config": {...}, "temperature": float}; the
    # default (two seed CNNs) only serves summaries and tests; `digitrec ensemble` fills it in.
    members: tuple[dict[str, Any], ...] | list[dict[str, Any]] = field(default_factory=_default_members)


@register_model("ensemble", EnsembleConfig,
                "Several models in one file: the average of the members' softmax probabilities")
class Ensemble(nn.Module):
    """Averages the members' class probabilities; returns their log, so softmax gives the average.

    Each member's logits are divided by its own temperature first, so calibrated members stay
    calibrated inside the ensemble.
    """

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__()
        members = list(config.members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        modules, temperatures = [], []
        for i, m in enumerate(members):
            if not isinstance(m, dict) or not isinstance(m.get("arch"), str) \
                    or set(m) - {"arch", "model_config", "temperature"}:
                raise ValueError(f"member {i} must be a mapping with arch, model_config, temperature")
            t = m.get("temperature", 1.0)
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t > 0 and math.isfinite(t)):
                raise ValueError(f"member {i} has a bad temperature {t!r}")
            modules.append(create_model(m["arch"], m.get("model_config") or {}))
            temperatures.append(float(t))
        self.config = config
        self.members = nn.ModuleList(modules)
        self.temperatures = temperatures

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, 10) log of the mean member probability (valid logits)."""
        logp = torch.stack([
            (m(x).float() / t).log_softmax(dim=1) for m, t in zip(self.members, self.temperatures)
        ])  # (M, B, 10)
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The config a registered model was built from, as a dict (stored in model files)."""
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"{type(model).__name__} has no dataclass 'config' attribute")
    return dataclasses.asdict(config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts; buffers such as BN statistics count as non-trainable."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    frozen += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return trainable, frozen


@dataclass(frozen=True)
class LayerInfo:
    """One row of the summary: a leaf module, its output shape and its own parameter count."""

    name: str  # dotted module path, e.g. "features.0"
    kind: str  # module class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int  # parameters owned directly by this layer


def example_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) of one example input: a 28x28 digit, or a 32x128 line for a line reader."""
    spec = next((s for s in _REGISTRY.values() if s.builder is type(model)), None)
    channels = getattr(getattr(model, "config", None), "in_channels", 1)
    if spec is not None and spec.task == "lines":
        return (channels, LINE_HEIGHT, 32 * LINE_STRIDE)
    return (channels, IMAGE_SIZE, IMAGE_SIZE)


def layer_table(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[LayerInfo]:
    """Run one dummy forward pass (``input_shape``: (C, H, W), default :func:`example_input_shape`)
    and record every leaf module's output shape and parameters."""
    input_shape = input_shape or example_input_shape(model)
    rows: list[LayerInfo] = []
    hooks = []

    def make_hook(name: str, module: nn.Module):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(LayerInfo(name, type(module).__name__, shape, params))

        return hook

    for name, module in model.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_hook(make_hook(name, module)))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def format_summary(model: nn.Module, name: str = "") -> str:
    """A Keras-style text table: layer, output shape (channels first), parameters, totals."""
    rows = layer_table(model)
    trainable, frozen = count_parameters(model)
    total = trainable + frozen
    header = ("Layer (type)", "Output Shape", "Param #")
    lines = [(f"{r.name} ({r.kind})", str((None, *r.output_shape)), f"{r.params:,}") for r in rows]
    w0, w1, w2 = (max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(3))
    w0, w1 = w0 + 2, w1 + 2
    width = w0 + w1 + w2
    out = [f'Model: "{name or type(model).__name__}"', "━" * width]
    out.append(f"{header[0]:<{w0}}{header[1]:<{w1}}{header[2]:>{w2}}")
    out.append("━" * width)
    for i, (a, b, c) in enumerate(lines):
        out.append(f"{a:<{w0}}{b:<{w1}}{c:>{w2}}")
        out.append("─" * width if i < len(lines) - 1 else "━" * width)

    def kb(n: int) -> str:
        return f"{n * 4 / 1024:,.2f} KB"  # float32 storage, 4 bytes per parameter

    out.append(f" Total params: {total:,} ({kb(total)})")
    out.append(f" Trainable params: {trainable:,} ({kb(trainable)})")
    out.append(f" Non-trainable params: {frozen:,} ({kb(frozen)})")
    return "\n".join(out)
