"""What every config shares: the field helper that carries a field's help and bounds, and common limits.

Configs are frozen dataclasses whose fields are declared with :func:`option`; the command line
builds its flags from them (``digitrec.cli.flags``), so a field's meaning, unit, default and
allowed range are written once, here in ``cfg/``. Nothing in this package imports PyTorch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MAX_SEED", "PRECISIONS", "INFER_PRECISIONS", "BACKENDS", "MIN_CONFIDENCE", "option"]

MAX_SEED = 2**63  # seeds must fit torch's generator (signed 64-bit)
PRECISIONS = ("auto", "fp32", "bf16")  # compute precision: auto = bf16 where the hardware runs it natively
# Inference precisions: the training ones plus int8 (a statically quantized ONNX graph), which
# only inference takes: training stays on PRECISIONS.
INFER_PRECISIONS = (*PRECISIONS, "int8")
BACKENDS = ("auto", "torch", "onnx")  # inference backends: eager PyTorch, ONNX Runtime, or the faster that applies
MIN_CONFIDENCE = 0.7  # answers below this calibrated confidence are flagged unsure (CLI, API and server)


def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Callable[[], Any] | None = None,
           choices: Sequence[str] | None = None, low: float | None = None, high: float | None = None,
           above: float | None = None, flag: bool = True, name: str | None = None) -> Any:
    """A dataclass field with its help text (meaning, unit) and the range a flag accepts.

    ``low``/``high`` are inclusive bounds, ``above`` an exclusive lower bound; ``flag=False``
    keeps the field off the command line (structured values such as a model's config);
    ``name`` is the flag's name when it is not ``--field-name`` (e.g. ``--timeout`` for ``timeout_s``).
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "low": low, "high": high,
                "above": above, "flag": flag, "name": name}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
