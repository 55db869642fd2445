"""Bridges to recogniser features that land with issue 5 (number reading, the ``unsure`` flag).

TODO(lead, after merging issue 5): ``Prediction.unsure`` and ``Recogniser.read`` exist then;
replace ``is_unsure(p)`` by ``p.unsure`` and drop ``can_read`` (and this module).
"""

from __future__ import annotations

from typing import Any

from ..predict import Prediction, Recogniser

__all__ = ["is_unsure", "can_read"]


def is_unsure(prediction: Prediction) -> bool:
    """Whether the model is unsure of this prediction (False until issue 5 adds the flag)."""
    return bool(getattr(prediction, "unsure", False))


def can_read(recogniser: Recogniser | Any) -> bool:
    """Whether this recogniser reads multi-digit numbers (``Recogniser.read``, issue 5)."""
    return callable(getattr(recogniser, "read", None))
