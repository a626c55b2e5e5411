"""Training SNLT: configs, pair sampling, crops and augmentation, losses, the loop, `snlt train`.

    from snlt_fast.training import load_config, Trainer
    Trainer(load_config("synthetic-tiny", ["train.epochs=1"]), "runs/tiny").run()
"""

from snlt_fast.training.config import ConfigError, bundled_names, load_config
from snlt_fast.training.loop import Trainer, TrainingError, build_training_model

__all__ = ["ConfigError", "Trainer", "TrainingError", "build_training_model", "bundled_names", "load_config"]
