"""Training: configuration, model size probing, the training child and its progress protocol.

Modules the daemon imports stay light (no torch, transformers or peft at import time):
``config``, ``modelinfo``, ``progress``, ``command``, ``dataset``, ``base_model`` and
``errors``. ``recipe`` and ``merge`` hold the training code and run only in the child
process started with :func:`services.training.command.build_command`.
"""

from services.training.errors import (
    BadInputError,
    ModelInfoError,
    TrainingConfigError,
    TrainingError,
)

__all__ = ["BadInputError", "ModelInfoError", "TrainingConfigError", "TrainingError"]
