"""Training: one loop for every model, resume, calibration, presets, and each task's pipeline.

``digitrec.train`` is both this package and the public function ``digitrec.train(...)``: importing
a submodule rebinds the parent's attribute to the package, so the package is made callable and
both spellings keep working.
"""

import sys
import types

from digitrec.train.engine import (  # noqa: F401
    MAX_SEED,
    EpochRecord,
    TrainCallback,
    TrainConfig,
    TrainResult,
    fit,
    lr_at,
    split_train_val,
    train,
)

__all__ = [
    "TrainConfig",
    "EpochRecord",
    "TrainCallback",
    "TrainResult",
    "split_train_val",
    "lr_at",
    "fit",
    "train",
    "MAX_SEED",
]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):  # digitrec.train(...) == digitrec.train.engine.train(...)
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
