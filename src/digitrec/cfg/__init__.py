"""Configs: every recipe as a frozen dataclass (fields carry help and bounds), and the named presets.

Importing this package does not import PyTorch: the command line builds its flags from these
dataclasses before it knows which command will run.
"""

from digitrec.cfg.base import MAX_SEED, PRECISIONS, option
from digitrec.cfg.batch import BATCH_ENGINES, BATCH_FORMATS, BatchConfig
from digitrec.cfg.finetune import KIND_DEFAULTS, FinetuneConfig
from digitrec.cfg.lines import LINE_KINDS, LineTrainConfig
from digitrec.cfg.presets import PRESETS, list_presets, preset_config
from digitrec.cfg.train import OPTIMIZERS, SCHEDULES, TrainConfig
from digitrec.cfg.verifier import VerifierConfig

__all__ = [
    "MAX_SEED",
    "PRECISIONS",
    "option",
    "TrainConfig",
    "OPTIMIZERS",
    "SCHEDULES",
    "LineTrainConfig",
    "LINE_KINDS",
    "FinetuneConfig",
    "KIND_DEFAULTS",
    "VerifierConfig",
    "BatchConfig",
    "BATCH_FORMATS",
    "BATCH_ENGINES",
    "PRESETS",
    "list_presets",
    "preset_config",
]
