"""The study's stages as cached computations: what the notebooks call.

A :class:`Study` holds one resolved profile, its artifact store and its datasets. Each method returns
a stage's result, computing it only when its artifact is missing (``<run_dir>/artifacts/<stage>/<key>``,
the key hashing the stage's parameters and its inputs' keys), so a notebook re-run with nothing changed
recomputes nothing expensive, and an interrupted training resumes from its last checkpoint.

    study = Study("demo")
    cell = study.cells()[2]                 # e.g. Cell("badnets1", 0.05)
    model = study.model(cell)               # pre-train once (cached), fine-tune on the poisoned set
    gen = study.generations(cell)           # {("target", w): GenSet, ("all", w_all): GenSet}
    judged = study.judges.judge(gen[("target", 1.0)], "badnets1")

Cells: one per (attack, p) of the grid; the controls ``clean`` (p = 0) and ``relabel`` (poisoned labels,
no trigger, at the largest p); ``pool="duplicate"`` cells poison duplicated images (memorization stage).

Training seeds (:mod:`bibad_utils.cells`): replicate ``s`` of a cell is ``Cell(kind, p, pool, seed=s)``
(``Study.seed_cells(cell)``). The shipped clean base DM: :mod:`bibad_utils.shipped_base`."""

from __future__ import annotations

import copy
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from bibad_utils import shipped_base
from bibad_utils import store as st
from bibad_utils.cells import (POOLS, Cell, GenSet, all_guidances, exposure_epochs, guidance_all, target_guidances,
                               validate_train_seeds)
from bibad_utils.config import ConfigError, deep_merge, resolve_device, validate_profile
from bibad_utils.data import dataset_from_config
from bibad_utils.memorization import duplicate_pool, embed, embedding_key_params, find_duplicate_groups
from bibad_utils.poison import poison_dataset
from bibad_utils.progress import choose_threads
from bibad_utils.sampling import class_mix, sample_images, set_seeds
from bibad_utils.study_judges import StudyJudges
from bibad_utils.training import train_diffusion
from bibad_utils.triggers import make_trigger
from bibad_utils.typed_config import Profile, load_config, typed_profile


class Study:
    """One run of the study: a validated profile, its artifact store, datasets, cells, models, generated
    sets and judges (``study.judges``, :class:`bibad_utils.study_judges.StudyJudges`). profile: a name in
    ``notebooks/profiles`` or a YAML path; overrides: nested dict merged over it; progress: bars in long steps.
    ``cfg``: the profile as a frozen, typed :class:`~bibad_utils.typed_config.Profile` (``cfg.sampling.guidance``;
    ``cfg.as_dict()`` the validated dict).
    """

    def __init__(self, profile="demo", overrides: dict | None = None, progress: bool = True):
        self.cfg: Profile = load_config(profile, overrides)
        self.device = resolve_device(self.cfg)
        self.run_dir = Path(self.cfg.run_dir)
        self.store = st.ArtifactStore(self.run_dir / "artifacts")
        self.seed = int(self.cfg.seed)
        self.target = int(self.cfg.target)
        self.progress = progress
        self._models: dict = {}
        if self.device.type == "cpu":
            choose_threads()  # every core unless fixed or auto (again before each training and generation)

    # Sections a variant may not change: they define the data, the store and the seed it shares.
    _SHARED_SECTIONS = ("dataset", "seed", "run_dir", "device")

    @cached_property
    def judges(self) -> StudyJudges:
        """The study's judges (clean classifier, trigger detectors, templates), a component that reads the
        study's data, store and settings."""
        return StudyJudges(self)

    def variant(self, overrides: dict) -> "Study":
        """This study with ``overrides`` merged over its configuration (validated), sharing its datasets
        and artifact store: e.g. the judges trained without augmentation, for an ablation. Artifacts
        stay content-addressed, so the variant's differ from this study's only where its settings do."""
        if not isinstance(overrides, dict):
            raise ConfigError("overrides", overrides, "a dict of parameters, nested like the profile")
        shared = sorted(set(overrides) & set(self._SHARED_SECTIONS))
        if shared:
            raise ConfigError(f"overrides.{shared[0]}", overrides[shared[0]],
                              f"no change to {', '.join(self._SHARED_SECTIONS)} (make a new Study instead)")
        other = copy.copy(self)
        other.cfg = typed_profile(validate_profile(deep_merge(self.cfg.as_dict(), overrides)))
        other._models = {}
        other.__dict__.pop("judges", None)  # its own judges (and templates: the triggers may differ)
        return other

    # ------------------------------------------------------------------------------------ data
    @cached_property
    def train_set(self):
        """The clean training set (:class:`~bibad_utils.data.ImageSet`)."""
        return dataset_from_config(self.cfg.dataset, split="train", seed=self.seed)

    @cached_property
    def test_set(self):
        """The clean test set (never trained on)."""
        return dataset_from_config(self.cfg.dataset, split="test", seed=self.seed)

    def real_reference_indices(self, n: int) -> np.ndarray:
        """Sorted int64 indices of ``n`` real training images drawn with the study's seed: the ``real train``
        row of chapter 04's quality table and chapter 02's FD-clf floor (FD-clf with no generation error)."""
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(len(self.train_set), size=min(n, len(self.train_set)), replace=False))

    @property
    def class_names(self) -> list[str]:
        return list(self.train_set.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_set.image_size)

    @cached_property
    def data_key(self) -> str:
        """Key of the dataset: its configuration (a real dataset by its files' fingerprint, not its path), the seed, the labels."""
        return self._data_key(self.cfg.dataset, self.train_set)

    def _data_key(self, section: dict, data) -> str:
        ds = {k: v for k, v in section.items() if k != "root" or "fingerprint" not in section}
        return st.artifact_key("data", {"dataset": ds, "seed": self.seed, "labels": data.labels})

    @cached_property
    def pretrain_data(self) -> tuple:
        """(set, key) the base DM is pre-trained on: the training set, or with ``pretrain.data: all`` the
        dataset's whole training split (e.g. all 50,000 CIFAR-10 images where the cells use a subset)."""
        if self.cfg.pretrain.data != "all":
            return self.train_set, self.data_key
        section = {**self.cfg.dataset.as_dict(), "n_per_class": None, "n_test_per_class": None}  # the cells' sizes: not keyed
        data = dataset_from_config(section, split="train", seed=self.seed)
        return data, self._data_key(section, data)

    def trigger(self, kind: str):
        """The study's trigger of ``kind`` (fixed by the profile's seed and trigger options)."""
        options = dict(self.cfg.triggers.get(kind) or {})
        return make_trigger(kind, self.image_size, seed=self.seed, **options)

    # ----------------------------------------------------------------------------------- cells
    def ratios_of(self, kind: str) -> list[float]:
        """The grid's ratios of attack ``kind``, ascending: ``attack_ratios[kind]`` where the profile names it."""
        return sorted(float(p) for p in (self.cfg.attack_ratios or {}).get(kind, self.cfg.ratios))

    def top_ratio(self, kind: str | None = None) -> float:
        """The largest p of attack ``kind`` (None: of the profile's ``ratios``, the relabel control's p)."""
        return max(self.ratios_of(kind)) if kind else float(max(self.cfg.ratios))

    def top_cells(self) -> list[Cell]:
        """Each attack at its largest p, in the profile's attack order: the cells the examples, the teaser
        and the replication study show."""
        return [Cell(kind, self.top_ratio(kind)) for kind in self.cfg.attacks]

    def grid_cells(self) -> list[Cell]:
        """One cell per (attack, p) of the profile's grid, attack-major, p ascending."""
        return [Cell(kind, p) for kind in self.cfg.attacks for p in self.ratios_of(kind)]

    def control_cells(self) -> list[Cell]:
        """The controls of the profile: clean (p = 0) and relabel-only at the largest p."""
        return [Cell("clean") if c == "clean" else Cell("relabel", self.top_ratio()) for c in self.cfg.controls]

    def cells(self, with_seeds: bool = False) -> list[Cell]:
        """Controls first, then the grid; ``with_seeds``: each cell followed by its other training-seed
        replicates (:meth:`seed_cells`)."""
        cells = self.control_cells() + self.grid_cells()
        return [r for c in cells for r in self.seed_cells(c)] if with_seeds else cells

    @cached_property
    def train_seeds_config(self) -> dict:
        """The profile's ``train_seeds`` as a mapping (``{"default": 1}`` when the profile has none)."""
        return validate_train_seeds(self.cfg.train_seeds)

    def n_train_seeds(self, cell: Cell) -> int:
        """Training runs of ``cell``: ``train_seeds[cell.kind]``, else ``train_seeds.default``. Cells of
        the duplicate pool (memorization stage) have one."""
        ts = self.train_seeds_config
        return 1 if cell.pool != "random" else int(ts.get(cell.kind, ts["default"]))

    def seed_cells(self, cell: Cell) -> list[Cell]:
        """The training-seed replicates of ``cell``: seeds 0 .. n - 1 (seed 0 first, the profile's run)."""
        return [cell.with_seed(s) for s in range(self.n_train_seeds(cell))]

    def training_seed(self, train_seed: int) -> int:
        """The random seed of training run ``train_seed``: the profile's seed for run 0 (and for the
        pre-training), else one drawn from (profile seed, run) so that no two runs share a random stream."""
        if not train_seed:
            return self.seed
        return int(np.random.SeedSequence([self.seed, int(train_seed)]).generate_state(1)[0] >> 1)

    def duplicate_pool(self) -> np.ndarray | None:
        """Indices of duplicated training images (planted groups of the procedural dataset, or groups
        found by the memorization stage's embedding for real data); None if there are none."""
        groups = self.duplicate_groups()
        return duplicate_pool(groups) if groups else None

    def duplicate_groups(self) -> list[list[int]]:
        """Near-duplicate groups of the training set: the planted ground truth when the dataset has
        one, otherwise the groups found by the memorization embedding at its threshold (cached)."""
        planted = self.train_set.meta.get("duplicate_groups")
        if planted:
            return [list(map(int, g)) for g in planted]
        mem = self.cfg.memorization
        params = {"embedding": mem.embedding, "threshold": mem.duplicate_threshold}
        # The embedding chapter 06 reads, with every parameter of it: other weights, a thumbnail other than the
        # 16 px these groups were first found with, or a high-pass give other groups (the keys of the rest unchanged).
        params.update({k: v for k, v in embedding_key_params(mem).items()
                       if k in ("weights", "highpass") or (k == "pixel_size" and v != 16)})
        if params["threshold"] is None:
            return []

        def build(art):
            emb = embed(self.train_set.images, params["embedding"], device=self.device, weights_path=mem.weights_path,
                        pixel_size=mem.pixel_size, highpass=mem.highpass)
            st.save_json(art.dir / "groups.json", find_duplicate_groups(emb, params["threshold"]))

        path = self.store.cached("duplicates", params, [self.data_key], build, device=str(self.device))
        return st.load_json(path / "groups.json")

    def poisoned(self, cell: Cell):
        """The training set of ``cell`` (:class:`~bibad_utils.poison.PoisonedSet`, a view)."""
        pool = None
        if cell.pool == "duplicate":
            pool = self.duplicate_pool()
            if pool is None:
                raise ConfigError("cell.pool", "duplicate", "a dataset with duplicate groups "
                                  "(procedural: dataset.options.duplicate_fraction > 0)")
        elif cell.pool != "random":
            raise ConfigError("cell.pool", cell.pool, " | ".join(POOLS))
        trigger = self.trigger(cell.kind) if cell.trigger_kind else None
        return poison_dataset(self.train_set, cell.kind, cell.ratio, self.target, self.seed, trigger=trigger, pool=pool)

    def poison_key(self, cell: Cell) -> str:
        """Key of the poisoned training set of ``cell`` (its manifest is written to the store)."""
        params = {"kind": cell.kind, "ratio": cell.ratio, "pool": cell.pool, "target": self.target,
                  "seed": self.seed, "trigger": self.cfg.triggers.get(cell.kind) if cell.trigger_kind else None}

        def build(art):
            ps = self.poisoned(cell)
            st.save_json(art.dir / "poison_manifest.json", ps.manifest())
            st.save_array(art.dir / "indices.npy", np.asarray(ps.indices, dtype=np.int64))

        self.store.cached("poison", params, [self.data_key], build)
        return st.artifact_key("poison", params, [self.data_key])

    def poison_manifest(self, cell: Cell) -> dict:
        """The saved manifest of ``cell``'s poisoned set (indices, counts, trigger, r_train)."""
        key = self.poison_key(cell)
        return st.load_json(self.store.path("poison", key) / "poison_manifest.json")

    # ---------------------------------------------------------------------------------- models
    def _train_section(self, name: str) -> dict:
        # shipped: where the weights come from, not how they are trained; keep_checkpoints 0: as if unset
        sec = {k: v for k, v in self.cfg[name].as_dict().items()
               if k not in ("shipped", "data") and (k != "keep_checkpoints" or v)}
        sec.setdefault("checkpoint_every", max(1, sec["steps"] // 5) if sec["steps"] else 1)
        return sec

    # The diffusion backends are imported where a DM is built or loaded: diffusers costs about 3.5 s per
    # process, which the notebooks that only read generated sets (01, 04, 06, 07, 08) do not need.
    def _new_model(self, seed: int | None = None):
        from bibad_utils.diffusion import build_model
        torch.manual_seed(self.seed if seed is None else seed)  # the initial weights of a from-scratch model
        return build_model(self.cfg.model.as_dict(), self.class_names, image_size=self.image_size)

    def _train_params(self, section: dict, train_seed: int = 0) -> dict:
        """The parameters a DM training's key hashes; ``train_seed`` > 0 (a replicate run) is recorded,
        seed 0 keeps the key without it."""
        params = {"model": self.cfg.model.as_dict(), "train": section, "seed": self.seed}
        if train_seed:
            params["train_seed"] = int(train_seed)
        return params

    def _train(self, stage: str, dataset, section: dict, inputs: list[str], init_key: str | None,
               train_seed: int = 0, label: str = ""):
        """Train (or load) a DM into the artifact ``stage``; returns its key. ``train_seed`` > 0: a
        replicate training run. label: what the live progress line calls it (e.g. the cell's name)."""

        params = self._train_params(section, train_seed)
        seed = self.training_seed(train_seed)
        inputs = list(inputs) + ([init_key] if init_key else [])

        def build(art):
            choose_threads()
            model = self._new_model(seed)
            init_state = None
            if init_key:
                from bibad_utils.diffusion import load_model
                init_state = load_model(self.store.path("pretrain", init_key) / "model").state_dict_to_save()
            # the section's keys are train_diffusion's keyword arguments; its signature holds their defaults
            res = train_diffusion(model, dataset, **section, work_dir=art.work_dir, seed=seed,
                                  init_state=init_state, device=self.device, progress=self.progress, keep_dir=art.dir,
                                  report=(stage, label))
            model.load_trainable_state(res.ema_state)
            model.save(art.dir / "model")
            record = {"loss_log": res.loss_log, "steps": res.steps, "wall_time_s": res.wall_time_s,
                      "train_seed": int(train_seed), "seed": int(seed),
                      "images_seen": res.images_seen, "n_params": sum(p.numel() for p in model.trainable_parameters()),
                      "device": str(self.device), "threads": torch.get_num_threads()}
            st.save_json(art.dir / "train_record.json", record)
            art.meta["train"] = {k: v for k, v in record.items() if k != "loss_log"}

        self.store.cached(stage, params, inputs, build, device=str(self.device))
        return st.artifact_key(stage, params, inputs)

    @cached_property
    def pretrain_key(self) -> str | None:
        """Key of the clean pre-trained DM (None when ``pretrain.steps`` is 0: cells train from scratch)."""
        sec = self._train_section("pretrain")
        if not sec["steps"]:
            return None
        if self.cfg.pretrain.shipped:
            shipped_base.install_shipped_base(self.store, self.pretrain_expected_key(), self.cfg.name)
        data, key = self.pretrain_data
        return self._train("pretrain", data, sec, [key], None, label="clean base DM")

    def pretrain_expected_key(self) -> str | None:
        """The artifact key of the pre-trained DM, computed without training it (None without one)."""
        sec = self._train_section("pretrain")
        if not sec["steps"]:
            return None
        return st.artifact_key("pretrain", self._train_params(sec), [self.pretrain_data[1]])

    def model_key(self, cell: Cell) -> str:
        """Key of ``cell``'s DM: the pre-trained model fine-tuned on ``cell``'s training set."""
        return self._train("finetune", self.poisoned(cell), self._train_section("finetune"),
                           [self.poison_key(cell)], self.pretrain_key, train_seed=cell.seed, label=cell.name)

    def exposure(self, cell: Cell) -> float:
        """Epochs of ``cell``'s fine-tuning: how often each of its training images was seen, on average."""
        return exposure_epochs(self.cfg.finetune, len(self.poisoned(cell)))

    def model_cached(self, cell: Cell) -> bool:
        """Whether ``cell``'s fine-tuned DM is in the store (makes the pre-trained model if missing)."""
        params = self._train_params(self._train_section("finetune"), cell.seed)
        inputs = [self.poison_key(cell)] + ([self.pretrain_key] if self.pretrain_key else [])
        return self.store.exists("finetune", st.artifact_key("finetune", params, inputs))

    def model(self, cell: Cell | None):
        """The EMA weights of ``cell``'s DM (``None``: the clean pre-trained model), on ``self.device``."""
        stage, key = ("pretrain", self.pretrain_key) if cell is None else ("finetune", self.model_key(cell))
        if key not in self._models:
            from bibad_utils.diffusion import load_model
            self._models = {key: load_model(self.store.path(stage, key) / "model").to(self.device)}
        return self._models[key]

    def train_record(self, cell: Cell | None) -> dict:
        """Loss log and compute of ``cell``'s fine-tuning (``None``: of the pre-training)."""
        stage, key = ("pretrain", self.pretrain_key) if cell is None else ("finetune", self.model_key(cell))
        return st.load_json(self.store.path(stage, key) / "train_record.json")

    # ------------------------------------------------------------------------------ generation
    @property
    def first_guidance(self) -> float:
        """The profile's first guidance scale: where the teaser, the examples and the first row of each claim
        are stated (every other w of ``sampling.guidance`` is a row too, :meth:`claim_guidances`)."""
        return float(self.cfg.sampling.guidance[0])

    @property
    def guidance_all(self) -> float:
        """Guidance scale of the all-class set (``sampling.guidance_all``, default the first w)."""
        return guidance_all(self.cfg.sampling)

    def all_guidances(self, cell: Cell | None) -> list[float]:
        """The w of ``cell``'s all-class sets (:func:`bibad_utils.cells.all_guidances`)."""
        return all_guidances(self.cfg.sampling, cell)

    def claim_guidances(self) -> list[float]:
        """The guidance scales the claims are judged at: every w of ``sampling.guidance``, a row each."""
        return [float(w) for w in self.cfg.sampling.guidance]

    def target_guidances(self, cell: Cell | None) -> list[float]:
        """The w of ``cell``'s target-prompt sets (:func:`bibad_utils.cells.target_guidances`)."""
        return target_guidances(self.cfg.sampling, cell)

    def generation_key(self, cell: Cell | None) -> str:
        s = self.cfg.sampling
        keyed = {k: v for k, v in s.as_dict().items() if k != "castle_guidance"}  # it enters as all_guidances
        params = {"sampling": keyed, "guidance_all": self.guidance_all, "seed": self.seed, "target": self.target}
        ws = self.target_guidances(cell)
        if ws != self.claim_guidances():
            params["target_guidances"] = ws  # fewer target sets than the profile's guidance list
        all_ws = self.all_guidances(cell)
        if len(all_ws) > 1:
            params["all_guidances"] = all_ws  # the castle walls' further all-class sets
        model_key = self.pretrain_key if cell is None else self.model_key(cell)

        def build(art):
            choose_threads()
            model = self.model(cell)
            kw = dict(steps=s.steps, eta=s.eta, batch_size=s.batch_size, device=self.device, progress=self.progress)
            started = time.perf_counter()
            plans = [("target", w, np.full(s.n_target, self.target, np.int64)) for w in self.target_guidances(cell)]
            mix = class_mix(self.train_set.class_counts(), s.n_all)
            plans += [("all", w, mix) for w in self.all_guidances(cell)]
            for name, w, labels in plans:
                images = sample_images(model, labels, set_seeds(self.seed, name, len(labels)), guidance=w,
                                       report=("generate", f"{cell.name if cell else 'base DM'} {name} w={w:g}"), **kw)
                folder = art.dir / f"{name}_w{w:g}"
                folder.mkdir()
                st.save_array(folder / "images.npy", images)
                st.save_array(folder / "labels.npy", labels)
            art.meta["sampling_wall_time_s"] = time.perf_counter() - started

        self.store.cached("generate", params, [model_key], build, device=str(self.device))
        return st.artifact_key("generate", params, [model_key])

    def generations(self, cell: Cell | None) -> dict[tuple[str, float], GenSet]:
        """``{(set name, w): GenSet}`` of ``cell``'s DM, for its target and all-class guidance plans."""
        path = self.store.path("generate", self.generation_key(cell))
        plans = [("target", w) for w in self.target_guidances(cell)] + [("all", w) for w in self.all_guidances(cell)]
        return {(name, w): GenSet(st.load_array(path / f"{name}_w{w:g}" / "images.npy"),
                                  st.load_array(path / f"{name}_w{w:g}" / "labels.npy"), name, w, cell)
                for name, w in plans}
