"""Models: the registry (``@register_model``), the architectures, layer summaries and the model file.

Importing this package registers the built-in architectures (``models/digits.py``,
``models/lines.py``), so ``create_model("seed")`` works after any ``digitrec.models`` import.
"""

from digitrec.models.digits import (  # noqa: F401  (importing registers the architectures)
    Ensemble,
    EnsembleConfig,
    FastCNN,
    FastCNNConfig,
    SeedCNN,
    SeedCNNConfig,
    VGGNet,
    VGGNetConfig,
)
from digitrec.models.lines import LineCNN, LineCNNConfig, LineCRNN, LineCRNNConfig  # noqa: F401
from digitrec.models.registry import (  # noqa: F401
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
from digitrec.models.summary import (  # noqa: F401
    LayerInfo,
    count_parameters,
    example_input_shape,
    format_summary,
    layer_table,
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
    "TASKS",
    "SeedCNNConfig",
    "SeedCNN",
    "VGGNetConfig",
    "VGGNet",
    "EnsembleConfig",
    "Ensemble",
    "FastCNNConfig",
    "FastCNN",
    "LineCNNConfig",
    "LineCNN",
    "LineCRNNConfig",
    "LineCRNN",
    "LINE_HEIGHT",
    "LINE_STRIDE",
    "LayerInfo",
    "layer_table",
    "example_input_shape",
    "format_summary",
    "count_parameters",
    "model_config_dict",
]
