import math

import numpy as np
import pytest
import torch
from PIL import Image

from bibad_utils.config import ConfigError
from bibad_utils.data import to_float, to_uint8
from bibad_utils.files import file_sha256
from bibad_utils.patterns import cartoon_pattern, load_pattern
from bibad_utils.triggers import TRIGGERS, make_trigger, validate_trigger_options
from bibad_utils.triggers.badnets import badnets1_patch, badnets1_side


def random_images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_badnets1_side_rule():
    assert badnets1_side(32) == 5
    assert badnets1_side(16) == 5
    assert badnets1_side(64) == 6
    assert badnets1_side(256) == 25
    assert badnets1_side(512) == 51


def test_badnets1_patch_at_32px_exact_pixels():
    expected = np.array([
        [0, 0, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],
    ], dtype=bool)
    np.testing.assert_array_equal(badnets1_patch(5), expected)

    x = random_images(2, 32)
    out = make_trigger("badnets1", 32).apply(x)
    corner = out[:, :, 27:, 27:]
    want = torch.from_numpy(expected).float() * 2 - 1
    assert torch.equal(corner, want.expand(2, 3, 5, 5))
    # every pixel outside the 5 x 5 corner is untouched
    keep = torch.ones(32, 32, dtype=torch.bool)
    keep[27:, 27:] = False
    assert torch.equal(out[:, :, keep], x[:, :, keep])


def test_badnets1_band_formula_at_512px():
    s = 51
    mask = badnets1_patch(s)
    lo, hi = -math.ceil(s / 4), math.floor(s / 4) - 1
    assert (lo, hi) == (-13, 11)
    for x in range(s):
        for y in range(s):
            assert mask[x, y] == (lo <= y - (s - 1 - x) <= hi)
    x = torch.zeros(3, 512, 512)
    out = make_trigger("badnets1", 512).apply(x)
    assert torch.equal(out[:, -s:, -s:] > 0, torch.from_numpy(mask).expand(3, s, s))
    assert torch.count_nonzero(out[:, :-s, :]) == 0 and torch.count_nonzero(out[:, :, :-s]) == 0
    # bottom-right pixel (x = s-1, y = s-1) has y - (s-1-x) = s-1 > hi: black
    assert out[0, -1, -1] == -1 and out[0, 0 - s, -1] == 1


def test_badnets1_size_option_and_uint8_roundtrip():
    trig = make_trigger("badnets1", 32, size=8)
    assert trig.side == 8 and trig.describe()["side"] == 8
    img = to_uint8(trig.apply(torch.zeros(3, 32, 32)))
    assert set(np.unique(img[-8:, -8:])) == {0, 255}


@pytest.mark.parametrize("kind", tuple(TRIGGERS))
@pytest.mark.parametrize("size", [16, 33, 64])
def test_triggers_shapes_determinism_no_mutation(kind, size):
    x = random_images(3, size)
    before = x.clone()
    a = make_trigger(kind, size, seed=1)
    b = make_trigger(kind, size, seed=1)
    out = a.apply(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)
    assert torch.equal(out, b.apply(x))
    assert not torch.equal(out, x)
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
    # a single image gives the same result as in a batch
    assert torch.allclose(a.apply(x[1]), out[1], atol=1e-6)
    d = a.describe()
    assert d["kind"] == kind and d["image_size"] == size


def test_blend_is_exact_convex_combination():
    trig = make_trigger("badnets2", 32, alpha=0.2)
    x = random_images(2, 32)
    t = to_float(cartoon_pattern(32))
    assert torch.allclose(trig.apply(x), 0.8 * x + 0.2 * t, atol=1e-6)
    assert torch.allclose(make_trigger("badnets2", 32, alpha=0.5).apply(x), 0.5 * x + 0.5 * t, atol=1e-6)


def test_cartoon_pattern_is_fixed_and_colourful():
    p = cartoon_pattern(48)
    assert p.shape == (48, 48, 3) and p.dtype == np.uint8
    np.testing.assert_array_equal(p, cartoon_pattern(48))
    assert len(np.unique(p.reshape(-1, 3), axis=0)) > 20
    assert p[..., 0].mean() > p[..., 1].mean()  # pink-dominant


def test_blend_pattern_from_file(tmp_path):
    arr = np.zeros((30, 30, 3), np.uint8)
    arr[..., 2] = 255
    path = tmp_path / "pattern.png"
    Image.fromarray(arr).save(path)
    trig = make_trigger("badnets2", 16, pattern_path=str(path), alpha=1.0)
    out = trig.apply(torch.zeros(3, 16, 16))
    assert torch.allclose(out[2], torch.ones(16, 16)) and torch.allclose(out[0], -torch.ones(16, 16))
    d = trig.describe()
    assert d["pattern"] == str(path)
    assert d["pattern_file_sha256"] == file_sha256(path)
    assert d["pattern_conversion"] == "resized bicubic from 30 x 30 to 16 x 16 px"
    with pytest.raises(ConfigError, match="missing.png") as err:
        make_trigger("badnets2", 16, pattern_path=str(tmp_path / "missing.png"))
    assert err.value.param == "triggers.badnets2.pattern_path"


@pytest.mark.parametrize("shape,mode,why", [((3, 40, 3), "RGB", "square"), ((5, 5, 4), "RGBA", "opaque")])
def test_pattern_of_wrong_shape_or_with_transparency_is_refused(tmp_path, shape, mode, why):
    arr = np.full(shape, 200, np.uint8)
    if mode == "RGBA":
        arr[0, 0, 3] = 0
    path = tmp_path / "bad.png"
    Image.fromarray(arr, mode).save(path)
    with pytest.raises(ConfigError, match=why) as err:
        load_pattern(path, 32)
    assert err.value.param == "triggers.badnets2.pattern_path"
    with pytest.raises(ConfigError, match=why):
        validate_trigger_options("badnets2", {"pattern_path": str(path)}, 32)


def test_opaque_rgba_and_grey_patterns_state_their_conversion(tmp_path):
    Image.fromarray(np.full((5, 5, 4), 255, np.uint8), "RGBA").save(tmp_path / "opaque.png")
    Image.fromarray(np.full((32, 32), 90, np.uint8), "L").save(tmp_path / "grey.png")
    arr, how = load_pattern(tmp_path / "opaque.png", 32)
    assert arr.shape == (32, 32, 3) and how == "RGBA converted to RGB; resized bicubic from 5 x 5 to 32 x 32 px"
    arr, how = load_pattern(tmp_path / "grey.png", 32)
    assert (arr == 90).all() and how == "L converted to RGB"


def test_pattern_content_is_part_of_the_validated_options(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.full((8, 8, 3), 10, np.uint8)).save(path)
    first = validate_trigger_options("badnets2", {"alpha": 0.3, "pattern_path": str(path)}, 16)
    assert first["pattern_sha256"] == file_sha256(path)
    Image.fromarray(np.full((8, 8, 3), 11, np.uint8)).save(path)  # same path, same size, new bytes
    second = validate_trigger_options("badnets2", {"alpha": 0.3, "pattern_path": str(path)}, 16)
    assert second["pattern_sha256"] != first["pattern_sha256"]
    # a trigger built from options validated before the change refuses the changed file
    with pytest.raises(ConfigError, match="changed"):
        make_trigger("badnets2", 16, **first)
    # no file read: nothing added
    assert validate_trigger_options("badnets2", {"alpha": 0.2, "pattern_path": None}, 16) == {
        "alpha": 0.2, "pattern_path": None}


@pytest.mark.parametrize("kind,options,param,allowed", [
    ("badnets2", {"alpha": 5}, "triggers.badnets2.alpha", "(0, 1]"),
    ("badnets1", {"sise": 3}, "triggers.badnets1.sise", "did you mean size"),
    ("badnets1", {"size": 100}, "triggers.badnets1.size", "[1, 32]"),
    ("badnets1", {"size": 2.5}, "triggers.badnets1.size", "[1, 32]"),
    ("wanet", {"grid": 1}, "triggers.wanet.grid", "[2, 32]"),
    ("wanet", {"strength": "big"}, "triggers.wanet.strength", "> 0"),
    ("blend", {}, "triggers.blend", "badnets1"),
])
def test_registry_refuses_bad_options_without_building(kind, options, param, allowed):
    with pytest.raises(ConfigError) as err:
        validate_trigger_options(kind, options, 32)
    assert err.value.param == param and allowed in str(err.value)


def test_registry_is_the_one_list_of_kinds():
    from bibad_utils import poison
    assert poison.poison_kinds() == ("clean", "relabel", *TRIGGERS)
    for name, spec in TRIGGERS.items():
        assert spec.name == name
        # every registered option is an argument of the builder, defaults build a trigger
        trig = spec.builder(32, 0, **{o.name: o.default for o in spec.options if not o.derived})
        assert trig.kind == name


def test_wanet_field_fixed_per_trigger_and_seeded():
    x = random_images(4, 32)
    trig = make_trigger("wanet", 32, seed=3)
    # the same field for every image: warping a batch of identical images gives identical outputs
    same = trig.apply(x[:1].expand(4, -1, -1, -1))
    assert torch.equal(same[0], same[3])
    assert not torch.equal(trig.apply(x), make_trigger("wanet", 32, seed=4).apply(x))
    # a constant image stays constant; the warp is small and smooth
    const = torch.full((3, 32, 32), 0.3)
    assert torch.allclose(trig.apply(const), const, atol=1e-6)
    d = trig.describe()
    assert 0.1 < d["mean_displacement_px"] < 0.5 and d["max_displacement_px"] < 2.0
    strong = make_trigger("wanet", 32, seed=3, strength=2.0).describe()
    assert strong["mean_displacement_px"] > 3 * d["mean_displacement_px"]


def test_wanet_moves_a_ramp_by_the_field():
    trig = make_trigger("wanet", 32, seed=0, strength=4.0)
    ramp = torch.linspace(-1, 1, 32).expand(3, 32, 32).clone()
    out = trig.apply(ramp)
    # a horizontal ramp sampled at x + dx: value change equals the horizontal displacement (inside)
    dx = trig.displacement_px[..., 0].float()
    interior = (slice(2, -2), slice(2, -2))
    predicted = ramp[0] + dx * (2 / 31)
    assert torch.allclose(out[0][interior], predicted[interior], atol=1e-4)


def test_bad_input_errors():
    with pytest.raises(ConfigError, match="trigger kind"):
        make_trigger("sig", 32)
    with pytest.raises(ConfigError, match="alpha"):
        make_trigger("badnets2", 32, alpha=0.0)
    with pytest.raises(ConfigError, match="strength"):
        make_trigger("wanet", 32, strength=-1)
    with pytest.raises(ConfigError, match="options among"):
        make_trigger("badnets1", 32, alpha=0.2)
    with pytest.raises(ConfigError, match="x.shape"):
        make_trigger("badnets1", 32).apply(torch.zeros(3, 16, 16))
