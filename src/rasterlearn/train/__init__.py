"""Training and evaluation of segmentation models on chip folders (Lightning drives a module we own).

:func:`train` reads a chip folder (``rasterlearn chips``), builds a model from the registry, trains it with
:class:`SegmentationModule` under a Trainer from :func:`make_trainer` (CPU/GPU/MPS auto, bf16/fp16 mixed
precision on GPU, gradient clipping, seeding, deterministic option, DDP-ready), keeps the best checkpoint by
a validation metric plus the last one (``--resume`` continues exactly from it), and writes the *model
package* (``model.json`` + ``model.safetensors``) with validation metrics, curves, sample chips and an HTML
report beside it. :func:`evaluate_model` scores a package on a split of a chip folder.

Validation metrics come from a confusion matrix accumulated over the whole split (torchmetrics, ignore
index honoured), never from means of per-batch scores.
"""

from rasterlearn.train.config import CHECKPOINT_DIR as CHECKPOINT_DIR
from rasterlearn.train.config import TrainConfig, load_train_config
from rasterlearn.train.evaluation import evaluate_loader as evaluate_loader
from rasterlearn.train.evaluation import evaluate_model
from rasterlearn.train.evaluation import write_metrics as write_metrics
from rasterlearn.train.evaluation import write_training_outputs as write_training_outputs
from rasterlearn.train.loaders import _loader as _loader  # train_checks, bench/train_loader.py
from rasterlearn.train.module import SegmentationModule
from rasterlearn.train.optim import make_trainer
from rasterlearn.train.optim import resolve_precision as resolve_precision
from rasterlearn.train.run import TrainResult, train

__all__ = [
    "SegmentationModule",
    "TrainConfig",
    "TrainResult",
    "evaluate_model",
    "load_train_config",
    "make_trainer",
    "train",
]
