"""digitrec: handwritten-digit recognition on PyTorch.

Quick start::

    import digitrec
    rec = digitrec.load("seed")            # the bundled notebook CNN
    print(rec.predict("digit.png").digit)

    result = digitrec.train(epochs=1)      # train the notebook recipe on MNIST
    result.save("my-model.safetensors")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .data import MNIST, load_mnist  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DatasetError,
    DigitrecError,
    ImageError,
    ModelFileError,
)
from .evaluate import EvalResult, evaluate  # noqa: E402
from .finetune import FinetuneConfig, FinetuneResult, finetune  # noqa: E402
from .models import create_model, list_models, register_model  # noqa: E402
from .predict import Prediction, Recogniser, load  # noqa: E402
from .train import EpochRecord, TrainConfig, TrainResult, train  # noqa: E402

__all__ = [
    "__version__",
    "load",
    "Recogniser",
    "Prediction",
    "train",
    "TrainConfig",
    "TrainResult",
    "EpochRecord",
    "evaluate",
    "EvalResult",
    "finetune",
    "FinetuneConfig",
    "FinetuneResult",
    "load_mnist",
    "MNIST",
    "create_model",
    "list_models",
    "register_model",
    "DigitrecError",
    "DatasetError",
    "ModelFileError",
    "ImageError",
    "ConfigError",
]
