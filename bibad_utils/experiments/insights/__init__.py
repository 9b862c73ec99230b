"""Stage 04: the judges, the G1-G4 dissection of target-prompt generations, and the paper's two insights.

Every generation of the target prompt is judged twice (``PAPER.md``, Metrics): the trigger detector of
the cell's attack says whether it carries the trigger (``T``), the clean classifier whether it shows the
prompt's class (``M``). From these:

- ``G1 = T & ~M`` (the BadNets-like success: trigger and wrong content), ``G2 = T & M``, ``G3``, ``G4``;
- trigger amplification (Insight 1): ``r_gen = G1 + G2`` against ``r_train``, the trigger ratio among
  the training images that carry the target prompt;
- phase transition (Insight 2): the share of G2 among triggered generations, ``G2 / (G1 + G2)``, falls
  as p grows (G2 dominates at low p, G1 at high p).

The controls (clean, relabel-only) are read by the detector of every attack of the profile and judged by a
second, training-free instrument, the trigger template (:mod:`bibad_utils.judges.template`): the detectors'
false alarms on generations are calibrated on the clean DM, so they cannot also be the evidence that the
clean DM generates no trigger.

Image quality: FD-clf, the Frechet distance between the clean classifier's penultimate features of a
model's all-class generations and of the real test images (a proxy in the spirit of FID, not comparable
with FID values), and the classifier's accuracy on those generations. Inception FID is added only where
torchvision's Inception-v3 weights are on disk and the images are large enough for it to mean something.

All ratios are fractions in [0, 1]. Tables are tidy pandas DataFrames, one row per (cell, detector, w).

One module per idea: :mod:`.judging` (the judges on generations), :mod:`.groups` (the G table and its
views), :mod:`.seeds` (the spread across training runs), :mod:`.quality`, :mod:`.claims`, :mod:`.figures`,
:mod:`.trigger_truth` (the detector and the template side by side: agreement, a planted check, the leak).
"""

from bibad_utils.experiments.insights.claims import (  # noqa: F401
    CLEAN_FALSE_ALARM_MAX, clean_detector_check, untrusted_detectors, content_check, control_verdict,
    template_checks, insight_claims, claims_table, verdict_summary, shortfall_sentence, glue_values)
from bibad_utils.experiments.insights.figures import (  # noqa: F401
    group_examples, examples_figure, phase_figure, guidance_figure, quality_figure, disputed_figure, planted_figure)
from bibad_utils.experiments.insights.groups import (  # noqa: F401
    g_row, g_table, phase_transition, controls_table, dissection_frame)
from bibad_utils.experiments.insights.judging import (  # noqa: F401
    judge_table, template_table, generated_judge_table, judge_augmentation_ablation,
    judge_check_display, content_agreement_table, content_sentence)
from bibad_utils.experiments.insights.quality import (  # noqa: F401
    inception_net, inception_features, quality_table)
from bibad_utils.experiments.insights.readings import phase_verdict  # noqa: F401
from bibad_utils.experiments.insights.seeds import (  # noqa: F401
    seed_table, seed_spread, across_seeds, pooled_counts)
from bibad_utils.experiments.insights.trigger_truth import (  # noqa: F401
    PLANTED_STAGE, PLANT_CONTRASTS, agreement_row, instrument_decisions, agreement_table,
    g_rows_by_instrument, plant, planted_decisions, planted_rows, planted_check,
    preferred_instrument, check_verdicts, leak_table, truth_glue_values)
