"""The piece verifier: is a candidate cut from a line of digits one whole digit?

Reading a number (:mod:`digitrec.read.segment`) cuts a line into pieces and tries every run of
neighbouring pieces as a digit. A digit classifier answers "which digit" confidently even for
two touching digits run together (an "8" with a "1" stuck to it still looks most like an "8")
or for part of a digit, because it never saw such inputs. The verifier is a second, two-class
model trained for exactly that question, on the segmenter's own candidates (how it is
trained: :mod:`digitrec.train.verifier`).

When reading, each candidate also scores the log of the verifier's "one digit" probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from digitrec.cfg.verifier import VerifierConfig
from digitrec.errors import ModelFileError
from digitrec.infer.evaluate import predict_logits
from digitrec.models.header import ModelFile, bundled
from digitrec.read.segment import WholeDigit

__all__ = [
    "PIECE_CLASSES",
    "VerifierConfig",
    "bundled_verifier",
    "whole_digit_scorer",
]

PIECE_CLASSES = ["not one digit", "one digit"]  # the verifier's class names, in logit order



def bundled_verifier() -> Path | None:
    """The verifier shipped inside the package, or None if this installation has none."""
    return bundled("piece verifier")


def whole_digit_scorer(verifier: ModelFile, device: torch.device, precision: str = "fp32") -> WholeDigit:
    """A function giving, for (N, 28, 28) [0, 1] inputs, the probability that each is one whole digit."""
    if verifier.class_names != PIECE_CLASSES:
        raise ModelFileError(f"{verifier.path}: not a piece verifier (classes {verifier.class_names})")

    def whole(inputs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        logits = predict_logits(verifier.model, x, device=device, precision=precision, batch_size=256,
                                normalization=verifier.normalization)
        return logits.float().softmax(dim=1)[:, 1].cpu().numpy()

    return whole
