"""The pixel-space backend: a diffusers ``UNet2DModel`` with one class embedding per class plus the null class,
optionally run on ``pixel_unshuffle``-d inputs for speed."""

from __future__ import annotations

import torch.nn.functional as F

from bibad_utils.diffusion.interface import BACKEND_CLASSES, DiffusionModel, noise_scheduler_for


class PixelDM(DiffusionModel):
    """Class-conditional pixel-space DM: ``UNet2DModel`` with ``num_classes + 1`` class embeddings.

    With ``unshuffle = u > 1`` the UNet sees ``pixel_unshuffle(x, u)`` (``3 u^2`` channels at
    ``image_size / u``) and its output is ``pixel_shuffle``-d back: the same model interface at
    ``u^2`` times fewer spatial positions per layer.
    """

    clip_sample = True

    def __init__(self, config: dict, class_names: list[str]):
        super().__init__(config, class_names)
        from diffusers import UNet2DModel

        c = config
        u = c["unshuffle"]
        channels = c["in_channels"] * u * u
        down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in c["attention"]]
        up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c["attention"])]
        self.unet = UNet2DModel(
            sample_size=c["image_size"] // u,
            in_channels=channels,
            out_channels=channels,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            block_out_channels=tuple(c["block_out_channels"]),
            layers_per_block=c["layers_per_block"],
            attention_head_dim=c["attention_head_dim"],
            norm_num_groups=c["norm_groups"],
            dropout=c["dropout"],
            num_class_embeds=self.num_classes + 1,
        )
        self.unshuffle = u
        self.noise_scheduler = noise_scheduler_for(c)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.config["in_channels"], self.image_size, self.image_size)

    def eps(self, x_t, t, labels, denoiser=None):
        net, t, labels = self._inputs(x_t, t, labels, denoiser)
        h = F.pixel_unshuffle(x_t, self.unshuffle) if self.unshuffle > 1 else x_t
        out = net(h, t, class_labels=labels).sample
        out = F.pixel_shuffle(out, self.unshuffle) if self.unshuffle > 1 else out
        return out.float()

    def encode(self, images, generator=None):
        return images.float()

    def decode(self, z):
        return z.float().clamp(-1.0, 1.0)


BACKEND_CLASSES["pixel"] = PixelDM
