"""The library API the web app (Celery tasks) calls, in one place.

    from mlcore.api import (ImageRecord, table_from_arrays, build_table, TrainConfig, train_all,
                            TrainingCancelled, predict, evaluate, load_checkpoint, infer_image)

- ``table_from_arrays(records, label_sets, cache_dir=None)``: records are ``ImageRecord(image,
  instance_map, labels={label_set_name: {instance_id: class_index}}, dataset=..., name=..., group=...)``
  (or dicts with those keys) -> :class:`NucleusTable` (crops N x 64 x 64 x 3 uint8, labels N x D).
- ``train_all(table, label_sets=None, config=TrainConfig(...), stages=("sparse", "correlation",
  "completion"), progress=fn(dict(stage, epoch, epochs, step, steps, loss, eta_s)), should_stop=fn() -> bool,
  init_checkpoint=None, out_dir=DIR)`` -> :class:`TrainResult` (checkpoint_path, metrics, cancelled...).
- ``predict(model, crops)`` -> {label set name: LabelSetPrediction(base_probs, mlp_probs, probs, labels,
  uncertainty={least_confidence, margin, entropy, disagreement})}.
- ``evaluate(model, table, rows=None)`` -> {label set name: {n, accuracy, macro_f1, weighted_f1, per_class,
  confusion, base_accuracy, mlp_accuracy}}.
- ``load_checkpoint(path, device="cpu")`` -> LoadedCheckpoint(model, stage, epoch, config, metrics, ...).
- ``infer_image(model, image, instance_map)`` -> ImageInference(geometry, predictions) for one image.
- ``infer_slide(model, slide, nuclei, batch_size=, device=, progress=)`` -> yields
  SlideBatchInference(indices, nuclei, predictions, region) per batch of a slide's streamed nuclei
  (``slide`` from ``mlcore.slides.open_slide``, nuclei from ``mlcore.slide_nuclei``).
"""

from mlcore.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from mlcore.config import STAGES, ConfigError, TrainConfig
from mlcore.crops import cut_crops, instance_geometry
from mlcore.data import ImageRecord, NucleusTable, build_table, merged_label_sets, split_by_group, table_from_arrays
from mlcore.infer import ImageInference, SlideBatchInference, infer_image, infer_slide
from mlcore.metrics import classification_report
from mlcore.predict import LabelSetPrediction, predict
from mlcore.train import TrainingCancelled, TrainResult, evaluate, train_all

__all__ = [
    "STAGES", "ConfigError", "ImageInference", "ImageRecord", "LabelSetPrediction", "LoadedCheckpoint", "NucleusTable",
    "TrainConfig", "TrainResult", "TrainingCancelled", "build_table", "classification_report", "cut_crops",
    "evaluate", "infer_image", "instance_geometry", "load_checkpoint", "merged_label_sets", "predict",
    "save_checkpoint", "split_by_group", "table_from_arrays", "train_all", "SlideBatchInference", "infer_slide",
]
