"""Layer summaries: parameter counts and a Keras-style table of layers and output shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from digitrec.data.preprocess import IMAGE_SIZE
from digitrec.models.registry import LINE_HEIGHT, LINE_STRIDE, spec_of

__all__ = ["count_parameters", "LayerInfo", "example_input_shape", "layer_table", "format_summary"]


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
    spec = spec_of(model)
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
