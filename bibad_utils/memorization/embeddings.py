"""Image embeddings for duplicate and replication search: L2-normalised float32 rows ``[N, D]`` from raw
pixels, a task classifier's features, or ImageNet ResNet-50 features (loaded from safetensors only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bibad_utils.base import ConfigError
from bibad_utils.judges import features
from bibad_utils.judges.cifar_arch import IMAGENET_MEAN, IMAGENET_STD
from bibad_utils.memorization.settings import EMBEDDINGS, MEMORIZATION
from bibad_utils.schema import Field

# torchvision's ImageNet weights for ResNet-50 (top-1 80.9 %); SHA-256 prefix is in the file name.
RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"


def _check_images(images) -> np.ndarray:
    images = images if isinstance(images, np.ndarray) else np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError("images", f"{images.dtype} array of shape {images.shape}", "uint8 [N, H, W, 3]")
    return images


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    # A constant image has no direction; it stays the zero vector (cosine 0 with everything).
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)


def _batches(images: np.ndarray, batch_size: int, device) -> "iter[torch.Tensor]":
    """float32 ``[b, 3, H, W]`` in [0, 1] on ``device``, batch by batch (memmaps are read lazily)."""
    for start in range(0, len(images), batch_size):
        chunk = np.array(images[start:start + batch_size])  # a writable copy: the cached arrays are read-only
        yield torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _pixel_embedding(images, batch_size, device, pixel_size, highpass=0) -> np.ndarray:
    out = []
    for x in _batches(images, batch_size, device):
        x = F.adaptive_avg_pool2d(x, pixel_size)
        if highpass:  # minus its box blur (replicate padding keeps the borders): edges and texture remain
            x = x - F.avg_pool2d(F.pad(x, (highpass // 2,) * 4, mode="replicate"), highpass, stride=1)
        x = x.flatten(1)
        out.append((x - x.mean(dim=1, keepdim=True)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3 * pixel_size * pixel_size), np.float32)


def _resnet50_state_dict(weights_path) -> dict:
    if weights_path is not None:
        path = Path(weights_path)
        if path.suffix != ".safetensors" or not path.is_file():
            raise ConfigError("weights_path", str(weights_path),
                              "an existing .safetensors file holding torchvision's ResNet-50 state dict")
        return load_file(str(path))
    try:
        # weights_only=True restricts unpickling to tensors; the hash in the file name is verified.
        return torch.hub.load_state_dict_from_url(RESNET50_URL, map_location="cpu", progress=False,
                                                  check_hash=True, weights_only=True)
    except Exception as err:  # offline, proxy, corrupt cache: all end in the same advice
        raise ConfigError(
            "weights_path", None,
            "a local .safetensors file of torchvision's ResNet-50 IMAGENET1K_V2 weights, because they are "
            f"neither in the torch hub cache nor downloadable ({err}). Either copy {RESNET50_URL} to "
            f"{torch.hub.get_dir()}/checkpoints/ (TORCH_HOME moves that folder), or on a machine with "
            "internet run `from torchvision.models import resnet50, ResNet50_Weights; "
            "from safetensors.torch import save_file; "
            "save_file(resnet50(weights=ResNet50_Weights.IMAGENET1K_V2).state_dict(), 'resnet50.safetensors')`"
            " and pass weights_path='resnet50.safetensors' (profile key memorization.weights_path)",
        ) from err


def _resnet50_embedding(images, batch_size, device, weights_path, input_size) -> np.ndarray:
    from torchvision.models import resnet50  # about 2.5 s to import (judges.models says why it waits)

    net = resnet50(weights=None)
    net.load_state_dict(_resnet50_state_dict(weights_path))
    net.fc = torch.nn.Identity()
    net.eval().to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for x in _batches(images, batch_size, device):
            # The whole image is resized, never cropped: a copy may differ anywhere, corners included.
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
            out.append(net((x - mean) / std).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)


def embed(images, method: str = "pixels", *, device="cpu", batch_size: int = 256, model=None,
          pixel_size: int = 16, weights_path=None, input_size: int = 224, highpass: int = 0) -> np.ndarray:
    """Image embeddings for similarity search: float32 ``[N, D]``, each row of unit L2 norm.

    images: uint8 ``[N, H, W, 3]`` (NHWC, 0..255; a memmap is read batch by batch).
    method:
      - ``"pixels"``: the image area-averaged to ``pixel_size`` x ``pixel_size``, minus its own mean
        (one scalar over all pixels and channels), then normalised. The cosine of two embeddings is the
        Pearson correlation of their thumbnails: it measures near-identical layout and colour, is blind to
        global brightness offsets, and knows nothing of semantics. D = 3 * pixel_size**2. A transparent
        baseline, sufficient for near-copies (noise, re-encoding), weak for crops or shifted objects.
        ``highpass`` = k (odd) first subtracts the thumbnail's k x k box blur: smooth scenes (plain sky,
        grass) then no longer correlate through their gradients alone, while two copies of one picture do.
      - ``"classifier"``: penultimate features of ``model`` (a classifier from ``bibad_utils.judges``,
        via ``judges.features``), normalised. Measures closeness in what the task classifier attends to:
        same class and similar appearance score high even without being copies.
      - ``"resnet50_imagenet"``: penultimate (global-average-pooled, D = 2048) features of torchvision's
        ResNet-50 with ImageNet weights, on the whole image resized to ``input_size`` px (no crop) and
        ImageNet-normalised. A stand-in for SSCD (see the module docstring): generic visual similarity,
        robust to small shifts and noise, but not trained to separate copies from look-alikes. Weights
        come from ``weights_path`` (a .safetensors state dict) or torchvision's download cache; offline
        without them a ConfigError naming ``weights_path`` explains how to supply them.
    device: torch device for the forward passes; batch_size: images per pass.
    """
    images = _check_images(images)
    if method not in EMBEDDINGS:
        raise ConfigError("method", method, " | ".join(EMBEDDINGS))
    fields = MEMORIZATION.field_map()  # the checks of the profile's keys of the same names
    fields["batch_size"].check("batch_size", batch_size)
    if method == "pixels":
        fields["pixel_size"].check("pixel_size", pixel_size)
        fields["highpass"].check("highpass", highpass)
        return _normalise(_pixel_embedding(images, batch_size, device, int(pixel_size), int(highpass)))
    if method == "classifier":
        if model is None:
            raise ConfigError("model", None, "a trained classifier (bibad_utils.judges) for method='classifier'")
        return _normalise(np.asarray(features(model, images, device=device, batch_size=batch_size)))
    Field("int", low=32).check("input_size", input_size)
    return _normalise(_resnet50_embedding(images, batch_size, device, weights_path, int(input_size)))
