"""The model registry with the built-in architectures registered: look models up and build them from here.

The table and its functions live in :mod:`digitrec.models.spec`; importing this module also
imports the built-in architectures (``models/digits.py``, ``models/lines.py``), which register
themselves, so ``create_model("seed")`` always finds them.
"""

from digitrec.models import digits, lines  # noqa: F401  (importing them registers the built-ins)
from digitrec.models.spec import (  # noqa: F401
    LINE_HEIGHT,
    LINE_STRIDE,
    TASKS,
    ModelSpec,
    check_line_output,
    check_model_output,
    create_model,
    get_model_spec,
    list_models,
    model_config_dict,
    register_model,
    spec_of,
)

__all__ = [
    "ModelSpec",
    "register_model",
    "list_models",
    "get_model_spec",
    "spec_of",
    "create_model",
    "check_model_output",
    "check_line_output",
    "model_config_dict",
    "TASKS",
    "LINE_HEIGHT",
    "LINE_STRIDE",
]
