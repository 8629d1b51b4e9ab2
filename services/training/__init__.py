"""Training: configuration, model size probing, the training child and its progress protocol.

Modules the daemon imports stay light (no torch, transformers or peft at import time):
``config``, ``modelinfo``, ``progress``, ``command``, ``dataset_reader``, ``base_model`` and
``errors``. The training child (``python -m services.training``, started with
:func:`services.training.command.build_command`) runs the rest: ``recipe`` (the fine-tune as
a class: setup, train, evaluate, cleanup) with ``plan``, ``batching``, ``loss`` and
``checkpoints``; ``merge``; the evaluation gate ``gate``; and ``inference`` (loading a model
and generating with it, shared with ``python -m services.generation``).
"""

from services.training.errors import (
    BadInputError,
    ModelInfoError,
    TrainingConfigError,
    TrainingError,
)

__all__ = ["BadInputError", "ModelInfoError", "TrainingConfigError", "TrainingError"]
