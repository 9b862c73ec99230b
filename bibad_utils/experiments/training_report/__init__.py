"""Tables and figures of the training side of the study: poisoning (01), training (02), generation (03).

The functions read a :class:`~bibad_utils.stages.Study` (whose methods compute and cache the poisoned
sets, the models and the generations) and return DataFrames, dicts of arrays or Figures; none of them
trains anything itself except through the Study. Images follow the project's conventions: uint8
``[N, H, W, 3]`` at rest, float ``[N, 3, H, W]`` in [-1, 1] for triggers and models.

One module per stage (``poisoning``, ``training``, ``generation``), ``base_quality`` and ``base_figures``
(how good the clean base DM is, chapter 02), ``exposure`` (how much fine-tuning plants the trigger,
chapter 02) and ``common`` for what they share;
notebooks use this package as one namespace (``from bibad_utils.experiments import training_report as tr``).
"""

from bibad_utils.experiments.training_report.common import (IMAGENETTE_TARGET_N, IMAGENETTE_TRAIN_N,
                                                            PAPER_R_TRAIN_IMAGENETTE, TRIGGER_COLOR,
                                                            cells_of, check_count,
                                                            showcase_cell)
from bibad_utils.experiments.training_report.poisoning import (example_indices, trigger_examples, trigger_differences,
                                                               corner_box, trigger_pattern_data, poison_manifests,
                                                               manifest_table, same_indices_across_kinds,
                                                               class_counts_table, class_counts_long, r_train_table,
                                                               r_train_curves, paper_formula_check, poisoning_facts)
from bibad_utils.experiments.training_report.training import (model_summary, loss_at, pretrain_table, finetune_all,
                                                              loss_logs, class_samples, pretrained_samples_figure,
                                                              base_model, pretrain_loss_figure, starting_point,
                                                              scratch_comparison, training_facts)
from bibad_utils.experiments.training_report.generation import (sampling_settings, regeneration_check,
                                                                detector_kind, trigger_borders, target_grid_figure,
                                                                guidance_sweep_figure, all_class_figure,
                                                                class_accuracy_table, target_figures, accuracy_facts)
from bibad_utils.experiments.training_report.base_quality import (JudgeSpec, base_fd, base_quality_table, base_sets,
                                                                  class_kappa, external_spec, format_quality_table,
                                                                  has_base, judge_agreement, judge_specs,
                                                                  kept_checkpoints, predictions, quality_curve,
                                                                  real_reference_indices)
from bibad_utils.experiments.training_report.exposure import exposure_figure, profile_exposure
from bibad_utils.experiments.training_report.base_figures import (MISREAD_COLOR, base_quality_facts,
                                                                  base_samples_figure, quality_curve_figure)

__all__ = ["exposure_figure", "profile_exposure", "JudgeSpec", "MISREAD_COLOR", "base_fd", "base_quality_facts", "base_quality_table", "base_samples_figure",
    "base_sets", "class_kappa", "external_spec", "format_quality_table", "has_base", "judge_agreement",
    "judge_specs", "kept_checkpoints", "predictions", "quality_curve", "quality_curve_figure",
    "real_reference_indices",
    "IMAGENETTE_TARGET_N", "IMAGENETTE_TRAIN_N", "PAPER_R_TRAIN_IMAGENETTE", "TRIGGER_COLOR",
    "accuracy_facts", "all_class_figure", "base_model", "cells_of", "check_count", "class_accuracy_table",
    "class_counts_long", "class_counts_table", "class_samples", "corner_box", "detector_kind", "example_indices",
    "finetune_all", "guidance_sweep_figure", "loss_at", "loss_logs", "manifest_table", "model_summary",
    "paper_formula_check", "poison_manifests", "poisoning_facts", "pretrain_loss_figure", "pretrain_table",
    "pretrained_samples_figure", "r_train_curves", "r_train_table", "regeneration_check", "same_indices_across_kinds",
    "sampling_settings", "scratch_comparison", "showcase_cell", "starting_point", "target_figures",
    "target_grid_figure", "training_facts", "trigger_borders", "trigger_differences", "trigger_examples",
    "trigger_pattern_data"]
