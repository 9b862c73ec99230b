"""Castle walls: backdoor detectors (CD, STRIP, FCT) and the diffusion classifier.

Every detector returns one score per image where a HIGHER score means MORE LIKELY POISONED, so
the scores feed an AUROC directly. Images are given either as float32 tensors in [-1, 1], NCHW,
or as uint8 arrays, NHWC (as stored at rest; ``numpy.memmap`` works); they are converted one batch
at a time. A classifier ``f`` is an ``nn.Module`` mapping float [-1, 1] NCHW images to logits
``[N, K]``; it must already live on ``device`` and is never modified (FCT fine-tunes a copy).

Randomness is drawn per image from ``numpy.random.default_rng([seed, stream, index])``, with
``index`` the image's position in ``images``: a score does not depend on ``batch_size`` or on which
other images are scored with it.

Modules: :mod:`.cd` (Cognitive Distillation), :mod:`.strip` (STRIP), :mod:`.fct` (FCT, the
reference recipe and the project's variant), :mod:`.diffusion_classifier`, and :mod:`.registry`,
one registry of the detectors with one calling convention (``run_detector``).

References (one line each):
- CD: Huang et al., "Distilling Cognitive Backdoor Patterns within an Image", ICLR 2023.
- STRIP: Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019.
- FCT: Chen et al., "Effective Backdoor Defense by Exploiting Sensitivity of Poisoned Samples",
  NeurIPS 2022 (feature consistency towards transformations).
- Diffusion classifier: Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier",
  ICCV 2023.
"""

from bibad_utils.defenses.cd import cd_scores, logit_calibration, mean_max_logit  # noqa: F401
from bibad_utils.defenses.diffusion_classifier import dc_cost, diffusion_classify, filtered_mean  # noqa: F401
from bibad_utils.defenses.fct import (centre_cosine_loss, fct_scores, fct_variant_scores,  # noqa: F401
                                      penultimate_features, reference_transform)
from bibad_utils.defenses.registry import (DETECTORS, Detector, DetectorContext, option_checker,  # noqa: F401
                                           register, run_detector)
from bibad_utils.defenses.strip import SUPERIMPOSE, strip_scores, superimpose  # noqa: F401
