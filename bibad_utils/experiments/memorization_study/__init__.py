"""Stage 06, memorization: what notebooks/06_memorization.ipynb computes.

Three questions, each a function of a :class:`~bibad_utils.stages.Study` returning a tidy DataFrame:

- :func:`duplicate_finder_table` / :func:`duplicate_threshold_sweep`: does the duplicate finder of
  :mod:`bibad_utils.memorization` (an image embedding and a cosine threshold) recover the near-duplicate
  groups planted in the procedural dataset? Pairwise precision, recall, F1, and their threshold sweep.
- :func:`random_vs_duplicate`: the paper's "duplication exacerbates poisoning": G1 and G2 ratios of
  target-prompt generations when the poisoned images are drawn from duplicated images instead of at random.
- :func:`replication_table`: the paper's "poisoning exacerbates duplication": how close each all-class
  generation is to its nearest training image (the images the model was trained on, triggers included),
  and the replication rate above a stated threshold, for the clean and the poisoned DMs.

:func:`memorization_claims` turns them into claim rows (:mod:`bibad_utils.report`). Expensive parts
(embeddings, the threshold sweep, nearest-neighbour searches) are cached in ``study.store``; the DMs
and generations are the study's own (a duplicate-poisoning cell costs one fine-tuning and one generation).
The section ``memorization`` of the profile is validated by :func:`bibad_utils.memorization.validate_config`.

One module per idea: :mod:`.common` (paper numbers, differences, embeddings), :mod:`.duplicates`,
:mod:`.replication`, :mod:`.claims`.
"""

from bibad_utils.experiments.memorization_study.claims import (  # noqa: F401
    memorization_claims, claims_from_tables, claims_frame, verdict_phrase, resolution_sentence, glue_values)
from bibad_utils.experiments.memorization_study.common import (  # noqa: F401
    mean_difference, paper_duplicate_values, group_matches)
from bibad_utils.experiments.memorization_study.duplicates import (  # noqa: F401
    planted_groups, finder_path, duplicate_finder_table, duplicate_threshold, duplicate_threshold_sweep,
    found_group_examples, duplicate_comparison_cells, check_duplicate_pool, duplicate_shortfall,
    random_vs_duplicate, random_vs_duplicate_wide)
from bibad_utils.experiments.memorization_study.replication import (  # noqa: F401
    heldout_similarity, replication_threshold, replication_threshold_source, replication_cells,
    replication_similarities, replication_table, top_pairs)
