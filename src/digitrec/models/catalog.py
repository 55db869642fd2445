"""The built-in architectures as plain data (name, task, parameters, description), for listings without PyTorch.

``digitrec models`` lists from here, so it answers without importing torch. The registry is
the truth: ``tests/test_models.py`` checks that this table matches the registered built-ins, so
a change to an architecture that forgets this table fails the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArchInfo", "BUILTIN"]


@dataclass(frozen=True)
class ArchInfo:
    """One built-in architecture with its default config."""

    name: str  # registry name (--arch)
    task: str  # "digits" (28x28 in, 10 logits out) or "lines" (32xW in, 11 CTC logits per 4 columns)
    params: int  # parameters and float buffers with the default config
    description: str  # the registry's one-line description


BUILTIN = (
    ArchInfo("ensemble", "digits", 450068, "Several models in one file: the average of the members' softmax "
             "probabilities"),
    ArchInfo("fast", "digits", 80346, "Narrow CNN for the fast preset: conv5x5/2+BN, conv5x5+maxpool+BN, dense 128"),
    ArchInfo("line-crnn", "lines", 321731, "Grey line reader: CNN + BiLSTM over a 32-pixel-high line, one 11-class "
             "frame per 4 columns (CTC)"),
    ArchInfo("line-ctc", "lines", 187227, "Line reader: a CNN over a 32-pixel-high line, one 11-class frame per 4 "
             "columns (CTC)"),
    ArchInfo("seed", "digits", 225034, "The notebook CNN: 2x(conv3x3+ReLU+maxpool), dense 128, dense 10"),
    ArchInfo("vgg", "digits", 326826, "VGG-style CNN with BatchNorm and dropout: 2 blocks of (3x3, 3x3, 5x5 stride "
             "2), 4x4 head"),
)
