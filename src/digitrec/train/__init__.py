"""Training: the one loop (steps, checks, best kept), the classifier and CTC steps, resume, calibration, pipelines.

``digitrec.train`` is both this package and the public function ``digitrec.train(...)``: importing
a submodule rebinds the parent's attribute to the package, so the package is made callable and
both spellings keep working.
"""

import sys
import types

from digitrec.train import engine
from digitrec.train.engine import *  # noqa: F403  (what the old digitrec.train module exported)

__all__ = list(engine.__all__)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):  # digitrec.train(...) == digitrec.train.engine.train(...)
        return engine.train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
