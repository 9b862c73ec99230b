"""Class-conditional diffusion models behind one interface: a pixel-space UNet and Stable Diffusion.

Both backends are conditioned on integer class labels; label ``model.null_class`` (== ``num_classes``)
is the unconditional input used by classifier-free guidance. Training, sampling and the diffusion
classifier only ever call :meth:`DiffusionModel.eps`, :meth:`DiffusionModel.encode` and
:meth:`DiffusionModel.decode`, so they work unchanged on either backend.

- :class:`PixelDM`: a diffusers ``UNet2DModel`` with ``num_class_embeds = num_classes + 1`` (the extra
  embedding is the null class), optionally run on ``pixel_unshuffle``-d inputs for speed.
- :class:`StableDiffusionDM`: a pretrained latent text-to-image model (UNet, VAE, CLIP text encoder)
  of which only the UNet is trained; a label selects the prompt ``"A photo of a {class}"`` and the null
  label the empty prompt. The prompt embeddings are computed once and cached.

:func:`build_model` turns a profile's ``model`` section into a model; :func:`validate_config` checks such
a section; :func:`load_model` reads a model written by :meth:`DiffusionModel.save`.

Modules: :mod:`.settings` (the ``model`` section), :mod:`.interface` (:class:`DiffusionModel`, saving and
loading), :mod:`.pixel`, :mod:`.stable_diffusion` (the backends, each registered in ``BACKEND_CLASSES``),
:mod:`.factory` (:func:`build_model`).
"""

from bibad_utils.diffusion.settings import validate_config  # noqa: F401
from bibad_utils.diffusion.interface import DiffusionModel, load_model  # noqa: F401
from bibad_utils.diffusion.pixel import PixelDM  # noqa: F401
from bibad_utils.diffusion.stable_diffusion import StableDiffusionDM  # noqa: F401
from bibad_utils.diffusion.factory import build_model  # noqa: F401
