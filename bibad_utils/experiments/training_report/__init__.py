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

from bibad_utils.experiments.training_report.common import (  # noqa: F401
    IMAGENETTE_TARGET_N, IMAGENETTE_TRAIN_N, PAPER_R_TRAIN_IMAGENETTE, showcase_cell)
from bibad_utils.experiments.training_report.poisoning import (  # noqa: F401
    example_indices, trigger_examples, trigger_differences, corner_box, trigger_pattern_data, poison_manifests,
    manifest_table, same_indices_across_kinds, class_counts_table, class_counts_long, r_train_table,
    r_train_curves, paper_formula_check, poisoning_facts)
from bibad_utils.experiments.training_report.training import (  # noqa: F401
    model_summary, loss_at, pretrain_table, finetune_all, loss_logs, class_samples, pretrained_samples_figure,
    base_model, pretrain_loss_figure, starting_point, training_facts)
from bibad_utils.experiments.training_report.generation import (  # noqa: F401
    sampling_settings, regeneration_check, trigger_borders, guidance_sweep_figure, all_class_figure,
    class_accuracy_table, target_figures, accuracy_facts)
from bibad_utils.experiments.training_report.base_quality import (  # noqa: F401
    base_fd, base_quality_table, class_kappa, format_quality_table, has_base, judge_agreement, kept_checkpoints,
    quality_curve)
from bibad_utils.experiments.training_report.exposure import exposure_figure, profile_exposure  # noqa: F401
from bibad_utils.experiments.training_report.base_figures import (  # noqa: F401
    base_quality_facts, base_samples_figure, quality_curve_figure)
