"""Image quality of the generations: FD-clf (the clean classifier's features) and, where the Inception
weights are on disk and the images are large enough, Inception FID."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bibad_utils import metrics
from bibad_utils.base import ConfigError
from bibad_utils.data import to_float
from bibad_utils.judges import features, predict
from bibad_utils.metrics import Z95


FID_MODES = ("auto", "inception", "off")


# Inception features of 16-32 px images blown up to 299 px say little about them, and cost about a
# minute per thousand images on one CPU core: "auto" computes FID from this side length on.
FID_MIN_IMAGE_SIZE = 64


def inception_weights_path() -> Path:
    """Where torchvision keeps its Inception-v3 ImageNet weights (they are read only from there)."""
    import torch
    import torchvision

    url = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def inception_net(state_dict: dict | None = None):
    """torchvision's Inception-v3 with its classifier removed (outputs the 2048 pool features), in
    eval mode. ``state_dict``: its ImageNet weights (None: random weights, for tests only)."""
    import torch
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=state_dict is None,
                                          transform_input=False)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    net.fc = torch.nn.Identity()
    return net.eval()


def inception_features(net, images, batch_size: int = 64, device="cpu") -> np.ndarray:
    """Pool features float32 ``[N, 2048]`` of uint8 ``[N, H, W, 3]`` images, each resized to 299 px
    (bilinear, antialiased) and ImageNet-normalised."""
    import torch
    import torch.nn.functional as F


    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError("images", f"{images.dtype} {images.shape}", "uint8 [N, H, W, 3]")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).to(device)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1).to(device)
    net = net.to(device)
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = to_float(images[s:s + batch_size]).to(device)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", antialias=True, align_corners=False)
            out.append(net(((x + 1) / 2 - mean) / std).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 2048), np.float32)


def _fid_plan(study, fid: str) -> tuple[bool, str]:
    """(compute FID?, the reason when not)."""
    if fid not in FID_MODES:
        raise ConfigError("fid", fid, " | ".join(FID_MODES))
    if fid == "off":
        return False, "FID not computed (fid='off')"
    path = inception_weights_path()
    if not path.is_file():
        if fid == "inception":
            raise ConfigError("fid", fid, f"'auto' or 'off': torchvision's Inception-v3 weights are not at {path}")
        return False, f"FID not computed: torchvision's Inception-v3 weights ({path.name}) are not in the torch hub cache"
    if fid == "auto" and study.image_size < FID_MIN_IMAGE_SIZE:
        return False, (f"FID not computed: {study.image_size}-px images are below {FID_MIN_IMAGE_SIZE} px, "
                       "where Inception features are not meaningful")
    return True, ""


def quality_table(study, cells=None, fid: str = "auto", z: float = Z95) -> tuple[pd.DataFrame, str]:
    """Image quality of the DMs' all-class generations (default cells: the controls and, per attack, the cell
    with the largest p).

    Returns ``(df, fid_note)``. ``df`` has one row per cell plus a first row ``real train`` (as many
    real training images as generations, drawn with the study's seed: the level FD-clf reaches with no
    generation error at this sample size). Columns: cell, attack, ratio, n, ``fd_clf`` (squared feature
    units of the clean classifier), ``clf_acc`` (+ ``_lo``/``_hi``: the classifier finds the prompt's
    class), ``trigger_rate`` (the first attack's detector fires on the all-class set, + bounds; for a
    poisoned cell its own detector), and ``fid`` when computed. ``fid_note`` says why FID is absent
    ("" when present). FD-clf and FID compare with the real test set.
    """
    cells = study.control_cells() + study.top_cells() if cells is None else list(cells)
    use_fid, note = _fid_plan(study, fid)
    clf = study.judges.classifier()
    real_feats = features(clf, study.test_set.images, device=study.device)
    ref_idx = study.real_reference_indices(int(study.cfg.sampling.n_all))
    ref_images = study.train_set.images_uint8(ref_idx)
    ref_labels = study.train_set.labels[ref_idx]
    net = real_incep = None
    if use_fid:
        import torch
        net = inception_net(torch.load(inception_weights_path(), map_location="cpu", weights_only=True))
        real_incep = inception_features(net, np.asarray(study.test_set.images), device=study.device)

    def row(name, attack, ratio, images, labels, feats, pred, trig):
        n = len(labels)
        k_acc, k_trig = int(np.sum(pred == labels)), int(np.sum(trig))
        r = {"cell": name, "attack": attack, "ratio": ratio, "n": n,
             "fd_clf": metrics.frechet_distance(feats, real_feats),
             **metrics.rate_columns("clf_acc", k_acc, n, z), **metrics.rate_columns("trigger_rate", k_trig, n, z)}
        if use_fid:
            r["fid"] = metrics.frechet_distance(inception_features(net, images, device=study.device), real_incep)
        return r

    first = study.cfg.attacks[0]
    ref_pred, _ = predict(clf, ref_images, device=study.device)
    ref_trig, _ = predict(study.judges.detector(first), ref_images, device=study.device)
    rows = [row("real train", "real", 0.0, ref_images, ref_labels,
                features(clf, ref_images, device=study.device), ref_pred, ref_trig.astype(bool))]
    for cell in cells:
        det = cell.trigger_kind or first
        w_all = study.guidance_all
        j = study.judges.judged(cell, det)[("all", w_all)]
        gen = study.generations(cell)[("all", w_all)]
        rows.append(row(cell.name, cell.kind, cell.ratio, gen.images, gen.labels, j["features"], j["pred"],
                        j["trigger"]))
    cols = ["cell", "attack", "ratio", "n", "fd_clf", "clf_acc", "clf_acc_lo", "clf_acc_hi", "trigger_rate",
            "trigger_rate_lo", "trigger_rate_hi"] + (["fid"] if use_fid else [])
    return pd.DataFrame(rows).reindex(columns=cols), note
