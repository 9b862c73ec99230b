"""The results summary of chapter 08: every claim of the paper against our run, and the teaser figure.

Claim rows come from the executed analysis notebooks (``<run_dir>/claims/<stage>.json``, written with
:func:`bibad_utils.report.save_claims`). :data:`PAPER_CLAIM_FAMILIES` lists the families of claims that the
paper makes, from :data:`bibad_utils.paper.CLAIMS` (a row names its family by its ``key``), so that a family
no stage reported (a stage not run, or a profile that does not reach it) still appears in the table, as
"not tested", instead of silently vanishing. Every count keeps the paper's claims apart from the controls
and the rows without a paper number (:func:`bibad_utils.verdicts.headline`).

One module per product: :mod:`.families` (the paper's claim families and their coverage), :mod:`.tables`
(the claims frame, counts, styled table and Markdown), :mod:`.teaser` (the teaser figure).
"""

from bibad_utils.experiments.summary.families import (  # noqa: F401
    CLAIM_FAMILIES, PAPER_CLAIM_FAMILIES, CLAIM_STAGES, family_of, kind_of,
    present_stages, missing_stages, family_coverage, uncovered_rows)
from bibad_utils.experiments.summary.tables import (  # noqa: F401
    FIGURES_DIR, CLAIMS_MD_FILE, VERDICT_COLORS, frame_from_rows, claims_frame, verdict_counts, kind_counts,
    claims_headline, coverage_table, glue_values, stage_verdicts, ours_text, DISPLAY_COLUMNS, claims_table,
    styled_claims, md_cell, claims_markdown, save_claims_markdown)
from bibad_utils.experiments.summary.teaser import ratio_row, teaser_drawing, teaser_figure, save_teaser  # noqa: F401
from bibad_utils.experiments.summary.changes import (  # noqa: F401
    published_claims, verdict_changes, changes_sentence, published_path)
