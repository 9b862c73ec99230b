"""The Stable Diffusion backend: a pretrained latent text-to-image model (UNet, VAE, CLIP text encoder) of
which only the UNet is trained; a label selects the prompt "A photo of a {class}", the null label the empty
prompt."""

from __future__ import annotations

import torch

from bibad_utils.base import ConfigError
from bibad_utils.data import PROMPT_TEMPLATE
from bibad_utils.diffusion.interface import BACKEND_CLASSES, DiffusionModel


_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class StableDiffusionDM(DiffusionModel):
    """Stable Diffusion with a trainable UNet and a frozen VAE and CLIP text encoder.

    Components load with ``from_pretrained(config["pretrained"], subfolder=...)`` from a hub id or a
    local folder in the diffusers layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
    ``scheduler/``). Latents are the VAE posterior times ``vae.config.scaling_factor``. The frozen parts
    are stored in the ``mixed_precision`` dtype; the UNet stays float32 (its master weights).
    """

    def __init__(self, config: dict, class_names: list[str]):
        super().__init__(config, class_names)
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        src = config["pretrained"]
        frozen_dtype = _DTYPES[config["mixed_precision"]]
        self.tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder")
        self.vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=frozen_dtype)
        self.unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet")
        self.noise_scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler")
        if self.noise_scheduler.config.prediction_type != "epsilon":
            raise ConfigError("model.pretrained", src, "a model whose scheduler predicts epsilon")
        for frozen in (self.text_encoder, self.vae):
            frozen.requires_grad_(False)
            frozen.eval()
        if config["gradient_checkpointing"]:
            self.unet.enable_gradient_checkpointing()
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if self.image_size % self.vae_factor:
            raise ConfigError("model.image_size", self.image_size, f"a multiple of the VAE factor {self.vae_factor}")
        template = PROMPT_TEMPLATE if config["prompt_template"] is None else config["prompt_template"]
        self.prompts = [template.format(name) for name in self.class_names] + [""]
        self.register_buffer("prompt_embeds", self._embed(self.prompts), persistent=False)
        self.text_encoder.to(frozen_dtype)

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states float32 ``[len(prompts), max_length, hidden]``."""
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids)[0].float()

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()
        self.text_encoder.eval()
        return self

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.vae_factor
        return (self.vae.config.latent_channels, side, side)

    def eps(self, x_t, t, labels, denoiser=None):
        net, t, labels = self._inputs(x_t, t, labels, denoiser)
        dtype = self.unet.dtype
        context = self.prompt_embeds[labels].to(dtype)
        return net(x_t.to(dtype), t, encoder_hidden_states=context).sample.float()

    @torch.no_grad()
    def encode(self, images, generator=None):
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        z = posterior.mode() if generator is None else posterior.sample(generator=generator)
        return z.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, z):
        z = (z / self.vae.config.scaling_factor).to(self.vae.dtype)
        return self.vae.decode(z).sample.float().clamp(-1.0, 1.0)


BACKEND_CLASSES["stable_diffusion"] = StableDiffusionDM
