"""digitrec: handwritten-digit recognition on PyTorch.

Quick start::

    import digitrec
    rec = digitrec.load("seed")            # the bundled notebook CNN
    print(rec.predict("digit.png").digit)

    result = digitrec.train(epochs=1)      # train the notebook recipe on MNIST
    result.save("my-model.safetensors")

The names below are imported on first use (PEP 562), so ``import digitrec`` and the command
line's ``--help`` do not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from digitrec import compat
from digitrec.errors import ConfigError, DatasetError, DigitrecError, ImageError, ModelFileError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from digitrec.data.datasets import load_dataset
    from digitrec.data.mnist import MNIST, load_mnist
    from digitrec.infer.evaluate import EvalResult, evaluate
    from digitrec.infer.recogniser import Prediction, Recogniser, load
    from digitrec.models.registry import create_model, list_models, register_model
    from digitrec.train import train
    from digitrec.train.engine import EpochRecord, TrainConfig, TrainResult
    from digitrec.train.finetune import FinetuneConfig, FinetuneResult, finetune

# Public name -> the module that defines it.
_LAZY = {
    "load": "digitrec.infer.recogniser",
    "Recogniser": "digitrec.infer.recogniser",
    "Prediction": "digitrec.infer.recogniser",
    "TrainConfig": "digitrec.cfg.train",
    "TrainResult": "digitrec.train.engine",
    "EpochRecord": "digitrec.train.engine",
    "evaluate": "digitrec.infer.evaluate",
    "EvalResult": "digitrec.infer.evaluate",
    "finetune": "digitrec.train.finetune",
    "FinetuneConfig": "digitrec.cfg.finetune",
    "FinetuneResult": "digitrec.train.finetune",
    "load_mnist": "digitrec.data.mnist",
    "load_dataset": "digitrec.data.datasets",
    "MNIST": "digitrec.data.mnist",
    "create_model": "digitrec.models.registry",
    "list_models": "digitrec.models.registry",
    "register_model": "digitrec.models.registry",
}

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
    "load_dataset",
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


_lazy_getattr, __dir__ = compat.lazy_exports(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "train":
        # The package digitrec.train is callable (digitrec.train(...) trains): importing it binds
        # it here, as importing any submodule binds it, so both spellings end up the same object.
        return importlib.import_module("digitrec.train")
    return _lazy_getattr(name)


compat.install()
