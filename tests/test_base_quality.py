"""How good the clean base DM is (chapter 02): the per-class table of content judges, their agreement,
FD-clf, kept pre-training checkpoints and the curve over them, the ``judges.external`` key, and the
promise that the defaults leave every artifact key of the demo unchanged. One tiny smoke study with a
4-step pre-training (two checkpoints kept) serves the end-to-end checks."""

import math

import numpy as np
import pytest

from bibad_utils import content_judges
import torch
from matplotlib.figure import Figure
from safetensors.torch import load_file, save_file

from bibad_utils.checkpoints import kept_steps
from bibad_utils.config import ConfigError, load_profile
from bibad_utils.experiments import training_report as tr
from bibad_utils.experiments.training_report import base_quality as bq
from bibad_utils.judges import CifarResNet, cifar_resnet_judge
from bibad_utils.judges.profile import check_external, judge_settings
from bibad_utils.stages import Study
from bibad_utils.training import PRETRAIN, train_diffusion

# tests/test_grid.py's DEMO_KEYS["pretrain"]: the shared demo cache is found under it, so it never changes
DEMO_PRETRAIN_KEY = "0d345edb07fef81e"
TINY_PRETRAIN = {"steps": 4, "batch_size": 8, "lr": 1.0e-3, "checkpoint_every": 1, "keep_checkpoints": 2}


def _fake_resnet(path, seed=0):
    """A randomly initialised ResNet-20 written as safetensors (an external judge's file)."""
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in CifarResNet(20).state_dict().items()}, str(path))
    return path


# ---------------------------------------------------------------------------------- pure functions
def test_kept_steps_spread_evenly_and_end_at_the_last_step():
    assert kept_steps(2000, 250, 4) == [500, 1000, 1500, 2000]
    assert kept_steps(2000, 250, 1) == [2000]
    assert kept_steps(10, 4, 5) == [4, 8, 10]  # fewer checkpoints than asked: all of them
    assert kept_steps(10, 4, 0) == [] and kept_steps(0, 1, 3) == []


def test_class_kappa():
    a = np.array([0, 1, 2, 2, 1, 0])
    assert tr.class_kappa(a, a, 3) == 1.0
    b = np.array([0, 1, 2, 1, 1, 2])
    po, pa, pb = 4 / 6, np.bincount(a, minlength=3) / 6, np.bincount(b, minlength=3) / 6
    assert tr.class_kappa(a, b, 3) == pytest.approx((po - pa @ pb) / (1 - pa @ pb))
    assert math.isnan(tr.class_kappa([], [], 3)) and math.isnan(tr.class_kappa([1, 1], [1, 1], 3))
    with pytest.raises(ConfigError):
        tr.class_kappa([0, 1], [0], 2)


def test_keep_checkpoints_needs_a_folder_to_keep_them_in(tmp_path):
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        train_diffusion(None, [0, 1, 2, 3], steps=2, batch_size=2, lr=1e-3, checkpoint_every=1,
                        work_dir=tmp_path, seed=0, keep_checkpoints=1, progress=False)
    with pytest.raises(ConfigError, match="pretrain.keep_checkpoints"):
        PRETRAIN.validate({"steps": 10, "batch_size": 4, "lr": 1e-3, "keep_checkpoints": -1})


# ------------------------------------------------------------------------------ profile and keys
def test_external_judge_key_is_validated_at_load(tmp_path):
    weights = _fake_resnet(tmp_path / "r20.safetensors")
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(ConfigError, match="judges.external.path") as err:
        load_profile("smoke", {"judges": {"external": {"kind": "cifar_resnet", "path": str(missing)}}})
    assert str(missing) in str(err.value)
    with pytest.raises(ConfigError, match=r"judges.external.kind.*cifar_resnet"):
        load_profile("smoke", {"judges": {"external": {"kind": "vit", "path": str(weights)}}})
    with pytest.raises(ConfigError, match="judges.external.weights"):
        load_profile("smoke", {"judges": {"external": {"kind": "cifar_resnet", "path": str(weights), "weights": 1}}})
    with pytest.raises(ConfigError, match="judges.external"):
        load_profile("smoke", {"judges": {"external": "cifar_resnet"}})
    with pytest.raises(ConfigError, match="judges.external.path"):
        load_profile("smoke", {"judges": {"external": {"kind": "cifar_resnet"}}})
    cfg = load_profile("smoke", {"judges": {"external": {"kind": "cifar_resnet", "path": str(weights)}}})
    assert cfg["judges"]["external"] == {"kind": "cifar_resnet", "path": str(weights)}  # as written
    # a study setting: never a judge's training argument nor part of its artifact key
    assert judge_settings(cfg["judges"]) == judge_settings(load_profile("smoke")["judges"])
    assert check_external(None) is None
    # relative paths are read from the repository root
    assert check_external({"kind": "cifar_resnet", "path": "pyproject.toml"})["path"].endswith("/pyproject.toml")


def test_defaults_leave_the_demo_keys_unchanged(tmp_path):
    demo = Study("demo", {"run_dir": str(tmp_path)}, progress=False)
    assert demo.pretrain_expected_key() == DEMO_PRETRAIN_KEY
    assert "keep_checkpoints" not in demo._train_section("pretrain")
    zero = demo.variant({"pretrain": {"keep_checkpoints": 0}})
    assert zero.pretrain_expected_key() == DEMO_PRETRAIN_KEY  # 0 written out is the default
    kept = demo.variant({"pretrain": {"keep_checkpoints": 3}})
    assert kept.pretrain_expected_key() != DEMO_PRETRAIN_KEY  # an artifact with more files: another key
    assert demo.variant({"judges": {"external": None}}).judges.params() == demo.judges.params()


# -------------------------------------------------------------------------------- no base DM
def test_smoke_without_a_base_dm_says_so(tmp_path):
    study = Study("smoke", {"run_dir": str(tmp_path)}, progress=False)
    assert study.pretrain_key is None and not tr.has_base(study)
    table, agree, fd, curve = (tr.base_quality_table(study), tr.judge_agreement(study), tr.base_fd(study),
                               tr.quality_curve(study))
    assert table.empty and list(table.columns) == bq.TABLE_COLUMNS
    assert agree.empty and fd.empty and curve.empty and tr.kept_checkpoints(study) == []
    assert "no clean base DM" in tr.format_quality_table(table).iloc[0, 0]
    for fig in (tr.base_samples_figure(study), tr.quality_curve_figure(curve, table)):
        assert isinstance(fig, Figure)
    facts = tr.base_quality_facts(study, table, agree, fd, curve)
    assert facts["nb02_base_exists"] is False and "no clean base DM" in facts["nb02_base_summary"]
    assert all(k.startswith("nb02_base_") for k in facts) and math.isnan(facts["nb02_base_clf_rate"])
    assert not any(study.store.list(s) for s in ("pretrain", content_judges.PRED_STAGE, bq.GEN_STAGE, bq.FD_STAGE))


# ------------------------------------------------------------------------------ a tiny base DM
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run = tmp_path_factory.mktemp("base-quality")
    return Study("smoke", {"run_dir": str(run), "pretrain": TINY_PRETRAIN}, progress=False)


def test_kept_checkpoints_survive_the_build(tiny):
    assert tiny.pretrain_key is not None
    kept = tr.kept_checkpoints(tiny)
    assert [k["step"] for k in kept] == [2, 4]
    assert [k["images_seen"] for k in kept] == [16, 32]
    assert 0 < kept[0]["wall_time_s"] <= kept[1]["wall_time_s"]
    assert not (tiny.store.root / "pretrain" / f".work-{tiny.pretrain_key}").exists()  # the work dir is gone
    assert tiny.store.verify("pretrain", tiny.pretrain_key, full=True) == []  # listed in the manifest
    # the last kept EMA weights are the base DM's
    final = load_file(kept[-1]["path"])
    for k, v in tiny.model(None).state_dict_to_save().items():
        assert torch.equal(final[k].to(v.dtype), v.cpu()), k


def test_base_quality_table_shape_and_rates(tiny):
    table = tr.base_quality_table(tiny)
    names, n_all = tiny.class_names, int(tiny.cfg["sampling"]["n_all"])
    assert list(table.columns) == bq.TABLE_COLUMNS and len(table) == len(names) + 1
    assert list(table["class"]) == names + [bq.ALL_CLASSES] and set(table["judge"]) == {content_judges.CLEAN_JUDGE}
    per_class, overall = table.iloc[:-1], table.iloc[-1]
    assert per_class["n"].sum() == overall["n"] == n_all and per_class["k"].sum() == overall["k"]
    assert ((table["rate_lo"] <= table["rate"]) & (table["rate"] <= table["rate_hi"])).all()
    assert np.allclose(table["rate"], table["k"] / table["n"]) and (table["chance"] == 1 / len(names)).all()
    # the ceiling: the clean classifier's own test accuracy
    assert overall["real_rate"] == pytest.approx(tiny.judges.classifier_report()["accuracy"])
    assert overall["real_n"] == len(tiny.test_set.labels)
    gen = tiny.generations(None)[("all", tiny.guidance_all)]
    clean = content_judges.judge_specs(tiny)[0]
    pred = content_judges.predictions(tiny, clean, tiny.generation_key(None), {"all": gen.images})["all"]
    assert overall["rate"] == pytest.approx(np.mean(pred == gen.labels))
    assert table.attrs["guidance"] == tiny.guidance_all and table.attrs["sets"] == ["all"]
    shown = tr.format_quality_table(table)
    assert list(shown.index) == names + [bq.ALL_CLASSES] and shown.shape[1] == 3
    assert isinstance(tr.base_samples_figure(tiny, per_class=2), Figure)
    # another w: sampled here, cached
    other = tr.base_quality_table(tiny, guidance=3)
    assert other.attrs["guidance"] == 3.0 and len(tiny.store.list(bq.GEN_STAGE)) >= 1


def test_fd_and_curve(tiny):
    fd = tr.base_fd(tiny)
    assert list(fd["set"].str.contains("floor")) == [False, True] and (fd["fd_clf"] >= 0).all()
    assert fd["n"].tolist() == [tiny.cfg["sampling"]["n_all"]] * 2
    curve = tr.quality_curve(tiny)
    assert list(curve.columns) == bq.CURVE_COLUMNS and curve["step"].tolist() == [2, 4]
    table = tr.base_quality_table(tiny)
    # the last point is the base DM itself
    assert curve["rate"].iloc[-1] == pytest.approx(table["rate"].iloc[-1])
    assert tr.quality_curve(tiny, points=1)["step"].tolist() == [4]
    assert tr.quality_curve(tiny, points=[2])["step"].tolist() == [2]
    with pytest.raises(ConfigError, match="points"):
        tr.quality_curve(tiny, points=[3])
    n_gen = len(tiny.store.list(bq.GEN_STAGE))
    tr.quality_curve(tiny)  # cached: nothing sampled again
    assert len(tiny.store.list(bq.GEN_STAGE)) == n_gen
    assert isinstance(tr.quality_curve_figure(curve, table), Figure)
    facts = tr.base_quality_facts(tiny, table, tr.judge_agreement(tiny), fd, curve)
    assert facts["nb02_base_exists"] and facts["nb02_base_curve_points"] == 2
    assert facts["nb02_base_clf_rate"] == pytest.approx(table["rate"].iloc[-1])
    assert facts["nb02_base_fd"] == pytest.approx(fd["fd_clf"].iloc[0]) and math.isnan(facts["nb02_base_kappa"])


def test_an_external_judge_adds_rows_agreement_and_its_hash_to_the_keys(tiny, tmp_path, monkeypatch):
    weights = _fake_resnet(tmp_path / "r20.safetensors")
    # the smoke data's classes are not CIFAR-10's: the class names are dropped for this check
    monkeypatch.setattr(content_judges, "cifar_resnet_judge", lambda path, device="cpu": cifar_resnet_judge(
        path, device=device, class_names=None))
    study = tiny.variant({"judges": {"external": {"kind": "cifar_resnet", "path": str(weights)}}})
    table = tr.base_quality_table(study)
    assert len(table) == 2 * (len(study.class_names) + 1)
    assert table.attrs["judges"] == [content_judges.CLEAN_JUDGE, "cifar_resnet (external)"]
    agree = tr.judge_agreement(study)
    assert len(agree) == 1 and agree["n"].iloc[0] == study.cfg["sampling"]["n_all"]
    kappa = agree["kappa"].iloc[0]
    assert 0 <= agree["agreement"].iloc[0] <= 1 and (-1 <= kappa <= 1 or math.isnan(kappa))
    shown = tr.format_quality_table(table)
    assert shown.shape[1] == 5
    facts = tr.base_quality_facts(study, table, agree, tr.base_fd(study), tr.quality_curve(study, points=1))
    assert facts["nb02_base_ext_name"] == "cifar_resnet (external)" and "external judge" in facts["nb02_base_summary"]
    before = set(study.store.list(content_judges.PRED_STAGE))
    _fake_resnet(weights, seed=1)  # other weights at the same path: another SHA-256, other cached predictions
    tr.base_quality_table(study.variant({}))
    assert len(set(study.store.list(content_judges.PRED_STAGE)) - before) == 2  # its generations and the real test set
    # a judge of other classes is refused when loaded
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="judges.external.path"):
        content_judges.judge_specs(study)[1].load()
