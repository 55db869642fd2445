"""The registry's table: architectures register by name (``@register_model``), take their config, return logits.

The built-in architectures (``digits.py``, ``lines.py``) fill the table when imported; import
:mod:`digitrec.models.registry` to have them. Register a new architecture with
``@register_model("name", ConfigClass)``; it then works with ``--arch name`` everywhere, and
checkpoints rebuild it from the stored name and config. Digit
models (task ``"digits"``) map (B, 1, 28, 28) images to (B, classes) logits; line readers
(task ``"lines"``) map (B, 1, 32, W) lines of digits to (B, 11, W/4) per-frame CTC logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from digitrec.data.ink import LINE_HEIGHT, LINE_STRIDE
from digitrec.data.preprocess import IMAGE_SIZE
from digitrec.errors import ConfigError, first_line

__all__ = [
    "ModelSpec",
    "register_model",
    "list_models",
    "get_model_spec",
    "spec_of",
    "create_model",
    "check_model_output",
    "check_line_output",
    "model_config_dict",
    "TASKS",
    "LINE_HEIGHT",
    "LINE_STRIDE",
]

M = TypeVar("M", bound=nn.Module)

TASKS = ("digits", "lines")  # what a registered architecture reads: one 28x28 digit, or a line of digits


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


def spec_of(model: nn.Module) -> ModelSpec | None:
    """The registered spec whose class built ``model`` (None for an unregistered module)."""
    return next((s for s in _REGISTRY.values() if s.builder is type(model)), None)


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The config a registered model was built from, as a dict (stored in model files)."""
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"{type(model).__name__} has no dataclass 'config' attribute")
    return dataclasses.asdict(config)
