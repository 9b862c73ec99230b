"""The paper's whole grid: the full and mnist profiles, training seeds, WaNet and five ratios through the
smoke model's chain, and ``bibad compute --cells`` against the notebooks' keys."""

import numpy as np
import pytest

from bibad_utils.metrics import wilson_interval

from bibad_utils import store as st
from bibad_utils.config import ConfigError, load_profile
from bibad_utils.judges.profile import judge_settings, wants_ablation
from bibad_utils.poison import n_poison_for, r_train
from bibad_utils.stages import Cell, Study, validate_train_seeds

FIVE_RATIOS = [0.01, 0.02, 0.05, 0.1, 0.2]

# Keys of the demo profile's chain as computed before training seeds existed: the shared demo cache
# (pre-trained and fine-tuned DMs, generations) is found under these, so they must never change.
DEMO_KEYS = {"data": "2cd6f05fc7ecab55", "poison": "f79ebc752244695f", "pretrain": "0d345edb07fef81e",
             "finetune": "41ab165d42c4ddef", "generate": "d0d8efe1b0eb7dcb", "finetune_clean": "115ca5b593379012"}
# the poisoned DMs' generations gained an all-class set at w = 5 (sampling.castle_guidance); without it the
# key is the one of every earlier run
DEMO_GENERATE_WITHOUT_CASTLE = "76dadcc4a1c45da1"


def _keys_only(study: Study) -> list:
    """Make ``study`` compute keys without building any artifact; returns the list of (stage, key) asked."""
    asked = []

    def cached(stage, params, inputs, build, **kw):
        asked.append((stage, st.artifact_key(stage, params, inputs)))
        return None

    study.store.cached = cached
    return asked


# ----------------------------------------------------------------------------------------- profiles
def test_full_profile_is_the_papers_grid(tmp_path):
    cfg = load_profile("full")
    demo = load_profile("demo")
    assert cfg["attacks"] == ["badnets1", "badnets2", "wanet"]
    assert sorted(cfg["ratios"]) == FIVE_RATIOS
    assert cfg["controls"] == ["clean", "relabel"]
    assert cfg["sampling"]["guidance"] == [1, 2, 5, 10] and cfg["sampling"]["guidance_all"] == 1
    # the demo's model, data and training schedule
    for key in ("dataset", "model", "pretrain", "finetune", "seed", "target"):
        assert cfg[key] == demo[key], key
    # the same judges; unlike the demo's first run, this one also trains them without augmentation
    assert judge_settings(cfg["judges"]) == judge_settings(demo["judges"])
    assert wants_ablation(cfg["judges"]) and not wants_ablation(demo["judges"])
    assert cfg["run_dir"] != demo["run_dir"]
    study = Study("full", {"run_dir": str(tmp_path)}, progress=False)
    assert len(study.cells()) == 2 + 3 * 5
    runs = study.cells(with_seeds=True)
    assert len(runs) == 29 and len(set(runs)) == 29
    assert [c.seed for c in study.seed_cells(Cell("clean"))] == [0, 1, 2]
    for p in FIVE_RATIOS:
        assert len(study.seed_cells(Cell("badnets1", p))) == 3
        assert study.seed_cells(Cell("wanet", p)) == [Cell("wanet", p)]
    assert study.seed_cells(Cell("relabel", 0.2)) == [Cell("relabel", 0.2)]


def test_mnist_profile_is_the_demo_grid_on_mnist5k():
    cfg, demo = load_profile("mnist"), load_profile("demo")
    assert cfg["dataset"]["name"] == "mnist5k" and cfg["dataset"]["image_size"] == demo["dataset"]["image_size"]
    for key in ("attacks", "ratios", "controls", "model", "finetune", "target"):
        assert cfg[key] == demo[key], key
    # the demo's judges but for a stronger brightness jitter: the mnist DM draws its digits on grey
    assert judge_settings(cfg["judges"]) == {**judge_settings(demo["judges"]), "color_jitter": 0.8}
    assert wants_ablation(cfg["judges"])
    # the demo's sampling plus the reference's default w = 5, so that its claims get the w = 5 rows
    assert cfg["sampling"] == {**demo["sampling"], "guidance": demo["sampling"]["guidance"] + [5]}
    # the same pre-training schedule; no shipped base DM (the one shipped was trained on the demo's data)
    def schedule(sec):
        return {k: v for k, v in sec.items() if k != "shipped"}

    assert schedule(cfg["pretrain"]) == schedule(demo["pretrain"]) and cfg["pretrain"]["shipped"] is False
    assert "train_seeds" not in demo  # absent: one run per cell, and the resolved demo profile unchanged


@pytest.mark.parametrize("per_class, ratios, documented", [
    (500, [0.05, 0.1], [0.33, 0.50]),                            # demo (and full) on procedural data
    (500, FIVE_RATIOS, [0.09, 0.17, 0.33, 0.50, 0.67]),         # full.yaml's comment
    (400, [0.05, 0.1], [0.33, 0.50]),                            # mnist: 400 training digits per class
])
def test_r_train_as_documented(per_class, ratios, documented):
    n = 10 * per_class
    got = [round(r_train(n_poison_for(n, p), per_class), 2) for p in ratios]
    assert got == documented


# ----------------------------------------------------------------------------------- training seeds
def test_train_seeds_validation():
    assert validate_train_seeds(2) == {"default": 2}
    assert validate_train_seeds({"clean": 3}) == {"default": 1, "clean": 3}
    for bad, param in [({"badnets3": 2}, "train_seeds.badnets3"), ({"clean": 0}, "train_seeds.clean"),
                       (True, "train_seeds"), ("3", "train_seeds"), ({"default": 1.5}, "train_seeds.default")]:
        with pytest.raises(ConfigError, match=param.replace(".", r"\.")):
            validate_train_seeds(bad)
    with pytest.raises(ConfigError, match="train_seeds.wanet"):
        load_profile("smoke", {"train_seeds": {"wanet": -1}})


def test_cell_seed_spelling():
    assert Cell.parse("badnets1:0.05@2") == Cell("badnets1", 0.05, "random", 2)
    assert Cell.parse("clean@1") == Cell("clean", seed=1) and Cell.parse("clean") == Cell("clean")
    assert Cell.parse("badnets1:0.1:duplicate@1").pool == "duplicate"
    assert Cell("badnets1", 0.1, seed=2).slug == "badnets1-p0.1-s2" and Cell("badnets1", 0.1).slug == "badnets1-p0.1"
    assert Cell("clean", seed=1).name == "clean seed 1" and Cell("clean").name == "clean"
    assert Cell("wanet", 0.2, seed=1).base == Cell("wanet", 0.2)
    for bad in ("clean@x", "badnets1:0.1@-1"):
        with pytest.raises(ConfigError, match="cell"):
            Cell.parse(bad)


def test_demo_keys_unchanged_and_seeds_keyed_apart(tmp_path):
    study = Study("demo", {"run_dir": str(tmp_path)}, progress=False)
    asked = _keys_only(study)
    cell = Cell("badnets1", 0.05)
    assert study.data_key == DEMO_KEYS["data"]
    assert study.poison_key(cell) == DEMO_KEYS["poison"]
    assert study.pretrain_key == DEMO_KEYS["pretrain"]
    assert study.model_key(cell) == DEMO_KEYS["finetune"]
    assert study.model_key(cell.with_seed(0)) == DEMO_KEYS["finetune"]
    assert study.generation_key(cell) == DEMO_KEYS["generate"]
    plain = Study("demo", {"run_dir": str(tmp_path), "sampling": {"castle_guidance": None}}, progress=False)
    _keys_only(plain)
    assert plain.generation_key(cell) == DEMO_GENERATE_WITHOUT_CASTLE
    assert study.model_key(Cell("clean")) == DEMO_KEYS["finetune_clean"]
    # other training runs: same poisoned set and base model, their own fine-tuned DM and generations
    seeded = {study.model_key(cell.with_seed(s)) for s in (1, 2)}
    assert len(seeded) == 2 and DEMO_KEYS["finetune"] not in seeded
    assert study.poison_key(cell.with_seed(1)) == DEMO_KEYS["poison"]
    assert study.generation_key(cell.with_seed(1)) != DEMO_KEYS["generate"]
    assert study.model_key(Cell("clean", seed=1)) not in seeded | {DEMO_KEYS["finetune_clean"]}
    assert {s for s, _ in asked} == {"poison", "pretrain", "finetune", "generate"}
    assert len({study.training_seed(s) for s in range(4)}) == 4 and study.training_seed(0) == study.seed
    # the demo has no train_seeds: one run per cell
    assert study.cells(with_seeds=True) == study.cells()


# ------------------------------------------------------------------ the smoke chain on the whole grid
TINY = {"attacks": ["badnets1", "badnets2", "wanet"], "ratios": FIVE_RATIOS,
        "train_seeds": {"default": 1, "badnets1": 2},
        "finetune": {"steps": 2, "checkpoint_every": 2},
        "sampling": {"steps": 2, "guidance": [1, 5], "n_target": 4, "n_all": 10, "batch_size": 10}}


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    return Study("smoke", {**TINY, "run_dir": str(tmp_path_factory.mktemp("grid"))}, progress=False)


def test_wanet_and_five_ratios_through_the_smoke_chain(tiny_grid):
    study = tiny_grid
    grid = study.grid_cells()
    assert [c.kind for c in grid] == ["badnets1"] * 5 + ["badnets2"] * 5 + ["wanet"] * 5
    n = len(study.train_set)
    models = set()
    for cell in grid:
        manifest = study.poison_manifest(cell)
        ps = study.poisoned(cell)
        idx = np.asarray(ps.indices)
        assert len(idx) == n_poison_for(n, cell.ratio) >= 2
        assert np.all(study.train_set.labels[idx] != study.target)
        assert np.all(ps.labels[idx] == study.target)
        # the trigger changed the poisoned images and nothing else
        poisoned, clean = ps.images_uint8(idx), study.train_set.images_uint8(idx)
        assert all(np.any(a != b) for a, b in zip(poisoned, clean)), cell.name
        others = np.setdiff1d(np.arange(n), idx)[:20]
        np.testing.assert_array_equal(ps.images_uint8(others), study.train_set.images_uint8(others))
        assert manifest is not None
        models.add(study.model_key(cell))
        gens = study.generations(cell)
        assert set(gens) == {("target", 1.0), ("target", 5.0), ("all", 1.0), ("all", 5.0)}   # castle_guidance
        assert gens[("target", 5.0)].images.shape == (4, 16, 16, 3)
        assert np.all(gens[("target", 1.0)].labels == study.target)
    assert len(models) == 15


def test_seeded_runs_stored_apart(tiny_grid):
    study = tiny_grid
    cell = Cell("badnets1", 0.05)
    runs = study.seed_cells(cell)
    assert runs == [cell, cell.with_seed(1)]
    assert study.seed_cells(Cell("wanet", 0.05)) == [Cell("wanet", 0.05)]
    k0, k1 = (study.model_key(c) for c in runs)
    assert k0 != k1
    assert study.store.path("finetune", k0).is_dir() and study.store.path("finetune", k1).is_dir()
    r0, r1 = study.train_record(runs[0]), study.train_record(runs[1])
    assert (r0["train_seed"], r1["train_seed"]) == (0, 1) and r0["seed"] != r1["seed"]
    assert r0["loss_log"] != r1["loss_log"]  # another random stream: other batches, noise and timesteps
    g0, g1 = study.generations(runs[0]), study.generations(runs[1])
    assert not np.array_equal(g0[("all", 1.0)].images, g1[("all", 1.0)].images)


def test_compute_cell_writes_the_notebook_key(tmp_path):
    from bibad_utils.cli import main

    run_dir = tmp_path / "run"
    sets = [f"--set=run_dir={run_dir}", "--set=finetune.steps=2", "--set=finetune.checkpoint_every=2",
            "--set=sampling.steps=2", "--set=sampling.n_target=4", "--set=sampling.n_all=10",
            "--set=train_seeds.badnets1=2"]
    assert main(["compute", "--profile", "smoke", *sets, "--cells", "badnets1:0.1@1"]) == 0
    store = run_dir / "artifacts"
    built = {stage: sorted(p.name for p in (store / stage).iterdir() if not p.name.startswith("."))
             for stage in ("finetune", "generate")}
    assert len(built["finetune"]) == 1 and len(built["generate"]) == 1
    # what a notebook asks for: the same artifacts, found rather than recomputed
    study = Study("smoke", {"run_dir": str(run_dir), "finetune": {"steps": 2, "checkpoint_every": 2},
                            "sampling": {"steps": 2, "n_target": 4, "n_all": 10}, "train_seeds": {"badnets1": 2}},
                  progress=False)
    cell = study.seed_cells(Cell("badnets1", 0.1))[1]
    assert study.model_key(cell) == built["finetune"][0]
    assert study.generation_key(cell) == built["generate"][0]
    assert len(list((store / "finetune").iterdir())) == 1  # found, nothing recomputed
    _keys_only(study)
    assert study.model_key(cell.base) != built["finetune"][0]


# ------------------------------------------------------------------ seeds and guidance in the claims
def test_seed_spread_is_the_t_interval_of_the_runs():
    import pandas as pd

    from bibad_utils.experiments import insights as ins

    keys = {"cell": "badnets1 p=5%", "attack": "badnets1", "control": False, "ratio": 0.05, "p": "5%",
            "detector": "badnets1", "guidance": 1.0}
    sdf = pd.DataFrame([{**keys, "train_seed": s, "r_gen": v, "G1": v / 2, "G2": v / 2, "G2_share": 0.5}
                        for s, v in enumerate([0.2, 0.4, 0.6])])
    sp = ins.seed_spread(sdf)
    assert len(sp) == 1 and sp.n_seeds.iloc[0] == 3
    r = sp.iloc[0]
    assert r.r_gen_mean == pytest.approx(0.4) and r.r_gen_sd == pytest.approx(0.2)
    half = 4.302652729911275 * 0.2 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(n)
    assert r.r_gen_seed_lo == pytest.approx(max(0.0, 0.4 - half)) and r.r_gen_seed_hi == pytest.approx(0.4 + half)
    got = ins.across_seeds(sp, "badnets1 p=5%", "badnets1", 1, "r_gen")
    assert got["n"] == 3 and got["mean"] == pytest.approx(0.4)
    assert ins.across_seeds(sp, "badnets1 p=5%", "badnets1", 5, "r_gen") is None
    assert ins.seed_spread(pd.DataFrame()).empty
    # three runs that each generate 1 triggered image in 200: sd 0, yet the interval is the pooled
    # sampling interval of the 600 generations, not [0.005, 0.005]
    same = pd.DataFrame([{**keys, "train_seed": s, "r_gen": 0.005, "n_r_gen": 1, "n": 200, "G1": 0.005, "n_G1": 1,
                          "G2": 0.0, "n_G2": 0, "n_triggered": 1, "G2_share": 0.0} for s in range(3)])
    r = ins.seed_spread(same).iloc[0]
    assert r.r_gen_sd == 0 and r.r_gen_seed_lo < 0.005 < r.r_gen_seed_hi
    assert (r.r_gen_seed_lo, r.r_gen_seed_hi) == pytest.approx(wilson_interval(3, 600), rel=1e-4)
    # where the runs disagree more than sampling explains, the t interval stays (wider than the pooled one)
    spread = pd.DataFrame([{**keys, "train_seed": s, "r_gen": v, "n_r_gen": int(v * 200), "n": 200, "G1": v, "n_G1": int(v * 200),
                            "G2": 0.0, "n_G2": 0, "n_triggered": int(v * 200), "G2_share": 0.0} for s, v in enumerate([0.2, 0.4, 0.6])])
    r = ins.seed_spread(spread).iloc[0]
    assert r.r_gen_seed_lo == pytest.approx(max(0.0, 0.4 - half)) and r.r_gen_seed_hi == pytest.approx(0.4 + half)


def test_claims_use_the_runs_and_both_guidances(tiny_grid):
    from bibad_utils.experiments import insights as ins

    study = tiny_grid
    assert study.claim_guidances() == [float(w) for w in study.cfg["sampling"]["guidance"]] == [1.0, 5.0]
    sdf = ins.seed_table(study)
    assert set(sdf.attack) == {"badnets1"} and set(sdf.train_seed) == {0, 1}  # the only cells trained twice
    spread = ins.seed_spread(sdf)
    assert set(spread.n_seeds) == {2} and len(spread) == 5 * 2  # 5 ratios x 2 guidances, one detector
    gdf = ins.g_table(study)
    rows = [r for w in study.claim_guidances() for r in ins.insight_claims(study, gdf, guidance=w, spread=spread)]
    amp = [r for r in rows if r["key"] == "amplification"]
    assert {r["setting"].rsplit("w=", 1)[1] for r in amp} == {"1", "5"}
    seeded = [r for r in amp if r["setting"].startswith("badnets1")]
    assert seeded and all("across 2 training runs" in r["note"] for r in seeded)
    assert not any("training runs" in r["note"] for r in amp if r["setting"].startswith("wanet"))
    for r in seeded:
        w = float(r["setting"].rsplit("w=", 1)[1])
        cell = f"badnets1 p={r['setting'].split('p=')[1].split(',')[0]}"
        sd = ins.across_seeds(spread, cell, "badnets1", w, "r_gen")
        assert (r["ours"], r["ours_lo"], r["ours_hi"]) == pytest.approx((sd["mean"], sd["lo"], sd["hi"]))
    # Insight 2 pools the counts of both runs of each BadNets-1 cell (old: the first run alone)
    phase = [r for r in rows if r["key"] == "phase_transition" and r["setting"].startswith("badnets1")]
    assert phase and all("pooled over the 2 training runs" in r["note"] for r in phase if r["verdict"] != "not tested")
    pc = ins.pooled_counts(spread, "badnets1 p=5%", "badnets1", 1.0)
    runs = sdf[(sdf.cell == "badnets1 p=5%") & (sdf.guidance == 1.0)]
    assert pc["runs"] == 2 and pc["n"] == int(runs["n"].sum()) and pc["n_G2"] == int(runs["n_G2"].sum())
