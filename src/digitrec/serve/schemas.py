"""Response bodies of the HTTP API (they also document it in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "TopOut",
    "ErrorOut",
    "PredictionOut",
    "BatchItemOut",
    "BatchOut",
    "ReadDigitOut",
    "ReadOut",
    "ModelOut",
    "HealthOut",
]


class ErrorOut(BaseModel):
    """Every error answer."""

    error: str = Field(description="what was wrong, in one line")


class TopOut(BaseModel):
    """One of the three most probable digits."""

    digit: int = Field(description="a digit 0-9")
    probability: float = Field(description="its probability, 0..1")


class PredictionOut(BaseModel):
    """The answer for one image."""

    digit: int | None = Field(description="most probable digit; null when the image has no ink")
    confidence: float = Field(description="its probability, 0..1")
    top3: list[TopOut] = Field(description="the three most probable digits, best first (empty when digit is null)")
    probabilities: list[float] = Field(description="probability of each digit 0-9 (empty when digit is null)")
    unsure: bool = Field(description="true when the model is not confident enough to be trusted")
    input: list[list[int]] | None = Field(
        default=None, description="the 28x28 image the model saw (grey 0-255, ink bright); only with ?input=true"
    )


class BatchItemOut(BaseModel):
    """One image of a batch: a prediction, or the error that image caused."""

    filename: str = Field(description="the uploaded file's name")
    digit: int | None = None
    confidence: float | None = None
    top3: list[TopOut] | None = None
    probabilities: list[float] | None = None
    unsure: bool | None = None
    error: str | None = Field(default=None, description="set instead of the prediction when the image is unusable")


class BatchOut(BaseModel):
    """Predictions for a batch, in upload order."""

    predictions: list[BatchItemOut]


class ReadDigitOut(BaseModel):
    """One digit of a number."""

    digit: int | None
    confidence: float
    box: list[int] = Field(description="where the digit is in the image: x, y, width, height (pixels)")
    unsure: bool


class ReadOut(BaseModel):
    """A line of digits read as a number."""

    number: str | None = Field(description="the digits left to right; null when none were found")
    confidence: float
    unsure: bool | None = None
    digits: list[ReadDigitOut]


class ModelOut(BaseModel):
    """What model answers the requests."""

    name: str
    arch: str
    parameters: int
    metrics: dict[str, Any]
    version: str = Field(description="digitrec version of the server")
    device: str
    precision: str
    class_names: list[str]
    min_confidence: float = Field(description="answers less confident than this are flagged unsure")
    verifier: str | None = Field(default=None, description="piece verifier used by /v1/read (null: none)")
    line_reader: str | None = Field(default=None, description="line reader used by /v1/read (null: none)")


class HealthOut(BaseModel):
    """Liveness."""

    status: str
