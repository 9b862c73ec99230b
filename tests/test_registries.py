"""Adding a trigger or a defense touches its own code and one registration: a toy trigger and a toy
detector registered here (and nowhere else) are accepted by the profile checks and run through the smoke
chain (poisoning, fine-tuning, generation, the judges, chapter 05's detection table)."""

import math

import numpy as np
import pytest
import torch

from bibad_utils import config, defenses, triggers
from bibad_utils.base import REPO_ROOT
from bibad_utils.config import ConfigError
from bibad_utils.defenses.profile import DEFENSES
from bibad_utils.experiments import castle_walls as cw
from bibad_utils.stages import Cell, Study
from bibad_utils.triggers.base import Trigger, TriggerKind, TriggerOption


class CornerDot(Trigger):
    """Toy trigger: the 2 x 2 top-left pixels set to white."""

    kind = "corner_dot"

    def __init__(self, image_size: int, seed: int, value: float = 1.0):
        super().__init__(image_size, seed, {"value": value})
        self.value = float(value)

    def apply(self, x):
        x = self._check(x).clone()
        x[..., :2, :2] = self.value
        return x


TOY_TRIGGER = TriggerKind(
    "corner_dot", CornerDot,
    (TriggerOption("value", 1.0, lambda v, s: isinstance(v, float) and -1 <= v <= 1,
                   lambda s: "a pixel value in [-1, 1]"),),
    "2 x 2 white pixels in the top-left corner")


def _corner_brightness(f, images, ctx, *, corner=2):
    x = torch.as_tensor(np.asarray(images)).float()  # uint8 [N, H, W, 3]
    return {"scores": x[:, :corner, :corner, :].mean(dim=(1, 2, 3)).double().numpy()}


TOY_DETECTOR = defenses.Detector(
    "Corner", _corner_brightness, {"corner": 2}, "mean brightness of the top-left corner",
    check=defenses.option_checker({"corner": 1}))


@pytest.fixture
def registered(monkeypatch):
    """The toy trigger and detector in the registries for one test (removed afterwards)."""
    monkeypatch.setitem(triggers.TRIGGERS, TOY_TRIGGER.name, TOY_TRIGGER)
    monkeypatch.setitem(defenses.DETECTORS, TOY_DETECTOR.name, TOY_DETECTOR)


def test_registries_drive_the_allowed_values(registered):
    assert "Corner" in cw.detectors()
    assert cw.detector_key("Corner") == "corner" and DEFENSES.defaults()["corner"] == {"corner": 2}
    cfg = config.load_profile("smoke", {"attacks": ["corner_dot"], "triggers": {"corner_dot": {"value": 0.5}},
                                        "defenses": {"corner": {"corner": 3}}})
    assert cfg["attacks"] == ["corner_dot"]
    assert DEFENSES.validate(cfg["defenses"])["corner"] == {"corner": 3}
    with pytest.raises(ConfigError, match="defenses.corner.corner"):
        DEFENSES.validate({"corner": {"corner": 0}})
    with pytest.raises(ConfigError, match="triggers.corner_dot.value"):
        config.load_profile("smoke", {"attacks": ["corner_dot"], "triggers": {"corner_dot": {"value": 3.0}}})
    with pytest.raises(ConfigError, match="train_seeds.nothing"):
        config.load_profile("smoke", {"train_seeds": {"corner_dot": 2, "nothing": 1}})


def test_registration_refuses_a_taken_name():
    with pytest.raises(ConfigError, match="trigger kind"):
        triggers.register_trigger(triggers.TRIGGERS["badnets1"])
    with pytest.raises(ConfigError, match="detector"):
        defenses.register(defenses.DETECTORS["CD"])


def test_toy_trigger_and_toy_detector_through_the_smoke_chain(registered, tmp_path):
    study = Study("smoke", {"attacks": ["corner_dot"], "ratios": [0.2], "run_dir": str(tmp_path),
                            "sampling": {"guidance": [1]}, "train_seeds": {"corner_dot": 1}}, progress=False)
    cell = Cell("corner_dot", 0.2)
    assert study.grid_cells() == [cell]
    ps = study.poisoned(cell)
    idx = np.asarray(ps.indices)
    assert np.all(ps.images_uint8(idx)[:, :2, :2] == 255) and np.all(ps.labels[idx] == study.target)
    assert study.generations(cell)[("all", 1.0)].images.shape[1:] == (16, 16, 3)
    det = cw.detection_table(study, [cell])
    assert set(det.detector) == set(cw.detectors()) and "Corner" in set(det.detector)
    toy = det[det.detector == "Corner"].set_index("set")
    # the toy detector knows its toy trigger: it separates the known-answer and training sets
    assert toy.loc["known answer", "auroc"] >= 0.95 and toy.loc["training", "auroc"] >= 0.95
    assert all(math.isfinite(v) for v in det[det.set != "generated"].auroc)
    # its scores are cached under its own key, apart from the other detectors
    assert len(list(study.store.path("castle_detector", "x").parent.iterdir())) == len(det)


def copy_of_the_package(tmp_path):
    """A copy of ``bibad_utils`` (without its shipped weights) in ``tmp_path``, for following a recipe on."""
    import shutil

    pkg = tmp_path / "bibad_utils"
    shutil.copytree(REPO_ROOT / "bibad_utils", pkg, ignore=shutil.ignore_patterns("assets", "__pycache__"))
    return pkg


def run_in_the_copy(tmp_path, probe: str) -> None:
    """Run ``probe`` (Python source that prints "ok") against the copy in ``tmp_path``, through the real
    import path."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_a_new_trigger_kind_is_one_file_in_the_package(tmp_path):
    """CONTRIBUTING's recipe followed literally, through the real import path: a copy of the package with one
    new module in ``bibad_utils/triggers/`` (a Trigger subclass and its KIND, importing only ``triggers.base``)
    and nothing else changed; importing the package registers the kind, without a circular import, and every
    reader of the registry (option checks, make_trigger, chapter 01's trigger views) sees it."""
    pkg = copy_of_the_package(tmp_path)
    (pkg / "triggers" / "corner_dot.py").write_text(
        '"""A toy trigger: the 2 x 2 top-left pixels set to a value."""\n'
        "from bibad_utils.triggers.base import Trigger, TriggerKind, TriggerOption\n\n\n"
        "class CornerDot(Trigger):\n"
        '    kind = "corner_dot"\n\n'
        "    def __init__(self, image_size, seed=0, value=1.0):\n"
        '        super().__init__(image_size, seed, {"value": value})\n'
        "        self.value = float(value)\n\n"
        "    def apply(self, x):\n"
        "        x = self._check(x).clone()\n"
        "        x[..., :2, :2] = self.value\n"
        "        return x\n\n\n"
        'KIND = TriggerKind("corner_dot", CornerDot, (TriggerOption("value", 1.0, lambda v, s: -1 <= v <= 1,\n'
        '                  lambda s: "a pixel value in [-1, 1]"),), "2 x 2 pixels in the top-left corner")\n')
    probe = ("import torch\n"
             "from bibad_utils import triggers\n"
             "assert list(triggers.TRIGGERS)[:3] == ['badnets1', 'badnets2', 'wanet'], list(triggers.TRIGGERS)\n"
             "assert 'corner_dot' in triggers.TRIGGERS\n"
             "assert triggers.validate_trigger_options('corner_dot', {'value': 0.5}, 16) == {'value': 0.5}\n"
             "t = triggers.make_trigger('corner_dot', 16, value=-1.0)\n"
             "x = t.apply(torch.zeros(3, 16, 16))\n"
             "assert float(x[0, 0, 0]) == -1.0 and float(x[0, 5, 5]) == 0.0\n"
             "view = t.view()\n"
             "assert view['style'] == 'image' and view['data'].shape == (16, 16, 3)\n"
             "print('ok')\n")
    run_in_the_copy(tmp_path, probe)


def test_a_new_dataset_is_one_file_in_the_package(tmp_path):
    """CONTRIBUTING's recipe for a dataset followed literally: a copy of the package with one new module in
    ``bibad_utils/data/`` (a loader and its DATASET, importing only ``data.base`` and ``data.registry``) and
    nothing else changed: the profile check accepts the name and its options, load_dataset builds it, and a
    smoke profile on it resolves, with no circular import."""
    pkg = copy_of_the_package(tmp_path)
    (pkg / "data" / "stripes.py").write_text(
        '"""A toy dataset: vertical stripes, one stripe width per class."""\n'
        "import numpy as np\n\n"
        "from bibad_utils.data.base import ImageSet\n"
        "from bibad_utils.data.registry import DatasetSpec\n\n\n"
        "def make_stripes(n_per_class=4, image_size=16, seed=0, split='train', contrast: float = 1.0):\n"
        "    labels = np.repeat(np.arange(3), n_per_class)\n"
        "    x = np.arange(image_size)\n"
        "    images = np.stack([np.broadcast_to(((x // (k + 1)) % 2 * 255 * contrast).astype(np.uint8)[None, :, None],\n"
        "                                       (image_size, image_size, 3)) for k in labels])\n"
        "    return ImageSet(images, labels.astype(np.int64), ['thin', 'mid', 'wide'], 'stripes', {'seed': seed})\n\n\n"
        "def _load(split='train', root=None, image_size=None, seed=0, download=False, **options):\n"
        "    return make_stripes(image_size=image_size or 16, seed=seed, split=split, **options)\n\n\n"
        "DATASET = DatasetSpec('stripes', 3, _load, make_stripes, per_class=True)\n")
    probe = ("from bibad_utils.data import DATASET_CLASSES, load_dataset, validate_dataset_options\n"
             "from bibad_utils.config import ConfigError, load_profile\n"
             "assert list(DATASET_CLASSES)[:5] == ['procedural', 'imagenette', 'caltech15', 'cifar10', 'mnist5k']\n"
             "assert DATASET_CLASSES['stripes'] == 3\n"
             "d = load_dataset('stripes', n_per_class=2, image_size=8, contrast=0.5)\n"
             "assert d.images.shape == (6, 8, 8, 3) and d.class_names == ['thin', 'mid', 'wide']\n"
             "validate_dataset_options('stripes', {'contrast': 0.5})\n"
             "try:\n"
             "    validate_dataset_options('stripes', {'contrst': 0.5})\n"
             "    raise SystemExit('a misspelt option passed')\n"
             "except ConfigError as err:\n"
             "    assert 'did you mean contrast' in str(err), err\n"
             f"smoke = {str(REPO_ROOT / 'notebooks' / 'profiles' / 'smoke.yaml')!r}\n"
             "cfg = load_profile(smoke, {'dataset': {'name': 'stripes', 'options': None, 'n_per_class': 4,\n"
             "                                       'n_test_per_class': 2}, 'target': 1})\n"
             "assert cfg['dataset']['name'] == 'stripes'\n"
             "print('ok')\n")
    run_in_the_copy(tmp_path, probe)


def test_a_new_claim_family_is_one_entry_in_paper_claims(tmp_path):
    """CONTRIBUTING's recipe for a claim family followed literally: a copy of the package with one
    PaperClaim added to paper.CLAIMS and nothing else changed; the family, its paper text, its "not
    tested" row when no stage reports it, and the counting of its rows by key all follow."""
    pkg = copy_of_the_package(tmp_path)
    paper_py = pkg / "paper.py"
    text = paper_py.read_text()
    anchor = '    PaperClaim("duplicate_finder",'
    entry = ('    PaperClaim("fid_cost", "04_insights", "Poisoning costs image quality", "FID poisoned - clean",\n'
             '               source="r_train", statement=lambda: "FID rises with p (toy)",\n'
             '               at=lambda attack, p: [f"toy at p = {p}"] if p else []),\n')
    assert text.count(anchor) == 1
    paper_py.write_text(text.replace(anchor, entry + anchor))
    probe = ("from bibad_utils import paper, verdicts\n"
             "from bibad_utils.experiments import summary as sm\n"
             "from bibad_utils.report import claim_row\n"
             "assert 'fid_cost' in paper.CLAIM_KEYS and 'fid_cost' in [f.key for f in sm.PAPER_CLAIM_FAMILIES]\n"
             "assert paper.paper_text('fid_cost').startswith('FID rises with p (toy) [')\n"
             "assert paper.setting_text('fid_cost', p=0.1).startswith('toy at p = 0.1 [')\n"
             "row = claim_row('04_insights', 'FID', metric='FID', ours=1.0, verdict='reproduced', key='fid_cost')\n"
             "assert sm.family_of(row) == 'fid_cost' and verdicts.rows_of([row], 'fid_cost') == [row]\n"
             "missing = [r for r in sm.uncovered_rows([], ['04_insights']) if r.get('key') == 'fid_cost']\n"
             "assert len(missing) == 1 and missing[0]['verdict'] == 'not tested'\n"
             "print('ok')\n")
    run_in_the_copy(tmp_path, probe)


def test_a_new_detector_is_one_file_in_the_package(tmp_path):
    """CONTRIBUTING's recipe for a detector followed literally: a copy of the package with one new module in
    ``bibad_utils/defenses/`` declaring its DETECTOR and nothing else changed: the registry, the profile's
    ``defenses`` section (its defaults and option checks) and run_detector all see it."""
    pkg = copy_of_the_package(tmp_path)
    (pkg / "defenses" / "corner.py").write_text(
        '"""A toy detector: the mean brightness of the top-left corner."""\n'
        "import numpy as np\n\n"
        "from bibad_utils.defenses.detector import Detector, option_checker\n\n\n"
        "def corner_scores(f, images, ctx, *, corner=2):\n"
        "    x = np.asarray(images, dtype=np.float64)\n"
        "    return {'scores': x[:, :corner, :corner, :].mean(axis=(1, 2, 3))}\n\n\n"
        "DETECTOR = Detector('Corner', corner_scores, {'corner': 2}, 'mean brightness of the top-left corner',\n"
        "                    check=option_checker({'corner': 1}))\n")
    probe = ("import numpy as np\n"
             "from bibad_utils import defenses\n"
             f"from bibad_utils.config import ConfigError, load_profile\n"
             "assert list(defenses.DETECTORS)[:4] == ['CD', 'STRIP', 'FCT', 'FCT variant'], list(defenses.DETECTORS)\n"
             "assert 'Corner' in defenses.DETECTORS\n"
             "images = np.zeros((3, 8, 8, 3), np.uint8); images[1, :2, :2] = 255\n"
             "s = defenses.run_detector('Corner', None, images)['scores']\n"
             "assert s.argmax() == 1\n"
             f"smoke = {str(REPO_ROOT / 'notebooks' / 'profiles' / 'smoke.yaml')!r}\n"
             "cfg = load_profile(smoke, {'defenses': {'corner': {'corner': 3}}})\n"
             "assert cfg['defenses']['corner'] == {'corner': 3}\n"
             "try:\n"
             "    load_profile(smoke, {'defenses': {'corner': {'corner': 0}}})\n"
             "    raise SystemExit('a bad option passed')\n"
             "except ConfigError as err:\n"
             "    assert 'defenses.corner.corner' in str(err), err\n"
             "print('ok')\n")
    run_in_the_copy(tmp_path, probe)
