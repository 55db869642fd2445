"""Models: the registry (``@register_model``), the architectures, layer summaries and the model file.

Importing the registry registers the built-in architectures (``models/digits.py``,
``models/lines.py``). The names below load on first use, so the torch-free modules of this
package (``header``, ``catalog``) can be imported without PyTorch.
"""

from __future__ import annotations

from digitrec.compat import lazy_exports

_LAZY = {
    "ModelSpec": "digitrec.models.registry",
    "register_model": "digitrec.models.registry",
    "list_models": "digitrec.models.registry",
    "get_model_spec": "digitrec.models.registry",
    "spec_of": "digitrec.models.registry",
    "create_model": "digitrec.models.registry",
    "check_model_output": "digitrec.models.registry",
    "check_line_output": "digitrec.models.registry",
    "TASKS": "digitrec.models.registry",
    "SeedCNNConfig": "digitrec.models.digits",
    "SeedCNN": "digitrec.models.digits",
    "VGGNetConfig": "digitrec.models.digits",
    "VGGNet": "digitrec.models.digits",
    "EnsembleConfig": "digitrec.models.digits",
    "Ensemble": "digitrec.models.digits",
    "FastCNNConfig": "digitrec.models.digits",
    "FastCNN": "digitrec.models.digits",
    "LineCNNConfig": "digitrec.models.lines",
    "LineCNN": "digitrec.models.lines",
    "LineCRNNConfig": "digitrec.models.lines",
    "LineCRNN": "digitrec.models.lines",
    "LINE_HEIGHT": "digitrec.models.registry",
    "LINE_STRIDE": "digitrec.models.registry",
    "LayerInfo": "digitrec.models.summary",
    "layer_table": "digitrec.models.summary",
    "example_input_shape": "digitrec.models.summary",
    "format_summary": "digitrec.models.summary",
    "count_parameters": "digitrec.models.summary",
    "model_config_dict": "digitrec.models.registry",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
