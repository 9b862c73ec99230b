"""The CIFAR-10 ResNets (He et al. 2016, section 4.2) as a second content judge: the architecture, loading
safetensors with the checkpoints' ``module.`` prefix, the built-in normalisation, the judge interface."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bibad_utils.config import ConfigError
from bibad_utils.data import to_float
from bibad_utils.judges import evaluate_judge, features, predict
from bibad_utils.judges.cifar_arch import IMAGENET_MEAN, IMAGENET_STD, CifarResNet, check_depth
from bibad_utils.judges.cifar_resnet import cifar_resnet_judge, load_cifar_resnet


def fresh(depth: int = 20, seed: int = 0) -> CifarResNet:
    """A model with random weights and random batch-norm statistics (so that a lost tensor shows)."""
    torch.manual_seed(seed)
    model = CifarResNet(depth)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def checkpoint(model: CifarResNet, path, prefix: str = "module.", counters: bool = False):
    """Save as the public checkpoints are: prefixed keys, without the num_batches_tracked counters."""
    state = {prefix + k: v.contiguous() for k, v in model.state_dict().items()
             if counters or not k.endswith("num_batches_tracked")}
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("depth,params,millions", [(20, 269_722, 0.27), (56, 853_018, 0.86)])
def test_parameter_counts(depth, params, millions):
    model = CifarResNet(depth)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params
    assert abs(params / 1e6 - millions) < 0.01
    assert model.n == (depth - 2) // 6 and len(model.layer1) == model.n
    keys = model.state_dict()
    assert "linear.weight" in keys and "conv1.weight" in keys and "layer3.0.conv1.weight" in keys
    assert not any("shortcut" in k or "mean" == k or "std" == k for k in keys)  # option A: no parameters
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_pads_channels_on_both_sides():
    block = CifarResNet(20).layer2[0]
    x = torch.randn(1, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (1, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2]) and not s[:, :8].any() and not s[:, 24:].any()
    assert CifarResNet(20).layer1[0].shortcut(x) is x


def test_checkpoint_round_trip_with_module_prefix(tmp_path):
    model = fresh(20)
    x = torch.rand(4, 3, 32, 32)
    for name, kwargs in (("plain.safetensors", {}), ("counters.safetensors", {"counters": True}),
                         ("unprefixed.safetensors", {"prefix": ""})):
        loaded = load_cifar_resnet(checkpoint(model, tmp_path / name, **kwargs))
        assert loaded.depth == 20 and not loaded.training
        for key, value in model.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(loaded.state_dict()[key], value), key
        torch.testing.assert_close(loaded(x), model(x))
    deep = load_cifar_resnet(checkpoint(fresh(56, seed=1), tmp_path / "r56.safetensors"), depth=56)
    assert deep.depth == 56


def test_strict_load_names_the_problem(tmp_path):
    model = fresh(20)
    state = {"module." + k: v.contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    broken = dict(state)
    del broken["module.layer2.1.bn1.running_var"]
    save_file(broken, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match="running_var"):
        load_cifar_resnet(tmp_path / "missing.safetensors")
    save_file({**state, "module.extra.weight": torch.zeros(3)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ConfigError, match="extra.weight"):
        load_cifar_resnet(tmp_path / "extra.safetensors")
    with pytest.raises(ConfigError, match="depth"):
        load_cifar_resnet(checkpoint(model, tmp_path / "r20.safetensors"), depth=56)
    with pytest.raises(ConfigError, match="weights"):
        load_cifar_resnet(tmp_path / "absent.safetensors")
    for bad in (21, 0, True, "20"):
        with pytest.raises(ConfigError, match="depth"):
            check_depth(bad)


def test_normalisation_is_built_in():
    model = fresh(20)
    x = torch.rand(3, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), (x - mean) / std)
    z = (x - mean) / std
    out = model.bn1(model.conv1(z)).relu()
    out = model.layer3(model.layer2(model.layer1(out))).mean((2, 3))
    torch.testing.assert_close(model(x), model.linear(out))


def test_judge_interface_takes_the_projects_images(tmp_path):
    model = fresh(20)
    judge = cifar_resnet_judge(model)
    assert judge.config["arch"] == "cifar_resnet20" and judge.config["num_classes"] == 10
    assert judge.config["class_names"][4] == "deer"
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    x01 = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    logits = model(x01)
    torch.testing.assert_close(judge(to_float(u8)), logits, atol=1e-5, rtol=1e-5)  # [-1, 1] in, same logits
    pred, probs = predict(judge, u8, batch_size=2)
    assert pred.tolist() == logits.argmax(1).tolist() and probs.shape == (5, 10)
    np.testing.assert_allclose(features(judge, u8), model.features(x01).detach().numpy(), atol=1e-5)
    report = evaluate_judge(judge, u8, labels=pred)
    assert report["accuracy"] == 1.0 and report["n"] == 5
    # weights are shared, and a path gives the same judge
    from_file = cifar_resnet_judge(checkpoint(model, tmp_path / "r20.safetensors"))
    torch.testing.assert_close(from_file(to_float(u8)), logits)
    assert from_file.meta["weights"].endswith("r20.safetensors")
    # other sizes are resized to the 32 px the network was trained at
    assert predict(judge, np.repeat(np.repeat(u8, 2, 1), 2, 2))[1].shape == (5, 10)


@pytest.mark.parametrize("arch,params", [("resnet20", 269_722), ("resnet56", 853_018)])
def test_the_cifar_resnets_as_trainable_classifiers(arch, params, tmp_path):
    """arch resnet20 / resnet56 builds He et al.'s network as a classifier of the project's interface (a
    victim or judge trained here): the parameter count of the public network, ImageNet normalisation equal to
    the recipe's, a safetensors round trip through save_classifier / load_classifier; no ImageNet weights."""
    from bibad_utils.judges import build_classifier, load_classifier, save_classifier

    torch.manual_seed(0)
    model = build_classifier(arch, 10, 32).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN) and model.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    save_classifier(model, tmp_path / arch)
    again = load_classifier(tmp_path / arch)
    assert again.config["arch"] == arch and torch.equal(again(x), model(x))
    assert model.features(x).shape == (3, 64)
    with pytest.raises(ConfigError) as err:
        build_classifier(arch, 10, 32, pretrained=True)
    assert err.value.param == "judges.pretrained"


def test_the_more_accurate_content_judge_reads_m_and_the_other_reading_is_kept(tmp_path, monkeypatch):
    """Stage 04's M comes from the content judge that reads the real test images more accurately: with an
    external judge that wins, M is its reading (the trained judge's kept as pred_trained) and the agreement
    table is filled; when the clean classifier wins (or ties), nothing changes."""
    from bibad_utils import content_judges
    from bibad_utils.experiments import insights
    from bibad_utils.experiments.insights import judging
    from bibad_utils.stages import Cell, Study

    path = checkpoint(fresh(20), tmp_path / "r20.safetensors")
    monkeypatch.setattr(content_judges, "cifar_resnet_judge",  # the smoke data's classes are not CIFAR-10's
                        lambda p, device="cpu": cifar_resnet_judge(p, device=device, class_names=None))
    over = {"run_dir": str(tmp_path / "run"), "judges": {"external": {"kind": "cifar_resnet", "path": str(path)}}}
    study = Study("smoke", over, progress=False)
    real = content_judges.real_predictions
    truth = np.asarray(study.test_set.labels)

    def rigged(winner):  # the named judge reads every real test image right, the other none
        return lambda s, spec: truth if spec.name == winner else (truth + 1) % 10

    monkeypatch.setattr(content_judges, "real_predictions", rigged("clean classifier"))
    choice = content_judges.content_choice(study)
    assert [r["judge"] for r in choice["judges"]] == ["clean classifier", "cifar_resnet (external)"]
    assert choice["chosen"] == "clean classifier" and choice["judges"][0]["accuracy"] == 1.0
    rec = study.judges.judged(Cell("clean"), "badnets1")[("target", 1.0)]
    assert np.array_equal(rec["pred"], rec["pred_trained"]) and insights.content_agreement_table(study).empty

    monkeypatch.setattr(content_judges, "real_predictions", rigged("cifar_resnet (external)"))
    assert content_judges.content_choice(study)["chosen"] == "cifar_resnet (external)"
    rec = study.judges.judged(Cell("clean"), "badnets1")[("target", 1.0)]
    spec = content_judges.judge_specs(study)[1]
    ext = predict(spec.load(), rec_images := study.generations(Cell("clean"))[("target", 1.0)].images)[0]
    assert np.array_equal(rec["pred"], ext) and np.array_equal(rec["match"], ext == rec["labels"])
    table = insights.content_agreement_table(study, [Cell("clean")])
    assert list(table["guidance"]) == [1.0, 5.0] and (table["n"] == len(rec_images)).all()
    assert table["agreement"].iloc[0] == pytest.approx(float(np.mean(rec["match"] == (rec["pred_trained"] == rec["labels"]))))
    monkeypatch.setattr(content_judges, "real_predictions", real)
