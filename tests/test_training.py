"""train_diffusion on a tiny pixel DM: learning, checkpoints, exact resume, settings checks."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from bibad_utils.checkpoints import latest_checkpoint
from bibad_utils.config import ConfigError
from bibad_utils.diffusion import build_model
from bibad_utils.training import FINETUNE, PRETRAIN, batch_indices, derive_seed, diffusion_loss, train_diffusion

TINY = {"backend": "pixel", "block_out_channels": [16, 32], "attention": [False, True], "norm_groups": 8,
        "unshuffle": 2, "dropout": 0.1}


class FlatImages:
    """Stand-in for the dataset interface: class k is a flat grey image at level ``levels[k]``, an
    easily learnable data distribution (``labels``, ``class_names``, ``__len__``, ``batch``)."""

    def __init__(self, n=24, size=16, num_classes=3):
        self.labels = np.arange(n, dtype=np.int64) % num_classes
        self.class_names = [f"class{k}" for k in range(num_classes)]
        levels = np.linspace(-0.8, 0.8, num_classes, dtype=np.float32)
        self.images = np.broadcast_to(levels[self.labels][:, None, None, None], (n, 3, size, size)).copy()

    def __len__(self):
        return len(self.labels)

    def batch(self, indices):
        idx = np.asarray(indices)
        return torch.from_numpy(self.images[idx].copy()), torch.from_numpy(self.labels[idx].copy())


def tiny_model(data, **overrides):
    return build_model({**TINY, **overrides}, data.class_names, image_size=16)


def test_derive_seed_is_deterministic_and_separates_streams():
    assert derive_seed(0, "noise", 3) == derive_seed(0, "noise", 3)
    seeds = {derive_seed(0, "noise", s) for s in range(100)} | {derive_seed(0, "epoch", s) for s in range(100)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**63 for s in seeds)


def test_batch_indices_cover_each_epoch_once():
    n, b = 10, 4
    stream = np.concatenate([batch_indices(7, s, b, n) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:])  # each epoch has its own order
    assert np.array_equal(batch_indices(7, 3, b, n), stream[12:16])  # a pure function of (seed, step)
    assert not np.array_equal(batch_indices(8, 0, b, n), batch_indices(7, 0, b, n))


def test_loss_decreases_on_a_learnable_problem(tmp_path):
    data = FlatImages()
    model = tiny_model(data, dropout=0.0)
    result = train_diffusion(model, data, steps=30, batch_size=8, lr=5e-3, ema_decay=0.9, cond_drop=0.0,
                             checkpoint_every=30, work_dir=tmp_path, seed=0, progress=False, log_every=5)
    losses = [loss for _, loss in result.loss_log]
    assert [s for s, _ in result.loss_log] == [5, 10, 15, 20, 25, 30]
    # measured: 0.99 -> 0.56 over the six windows (two seeds alike)
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses
    assert result.steps == 30 and result.completed and result.images_seen == 30 * 8
    assert result.wall_time_s > 0


def test_checkpoints_are_safetensors_and_only_the_latest_is_kept(tmp_path):
    data = FlatImages()
    model = tiny_model(data)
    train_diffusion(model, data, steps=5, batch_size=4, lr=1e-3, checkpoint_every=2, work_dir=tmp_path,
                    seed=1, progress=False)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step-00000005"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000005"]
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "checksums.json", "ema.safetensors", "model.safetensors", "optimizer.safetensors", "state.json"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 5 and state["hparams"]["seed"] == 1
    n_params = len(model.trainable_parameters())
    with safe_open(str(ckpt / "optimizer.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        groups = json.loads(f.metadata()["param_groups"])
    assert {f"state.{i}.exp_avg" for i in range(n_params)} <= keys
    assert len(groups[0]["params"]) == n_params
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]


def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(tmp_path):
    data = FlatImages()
    init = tiny_model(data).state_dict_to_save()
    kwargs = dict(steps=5, batch_size=4, lr=1e-3, weight_decay=0.01, ema_decay=0.99, cond_drop=0.3,
                  checkpoint_every=2, seed=3, init_state=init, progress=False, log_every=2)

    straight = tiny_model(data)
    ref = train_diffusion(straight, data, work_dir=tmp_path / "a", **kwargs)

    killed = train_diffusion(tiny_model(data), data, work_dir=tmp_path / "b", stop_after=3, **kwargs)
    assert killed.steps == 3 and not killed.completed
    assert latest_checkpoint(tmp_path / "b").name == "step-00000002"  # step 3 was lost with the process
    resumed_model = tiny_model(data)  # fresh weights: everything must come from the checkpoint
    resumed = train_diffusion(resumed_model, data, work_dir=tmp_path / "b", **kwargs)
    assert resumed.resumed_from == 2 and resumed.steps == 5

    a, b = straight.state_dict_to_save(), resumed_model.state_dict_to_save()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(ref.ema_state[k], resumed.ema_state[k]) for k in ref.ema_state)
    assert not all(torch.equal(a[k], ref.ema_state[k]) for k in a)  # the EMA really is another average
    assert ref.loss_log == resumed.loss_log and ref.images_seen == resumed.images_seen


def test_a_checkpoint_changed_after_it_was_written_is_not_resumed_from(tmp_path, capsys):
    """Same-size corruption of a checkpoint's weights (mtime set back): the run starts over instead of
    resuming from the changed bytes, and ends with exactly the uninterrupted run's weights."""
    data = FlatImages()
    init = tiny_model(data).state_dict_to_save()
    kwargs = dict(steps=4, batch_size=4, lr=1e-3, checkpoint_every=2, seed=5, init_state=init, progress=False)
    straight = tiny_model(data)
    train_diffusion(straight, data, work_dir=tmp_path / "a", **kwargs)
    train_diffusion(tiny_model(data), data, work_dir=tmp_path / "b", stop_after=3, **kwargs)
    ckpt = latest_checkpoint(tmp_path / "b")
    weights = ckpt / "model.safetensors"
    st = weights.stat()
    data_bytes = bytearray(weights.read_bytes())
    data_bytes[-5] ^= 0x40
    weights.write_bytes(bytes(data_bytes))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert latest_checkpoint(tmp_path / "b") is None
    assert "is not resumed from: model.safetensors has other bytes" in capsys.readouterr().err
    again = tiny_model(data)
    res = train_diffusion(again, data, work_dir=tmp_path / "b", **kwargs)
    assert res.resumed_from == 0
    a, b = straight.state_dict_to_save(), again.state_dict_to_save()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(tmp_path):
    data = FlatImages()
    train_diffusion(tiny_model(data), data, steps=2, batch_size=4, lr=1e-3, checkpoint_every=2,
                    work_dir=tmp_path, seed=0, progress=False)
    with pytest.raises(ConfigError, match="lr"):
        train_diffusion(tiny_model(data), data, steps=4, batch_size=4, lr=5e-4, checkpoint_every=2,
                        work_dir=tmp_path, seed=0, progress=False)


def test_init_state_and_no_ema(tmp_path):
    data = FlatImages()
    source = tiny_model(data)
    init = {k: v.clone() for k, v in source.state_dict_to_save().items()}
    target = tiny_model(data)
    zero = train_diffusion(target, data, steps=0, batch_size=4, lr=1e-3, checkpoint_every=1,
                           work_dir=tmp_path / "zero", seed=0, init_state=init, progress=False)
    assert all(torch.equal(zero.ema_state[k], init[k]) for k in init)
    assert all(torch.equal(target.state_dict_to_save()[k], init[k]) for k in init)
    plain = train_diffusion(target, data, steps=2, batch_size=4, lr=1e-3, ema_decay=None, checkpoint_every=1,
                            work_dir=tmp_path / "plain", seed=0, progress=False)
    final = target.state_dict_to_save()
    assert all(torch.equal(plain.ema_state[k], final[k]) for k in final)


def test_diffusion_loss_drops_labels_to_the_null_class():
    data = FlatImages()
    model = tiny_model(data, dropout=0.0)
    x, y = data.batch(range(6))
    seen = []
    hook = model.unet.class_embedding.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    diffusion_loss(model, x, y, generator=torch.Generator().manual_seed(0), cond_drop=0.0)
    diffusion_loss(model, x, y, generator=torch.Generator().manual_seed(0), cond_drop=0.999)
    hook.remove()
    assert torch.equal(seen[0], y)
    assert torch.equal(seen[1], torch.full_like(y, model.null_class))


def test_bad_arguments_and_sections_raise_config_errors(tmp_path):
    data = FlatImages()
    with pytest.raises(ConfigError, match="cond_drop"):
        train_diffusion(tiny_model(data), data, steps=1, batch_size=4, lr=1e-3, cond_drop=1.0,
                        checkpoint_every=1, work_dir=tmp_path, seed=0, progress=False)
    FINETUNE.validate({"steps": 10, "batch_size": 4, "lr": 1e-4, "warmup_steps": 5, "grad_clip": 1.0})
    assert PRETRAIN.validate({"steps": 0}) == {"steps": 0}  # as written: the key of the model follows it
    with pytest.raises(ConfigError, match="finetune.momentum"):
        FINETUNE.validate({"steps": 10, "batch_size": 4, "lr": 1e-4, "momentum": 0.9})
    with pytest.raises(ConfigError, match="finetune.grad_clip"):
        FINETUNE.validate({"steps": 10, "batch_size": 4, "lr": 1e-4, "grad_clip": -1})
    with pytest.raises(ConfigError, match="finetune.lr"):  # required while steps > 0
        FINETUNE.validate({"steps": 10, "batch_size": 4})


def test_the_training_sections_take_their_defaults_from_train_diffusion():
    import inspect

    params = inspect.signature(train_diffusion).parameters
    for section in (PRETRAIN, FINETUNE):
        for key, value in section.defaults().items():
            if key in params and params[key].default is not inspect.Parameter.empty:
                assert value == params[key].default, (section.name, key)
