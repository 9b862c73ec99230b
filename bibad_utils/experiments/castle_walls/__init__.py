"""Stage 05, castle walls: what notebooks/05_castle_walls.ipynb computes.

The paper's three defensive uses of a data-poisoned diffusion model (DM), each a function of a
:class:`~bibad_utils.stages.Study` returning a tidy DataFrame, one module per idea:

- :mod:`.victims`: the backdoored classifier of each cell and the classifiers of "training on generations";
- :mod:`.detection`: backdoor-data detectors (the registry of :mod:`bibad_utils.defenses`) on a known-answer
  set, a subset of the poisoned training set and the poisoned DM's generations (scored with the victim and
  with a classifier trained on the generations); ``detection.csv``;
- :mod:`.train_on_generations`: TA and ASR of classifiers trained on the poisoned data and on generations;
- :mod:`.diffusion_classifier`: the poisoned conditional DM as a classifier (Li et al. 2023);
- :mod:`.claims`: claim rows with computed verdicts (the rules are stated there) and the quoted numbers;
- :mod:`.tables`, :mod:`.figures`: display; :mod:`.config`: the ``defenses`` section;
  :mod:`.paper_numbers`: the paper's values (:func:`~.paper_numbers.paper_at` looks one up); the statistics
  (stratified subsets, AUROC intervals, TA/ASR) are :mod:`bibad_utils.metrics`, the verdict rules
  :mod:`bibad_utils.verdicts`.

Every classifier, detector score and diffusion-classifier run is cached in ``study.store``.

Classifiers of this stage use the profile's ``judges`` settings (architecture, schedule) overridden
by ``defenses.classifier``; they are trained on poisoned data, unlike the judges, which are clean. The
judges' photometric augmentation (``color_jitter``, ``blur``, ``noise``) is not inherited: these
classifiers are the victims and baselines of the paper's defenses; ``defenses.classifier`` and
``defenses.gen_classifier`` may set it for themselves (the demo gives the two equal-size classifiers of
"training on generations" colour jitter: a small DM's colours drift from the real palette, and a
classifier that learned exact colours from generations misreads real test images).
"""

from bibad_utils.experiments.castle_walls.claims import (  # noqa: F401
    castle_claims, castle_summary, detection_claims, diffusion_classifier_claims, train_on_generations_claims)
from bibad_utils.experiments.castle_walls.config import (  # noqa: F401
    SETS, SOURCES, TA_COST_MAX, classifier_settings, detection_cells, detector_key, detectors)
from bibad_utils.experiments.castle_walls.detection import (  # noqa: F401
    DETECTION_CSV, detection_csv, detection_differences, detection_table, save_detection_csv,
    training_detection_indices)
from bibad_utils.experiments.castle_walls.diffusion_classifier import (  # noqa: F401
    dc_benchmark, dc_cells, diffusion_classifier_table)
from bibad_utils.experiments.castle_walls.figures import (  # noqa: F401
    cd_mask_figure, dc_figure, detection_figure, train_on_generations_figure)
from bibad_utils.experiments.castle_walls.paper_numbers import (  # noqa: F401
    PAPER_CD_AUROC, PAPER_DC, PAPER_TRAIN_ON_GEN, paper_at)
from bibad_utils.experiments.castle_walls.tables import (  # noqa: F401
    claims_table, clean_dm_flags, detection_wide, example_cell, rates_wide)
from bibad_utils.experiments.castle_walls.train_on_generations import (  # noqa: F401
    train_on_generations_table)
from bibad_utils.experiments.castle_walls.victims import backdoored_table  # noqa: F401
