"""The model registry with the built-in architectures registered: look models up and build them from here.

The table and its functions live in :mod:`digitrec.models.spec`; importing this module also
imports the built-in architectures (``models/digits.py``, ``models/lines.py``), which register
themselves, so ``create_model("seed")`` always finds them.
"""

from digitrec.models import digits, lines, spec  # noqa: F401  (importing digits and lines registers them)
from digitrec.models.spec import *  # noqa: F403

__all__ = list(spec.__all__)
