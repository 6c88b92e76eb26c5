"""Networks: output contract, size errors, options, parameter counts, that it can learn."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from maskdepth.errors import ConfigError
from maskdepth.losses import DepthLoss, DiceBCELoss
from maskdepth.model import InputSizeError, MaskDepthNet, SeedNet, build_model, count_parameters, nearest_valid_sizes


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"maskdepth": build_model("maskdepth").eval(), "seed": build_model("seed").eval()}


def test_parameter_counts(models):
    # The seed's count comes from its published layer list; ours must stay within that budget.
    assert count_parameters(models["seed"]) == 3_165_170
    assert count_parameters(models["maskdepth"]) <= 3_200_000
    assert count_parameters(models["maskdepth"]) == 3_060_258  # the defaults; update on purpose


@pytest.mark.parametrize("name", ["maskdepth", "seed"])
@pytest.mark.parametrize("size", [32, 64, 192])
def test_output_shapes_and_ranges(models, name, size):
    batch = 1 if size > 64 else 2
    bg = torch.rand(batch, 3, size, size)
    fg_bg = torch.rand(batch, 3, size, size)
    with torch.no_grad():
        pred_mask_logits, pred_depth = models[name](bg, fg_bg)
    assert pred_mask_logits.shape == (batch, 1, size, size)
    assert pred_depth.shape == (batch, 1, size, size)
    assert pred_mask_logits.dtype == torch.float32
    assert bool(torch.isfinite(pred_mask_logits).all())
    assert float(pred_depth.min()) >= 0.0 and float(pred_depth.max()) <= 1.0


def test_non_square_input(models):
    with torch.no_grad():
        pred_mask_logits, pred_depth = models["maskdepth"](torch.rand(1, 3, 32, 64), torch.rand(1, 3, 32, 64))
    assert pred_mask_logits.shape == pred_depth.shape == (1, 1, 32, 64)


def test_bad_size_names_nearest_valid_sizes(models):
    model = models["maskdepth"]
    assert model.stride == 16
    with pytest.raises(ConfigError, match=r"50x64 .*stride 16.*height 50 -> use 48 or 64") as info:
        model(torch.rand(1, 3, 50, 64), torch.rand(1, 3, 50, 64))
    assert isinstance(info.value, ValueError)  # callers catching ValueError see it too
    with pytest.raises(InputSizeError, match=r"width 8 -> use 16\b"):
        model(torch.rand(1, 3, 16, 8), torch.rand(1, 3, 16, 8))
    assert models["seed"].stride == 4
    with pytest.raises(InputSizeError, match=r"width 66 -> use 64 or 68"):
        models["seed"](torch.rand(1, 3, 64, 66), torch.rand(1, 3, 64, 66))


def test_mismatched_inputs_rejected(models):
    with pytest.raises(InputSizeError, match="same shape"):
        models["maskdepth"](torch.rand(1, 3, 32, 32), torch.rand(1, 3, 64, 64))


def test_nearest_valid_sizes():
    assert nearest_valid_sizes(50, 16) == (48, 64)
    assert nearest_valid_sizes(7, 16) == (16,)
    assert nearest_valid_sizes(64, 16) == (64, 80)


def test_build_model_names_and_options():
    model = build_model("maskdepth", base_channels=16, num_stages=3)
    assert isinstance(model, MaskDepthNet) and model.stride == 8
    assert count_parameters(model) < count_parameters(build_model("maskdepth"))
    assert isinstance(build_model("seed"), SeedNet)
    assert isinstance(build_model("maskdepth", base_channels=None), MaskDepthNet)  # null = default
    with pytest.raises(ConfigError, match="valid names: maskdepth, seed"):
        build_model("unet")
    with pytest.raises(ConfigError, match="width.*valid options: base_channels, num_stages"):
        build_model("maskdepth", width=3)
    with pytest.raises(ConfigError, match="valid options: activation"):
        build_model("seed", base_channels=32)
    with pytest.raises(ConfigError, match="num_stages"):
        build_model("maskdepth", num_stages=9)


def _activations(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]


def test_seed_activation_switches_only_the_decoders():
    torch.manual_seed(0)
    plain = build_model("seed")  # model_1.py's nn.ReLU(0.2): a plain ReLU (0.2 is `inplace`)
    leaky = build_model("seed", activation="leaky_relu")  # the notebook summary's LeakyReLU(0.2)
    assert plain.activation == "relu" and leaky.activation == "leaky_relu"
    for decoder in ("mask_decoder", "depth_decoder"):  # 2 up-stages x 2 convolutions each
        assert [type(m) for m in _activations(getattr(plain, decoder))] == [torch.nn.ReLU] * 4
        acts = _activations(getattr(leaky, decoder))
        assert [type(m) for m in acts] == [torch.nn.LeakyReLU] * 4
        assert all(m.negative_slope == 0.2 for m in acts)
    x = torch.tensor([-1.0, 0.5])
    assert torch.equal(_activations(leaky.mask_decoder)[0](x.clone()), torch.tensor([-0.2, 0.5]))
    assert torch.equal(_activations(plain.mask_decoder)[0](x.clone()), torch.tensor([0.0, 0.5]))
    # the encoder is the same, and so are the parameters: checkpoints load into either
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in leaky.bg_stem.modules())
    assert count_parameters(leaky) == count_parameters(plain) == 3_165_170
    leaky.load_state_dict(plain.state_dict())
    plain.eval(), leaky.eval()
    bg, fg_bg = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (m1, d1), (m2, d2) = plain(bg, fg_bg), leaky(bg, fg_bg)
    assert m1.shape == m2.shape and all(d.min() >= 0 and d.max() <= 1 for d in (d1, d2))
    assert not torch.allclose(m1, m2)  # same weights, another network: negatives pass at 0.2
    with pytest.raises(ConfigError, match="unknown seed activation 'gelu'; valid: relu, leaky_relu"):
        build_model("seed", activation="gelu")
    with pytest.raises(ConfigError, match="activation for model 'maskdepth'"):
        build_model("maskdepth", activation="leaky_relu")


def test_normalization_buffers_in_state_dict():
    model = build_model("maskdepth")
    assert torch.equal(model.input_mean, torch.full((3,), 0.5))
    assert torch.equal(model.input_std, torch.full((3,), 0.25))
    model.set_normalization([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    state = model.state_dict()
    assert torch.allclose(state["input_mean"], torch.tensor([0.4, 0.5, 0.6]))
    restored = build_model("maskdepth")
    restored.load_state_dict(state)
    assert torch.allclose(restored.input_std, torch.tensor([0.2, 0.25, 0.3]))
    with pytest.raises(ConfigError, match="std must be > 0"):
        model.set_normalization([0.5] * 3, [0.2, 0.0, 0.2])
    with pytest.raises(ConfigError, match="3 values"):
        model.set_normalization([0.5] * 2, [0.2] * 3)


def test_normalization_is_applied():
    # Same network, inputs shifted with the mean: identical outputs only if the model subtracts it.
    torch.manual_seed(0)
    model = build_model("maskdepth", base_channels=8, num_stages=2).eval()
    x_bg, x_fg = torch.rand(1, 3, 32, 32) * 0.5, torch.rand(1, 3, 32, 32) * 0.5
    with torch.no_grad():
        ref = model(x_bg, x_fg)
        model.set_normalization([0.75] * 3, [0.25] * 3)
        shifted = model(x_bg + 0.25, x_fg + 0.25)
    assert torch.allclose(ref[0], shifted[0], atol=1e-5)
    assert torch.allclose(ref[1], shifted[1], atol=1e-5)


@pytest.mark.parametrize("name", ["maskdepth", "seed"])
def test_finite_gradients_under_cpu_autocast(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    bg, fg_bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    true_mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    true_depth = torch.rand(2, 1, 32, 32).clamp_min(0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred_mask_logits, pred_depth = model(bg, fg_bg)
        loss = DiceBCELoss()(pred_mask_logits, true_mask) + DepthLoss()(pred_depth, true_depth)
    assert loss.dtype == torch.float32
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def _toy_scenes(n: int, size: int) -> tuple[torch.Tensor, ...]:
    """A rectangle pasted on a smooth background whose depth ramps from far (top) to near."""
    gen = torch.Generator().manual_seed(0)
    bg = F.interpolate(torch.rand(n, 3, 4, 4, generator=gen), size=(size, size), mode="bilinear")
    ramp = torch.linspace(0.9, 0.3, size).view(1, 1, size, 1).expand(n, 1, size, size)
    true_mask = torch.zeros(n, 1, size, size)
    for i in range(n):
        y0, x0 = (torch.randint(0, size // 2, (2,), generator=gen)).tolist()
        true_mask[i, :, y0 : y0 + size // 3, x0 : x0 + size // 3] = 1.0
    colour = torch.rand(n, 3, 1, 1, generator=gen)
    fg_bg = bg * (1 - true_mask) + colour * true_mask
    true_depth = torch.where(true_mask.bool(), 0.15, ramp)
    return bg, fg_bg, true_mask, true_depth


def test_maskdepth_learns_toy_scenes():
    """Overfit 8 toy scenes for 40 steps: both losses fall far below their starting values."""
    torch.manual_seed(0)
    bg, fg_bg, true_mask, true_depth = _toy_scenes(8, 32)
    model = build_model("maskdepth", base_channels=16).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mask_loss, depth_loss = DiceBCELoss(), DepthLoss()
    history = []
    for _ in range(40):
        pred_mask_logits, pred_depth = model(bg, fg_bg)
        m, d = mask_loss(pred_mask_logits, true_mask), depth_loss(pred_depth, true_depth)
        optimizer.zero_grad()
        (m + d).backward()
        optimizer.step()
        history.append((m.item(), d.item()))
    first, last = history[0], history[-1]
    # Measured: mask 1.53 -> 0.20, depth 0.49 -> 0.04.
    assert last[0] < 0.35 * first[0], history[::10]
    assert last[1] < 0.2 * first[1], history[::10]


def test_depth_context_options_build_run_and_stay_in_the_parameter_budget():
    torch.manual_seed(0)
    full = build_model("maskdepth", context="ppm", depth_sees_mask=True, coords=True, dropout=0.1)
    assert count_parameters(full) <= 3_500_000  # issue 12's limit
    assert full.depth_head.refine[0].in_channels == 32 + 11 + 1  # decoder + 9 input + 2 coords + mask
    bg, fg_bg = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    full.eval()
    logits, depth = full(bg, fg_bg)
    assert logits.shape == depth.shape == (2, 1, 64, 64) and 0 <= depth.min() and depth.max() <= 1
    # the depth head sees the mask: changing only the mask head moves the depth output
    with torch.no_grad():
        full.mask_head.out.bias.add_(3.0)
    assert not torch.allclose(full(bg, fg_bg)[1], depth)
    with pytest.raises(ConfigError, match="model.context must be one of none, ppm"):
        build_model("maskdepth", context="aspp")
    with pytest.raises(ConfigError, match="model.dropout"):
        build_model("maskdepth", dropout=1.0)
    deeper = build_model("maskdepth", blocks=3, base_channels=24)
    assert len(deeper.encoder[0]) == 4 and count_parameters(deeper) <= 3_500_000  # down + 3 blocks
    with pytest.raises(ConfigError, match="model.blocks"):
        build_model("maskdepth", blocks=0)


def test_pyramid_pooling_starts_as_the_identity_and_sees_the_whole_image():
    from maskdepth.model import PyramidPooling

    torch.manual_seed(0)
    block = PyramidPooling(16).eval()
    x = torch.rand(2, 16, 4, 4)  # non-negative, like the ReLU output it follows
    assert torch.allclose(block(x), x)
    with torch.no_grad():
        block.fuse[1].weight.fill_(1.0)
    y = x.clone()
    y[:, :, 0, 0] += 5.0  # one corner changes ...
    assert not torch.allclose(block(y)[:, :, 3, 3], block(x)[:, :, 3, 3])  # ... and the far corner knows


# sha256 (first 16 hex digits) of the "key shape" lines of build_model(name, **options).state_dict(), and the
# number of keys, taken from the single-file model.py before the encoder registry: a checkpoint saved then
# must load now. Change only on purpose (old checkpoints stop loading).
STATE_KEYS = [
    ("maskdepth", {}, 162, "29eab7f267702e09"),
    ("maskdepth", {"context": "ppm", "depth_sees_mask": True, "coords": True, "dropout": 0.1}, 186, "028f2fa8f389f845"),
    ("maskdepth", {"blocks": 3, "base_channels": 24, "num_stages": 5}, 324, "11984c7eb52fbc39"),
    ("seed", {}, 154, "811817bef3590e38"),
    ("seed", {"activation": "leaky_relu"}, 154, "811817bef3590e38"),
    ("maskdepth", {"encoder": "resnet18"}, 234, "1211e7e18ff5c42c"),
    ("maskdepth", {"encoder": "resnet34", "context": "ppm"}, 354, "8cd293e212800c4a"),
    ("maskdepth", {"encoder": "efficientnet_b0", "depth_sees_mask": True}, 466, "71ab27129d97bbfe"),
    # issue 22's options, pinned when they came in; log_depth alone adds no key
    ("maskdepth", {"log_depth": True}, 162, "29eab7f267702e09"),
    ("maskdepth", {"scale_head": True}, 166, "24196c3aab1fb11e"),
    ("maskdepth", {"ruler": True}, 162, "07a696257b22f805"),
    ("maskdepth", {"scale_head": True, "ruler": True, "log_depth": True}, 166, "f13e52cffcc551a3"),
]


@pytest.mark.parametrize(("name", "options", "count", "digest"), STATE_KEYS)
def test_state_dict_keys_are_those_of_older_checkpoints(name, options, count, digest):
    state = build_model(name, **options).state_dict()
    text = "\n".join(f"{key} {tuple(value.shape)}" for key, value in state.items())
    assert (len(state), hashlib.sha256(text.encode()).hexdigest()[:16]) == (count, digest), (
        f"the state_dict keys or shapes of {name} {options} changed: checkpoints saved before would not load")


def test_the_public_face_exports_what_it_lists():
    import types

    import maskdepth.model

    helpers = {"annotations", "Any", "ConfigError", "TYPE_CHECKING"}  # what __init__ itself uses
    public = {name for name in dir(maskdepth.model) if not name.startswith("_") and name not in helpers
              and not isinstance(getattr(maskdepth.model, name), types.ModuleType)}
    assert public == set(maskdepth.model.__all__)


# --------------------------------------------------------------------------------------------
# depth that knows its scale (issue 22): scale_head, ruler, log_depth

SCALE_OPTIONS = [{"scale_head": True}, {"ruler": True}, {"log_depth": True}, {"scale_head": True, "ruler": True},
                 {"scale_head": True, "log_depth": True}, {"scale_head": True, "ruler": True, "log_depth": True}]


@pytest.mark.parametrize("options", SCALE_OPTIONS)
def test_scale_options_keep_depth_in_range(options):
    torch.manual_seed(0)
    model = build_model("maskdepth", base_channels=16, **options).eval()
    bg, fg_bg = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        logits, depth = model(bg, fg_bg)
    assert logits.shape == depth.shape == (2, 1, 32, 48)
    assert bool(torch.isfinite(depth).all()) and float(depth.min()) > 0 and float(depth.max()) <= 1
    # pushed to either end, the depth stays in (0, 1] and finite
    head = model.scale_head.out if model.scale_head is not None else model.depth_head.out
    for bias in (-30.0, 30.0):
        with torch.no_grad():
            head.bias.fill_(bias)
            depth = model(bg, fg_bg)[1]
        assert bool(torch.isfinite(depth).all()) and float(depth.min()) > 0 and float(depth.max()) <= 1


def test_scale_head_sets_one_scale_per_image_and_learns():
    torch.manual_seed(0)
    model = build_model("maskdepth", base_channels=16, scale_head=True, log_depth=True).train()
    bg, fg_bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    _, depth = model(bg, fg_bg)
    loss = DepthLoss(w_silog=1.0)(depth, torch.rand(2, 1, 32, 32).clamp_min(0.05))
    loss.backward()
    for name, param in model.scale_head.named_parameters():  # the last layer starts at zero weight ...
        if name.startswith("out."):
            assert param.grad is not None and bool(torch.isfinite(param.grad).all()) and param.grad.abs().sum() > 0
    # ... and s is one log scale per image: +ln 2 doubles every depth below the ceiling
    model.eval()
    with torch.no_grad():
        before = model(bg, fg_bg)[1]
        model.scale_head.out.bias.add_(float(torch.log(torch.tensor(2.0))))
        after = model(bg, fg_bg)[1]
    low = before < 0.2
    assert low.any() and torch.allclose(after[low] / before[low], torch.full_like(before[low], 2.0), rtol=1e-3)


def test_ruler_features_measure_the_object():
    from maskdepth.model import ruler_features

    mask = torch.zeros(3, 1, 10, 8)
    mask[0, :, 2:7, 3:5] = 1.0  # rows 2..6: 5 of 10 rows, lowest row 6 of 0..9
    mask[1, :, 9, 0] = 0.8  # one soft row, the last one
    height, foot = ruler_features(mask).T
    assert torch.allclose(height, torch.tensor([0.5, 0.08, 0.0]))
    assert torch.allclose(foot, torch.tensor([6 / 9, 0.8, 0.0]))
    mask.requires_grad_(True)
    ruler_features(mask).sum().backward()
    assert mask.grad.abs().sum() > 0  # differentiable in the mask


def test_ruler_gives_the_depth_head_the_mask_and_the_ruler():
    torch.manual_seed(0)
    model = build_model("maskdepth", ruler=True, scale_head=True).eval()
    assert model.depth_head.refine[0].in_channels == 32 + 9 + 1 + 2  # decoder + input + mask + height, foot
    assert model.scale_head.hidden[0].in_features == 2 * 256 + 2
    assert build_model("maskdepth", ruler=True, depth_sees_mask=True).depth_head.refine[0].in_channels == 32 + 9 + 3
    bg, fg_bg = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        depth = model(bg, fg_bg)[1]
        model.mask_head.out.bias.add_(3.0)  # another mask: another ruler and mask plane
        assert not torch.allclose(model(bg, fg_bg)[1], depth)


def test_scale_option_combinations_build_and_stay_in_the_parameter_budget():
    torch.manual_seed(0)
    bg, fg_bg = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    for extra in ({}, {"context": "ppm", "depth_sees_mask": True, "coords": True}, {"encoder": "resnet18"}):
        model = build_model("maskdepth", scale_head=True, ruler=True, log_depth=True, **extra).eval()
        if not extra:
            assert count_parameters(model) <= 3_500_000
        with torch.no_grad():
            depth = model(bg, fg_bg)[1]
        assert depth.shape == (1, 1, 64, 64) and 0 < float(depth.min()) and float(depth.max()) <= 1
    # off is the default network, key for key
    assert build_model("maskdepth", scale_head=False, ruler=False, log_depth=False).state_dict().keys() == \
        build_model("maskdepth").state_dict().keys()


def test_scale_options_round_trip_through_a_checkpoint(tmp_path):
    import dataclasses

    from maskdepth.checkpoint import TrainState, make_state, save_checkpoint
    from maskdepth.config import load_config
    from maskdepth.inference import load_model
    from maskdepth.runtime import grad_scaler

    cfg = load_config(None, ["model.scale_head=true", "model.ruler=true", "model.log_depth=true",
                             "model.base_channels=16"])
    torch.manual_seed(0)
    model = build_model(cfg.model.name, **cfg.model.options())
    with torch.no_grad():
        model.scale_head.out.weight.normal_()  # not the initial value, so the load is seen
    state = make_state(TrainState(), config=dataclasses.asdict(cfg), model=model,
                       optimizer=torch.optim.AdamW(model.parameters()), scaler=grad_scaler(False))
    path = save_checkpoint(tmp_path / "last.pt", state)
    loaded, loaded_cfg = load_model(path, "cpu")
    assert (loaded_cfg.model.scale_head, loaded_cfg.model.ruler, loaded_cfg.model.log_depth) == (True, True, True)
    bg, fg_bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = model.eval()(bg, fg_bg), loaded(bg, fg_bg)
    assert torch.equal(expected[1], got[1]) and torch.equal(expected[0], got[0])
