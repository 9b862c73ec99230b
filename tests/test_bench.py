"""The benchmark helpers (not the timings: those belong in BENCHMARKS.md, never in a test)."""

import json
import os

import torch

from bibad_utils import bench


def test_dc_rows_count_unet_evals_of_both_modes():
    rows = bench.bench_dc(torch.device("cpu"), n_images=2, n_levels=4, adaptive=((2, 3),), batch_size=64)
    assert len(rows) == 2
    assert "exhaustive" in rows[0][0] and "adaptive" in rows[1][0]
    # 10 classes x 4 levels; adaptive: 2 levels x 10 classes + 2 levels x 3 survivors
    assert rows[0][1].startswith("40 UNet evals/image") and rows[1][1].startswith("26 UNet evals/image")


def test_demo_dc_rows_read_the_stage_artifact(tmp_path):
    assert bench.demo_dc_rows(tmp_path) == []
    art = tmp_path / "artifacts" / "castle_dc_bench" / "abc"
    art.mkdir(parents=True)
    row = dict(cell="badnets1 p=5%", mode="adaptive", stages="[[2, 3]]", n_images=5, device="cpu", threads=2,
               unet_evals_per_image=44.0, seconds_per_image=0.071, accuracy=1.0, agreement=0.8)
    (art / "benchmark.json").write_text(json.dumps([row]))
    older = tmp_path / "artifacts" / "castle_dc_bench" / "old"
    older.mkdir()
    (older / "benchmark.json").write_text(json.dumps([dict(row, n_images=3)]))
    os.utime(older / "benchmark.json", (1, 1))  # an earlier setting's artifact is not reported
    (name, value), = bench.demo_dc_rows(tmp_path)
    assert "badnets1 p=5%" in name and "[[2, 3]]" in name
    assert value == "44 UNet evals/image, 71 ms/image; accuracy 1.00, agreement with exhaustive 0.80"


def test_update_markdown_replaces_only_its_section(tmp_path):
    path = tmp_path / "B.md"
    bench.update_markdown(path, "cpu: x", "first-body\n")
    bench.update_markdown(path, "cuda: y", "second-body\n")
    bench.update_markdown(path, "cpu: x", "third-body\n")
    text = path.read_text()
    assert "third-body" in text and "second-body" in text and "first-body" not in text


def test_lever_rows_name_each_lever_with_its_load():
    import torch

    from bibad_utils.bench import bench_levers

    before = torch.get_num_threads()
    rows = bench_levers(torch.device("cpu"), 0.01, batch=4, threads=(1,), compile_unet=False, sample_batches=(2, 4))
    names = [r[0] for r in rows]
    assert len(rows) == 5 and torch.get_num_threads() == before
    assert "eager, 1 thread(s)" in names[0] and "channels_last, 1 thread(s)" in names[1]
    assert "bf16 autocast, 1 thread(s)" in names[2] and "CPU bf16 units:" in rows[2][1]
    assert "batch 2" in names[3] and "batch 4" in names[4]
    assert rows[0][1].startswith(f"{float(rows[0][1].split()[0]):.2f} steps/s (1.00x); load")
    assert all("load" in value for _, value in rows)


def _profile_costs():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "profile_costs.py"
    spec = importlib.util.spec_from_file_location("profile_costs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_sizing_counts_the_grid_flops_and_refuses_a_bad_rate(tmp_path, capsys):
    import re

    import pytest

    costs = _profile_costs()

    def sized(steps):
        assert costs.main(["--profile", "smoke", "--gpu-gflops", "1000", "--set", f"run_dir={tmp_path}",
                           "--set", f"finetune.steps={steps}"]) == 0
        out = capsys.readouterr().out
        pflop = float(re.search(r"x \d+ steps: ([\d.e+-]+) PFLOP", out).group(1))
        step = float(re.search(r"forward \+ backward\): ([\d.]+) GFLOP", out).group(1))
        n_ft = int(re.search(r"(\d+) fine-tunings x", out).group(1))
        return out, pflop, step, n_ft

    out, _, step, n_ft = sized(1000)
    assert step > 0 and n_ft >= 3 and "pre-training:" in out and "DM work in all:" in out
    assert "at 1000 GFLOP/s achieved" in out
    _, pflop_a, _, _ = sized(10000)
    assert pflop_a == pytest.approx(n_ft * 10000 * step / 1e6, rel=0.06)  # steps x FLOPs per step, in PFLOP
    with pytest.raises(SystemExit):
        costs.main(["--profile", "smoke", "--gpu-gflops", "0"])
    assert "--gpu-gflops: 0.0 is not a rate" in capsys.readouterr().err
