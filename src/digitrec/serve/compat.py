"""Bridges to recogniser features that land with issue 5 (number reading, the ``unsure`` flag).

TODO(lead, after merging issue 5): ``Prediction.unsure``, ``Recogniser.read`` and
``preprocess.NoDigitError`` exist then; replace ``is_unsure(p)`` by ``p.unsure``, drop
``can_read``, catch ``NoDigitError`` directly in ``inputs.prepare`` (and drop this module).
"""

from __future__ import annotations

from typing import Any

from .. import preprocess
from ..predict import Prediction, Recogniser

__all__ = ["is_unsure", "can_read", "NO_DIGIT_ERROR"]

# Issue 5 answers an image without ink with ``digit: null`` (the library raises NoDigitError
# from to_mnist and predicts an all-black frame as "no digit"); before it, such an image is an
# ImageError, answered 422.
NO_DIGIT_ERROR: type[Exception] | None = getattr(preprocess, "NoDigitError", None)


def is_unsure(prediction: Prediction) -> bool:
    """Whether the model is unsure of this prediction (False until issue 5 adds the flag)."""
    return bool(getattr(prediction, "unsure", False))


def can_read(recogniser: Recogniser | Any) -> bool:
    """Whether this recogniser reads multi-digit numbers (``Recogniser.read``, issue 5)."""
    return callable(getattr(recogniser, "read", None))
