"""What a reading of a number is: its digits left to right, each with its confidence and box, and the whole's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DigitReading", "NumberReading"]


@dataclass(frozen=True)
class DigitReading:
    """One digit of a number."""

    digit: int  # most probable class
    confidence: float  # its calibrated probability, 0..1
    box: tuple[int, int, int, int]  # (x, y, width, height) in input-image pixels (after EXIF rotation)
    unsure: bool  # confidence below the recogniser's min_confidence

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"digit": self.digit, "confidence": self.confidence, "box": list(self.box), "unsure": self.unsure}


@dataclass(frozen=True)
class NumberReading:
    """The digits found in one picture, left to right.

    ``confidence`` is the probability that the whole number is right: the grey line reader's
    probability of the string (the default reader), or, for digits cut apart and classified one
    by one, the product of their confidences (digits taken as independent). No number found
    gives ``number`` None, ``confidence`` 0.0, no digits, and ``unsure`` True.
    """

    number: str | None  # the digits as a string, leading zeros kept; None when no digit was found
    confidence: float  # probability that the whole number is right, 0..1 (0.0 without digits)
    digits: tuple[DigitReading, ...]  # left to right
    unsure: bool  # no digit found, or any digit unsure

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: number, confidence, unsure and the digits with their boxes."""
        return {
            "number": self.number,
            "confidence": self.confidence,
            "unsure": self.unsure,
            "digits": [d.to_dict() for d in self.digits],
        }
