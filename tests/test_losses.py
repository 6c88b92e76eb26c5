"""Losses against hand-computed values on tiny tensors, orderings, and autocast safety."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from maskdepth.losses import DepthLoss, DiceBCELoss, image_gradients, ssim_window

# sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25
LOGITS = torch.tensor([0.0, 0.0, math.log(3), -math.log(3)]).view(1, 1, 2, 2)
PROBS = torch.tensor([0.5, 0.5, 0.75, 0.25]).view(1, 1, 2, 2)
TARGET = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
# BCE: mean(ln 2, ln 2, ln 4/3, ln 4/3) = ln(8/3) / 2.  Dice: (2 * 1.25 + 1) / (2 + 2 + 1) = 0.7.
HAND_BCE = math.log(8 / 3) / 2
HAND_DICE_LOSS = 0.3


def test_dice_bce_hand_computed():
    loss, parts = DiceBCELoss()(LOGITS, TARGET, return_parts=True)
    assert parts["bce"].item() == pytest.approx(HAND_BCE, rel=1e-6)
    assert parts["dice"].item() == pytest.approx(HAND_DICE_LOSS, rel=1e-6)
    assert loss.item() == pytest.approx(HAND_BCE + HAND_DICE_LOSS, rel=1e-6)
    assert loss.dim() == 0


def test_dice_bce_from_probabilities_matches_logits():
    loss = DiceBCELoss(from_logits=False)(PROBS, TARGET)
    assert loss.item() == pytest.approx(HAND_BCE + HAND_DICE_LOSS, rel=1e-5)


def test_dice_bce_weights_and_smooth():
    assert DiceBCELoss(bce_weight=2.0, dice_weight=0.0)(LOGITS, TARGET).item() == pytest.approx(2 * HAND_BCE, rel=1e-6)
    # smooth=0: 1 - 2.5 / 4
    assert DiceBCELoss(bce_weight=0.0, smooth=0.0)(LOGITS, TARGET).item() == pytest.approx(0.375, rel=1e-6)


def test_dice_bce_empty_mask():
    empty = torch.zeros(1, 1, 2, 2)
    # p = 0.5 everywhere: BCE ln 2, Dice (0 + 1) / (2 + 0 + 1) = 1/3.
    loss, parts = DiceBCELoss()(torch.zeros(1, 1, 2, 2), empty, return_parts=True)
    assert parts["bce"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert parts["dice"].item() == pytest.approx(2 / 3, rel=1e-6)
    # Confidently empty prediction of an empty mask: the smooth term makes it a perfect score.
    assert DiceBCELoss()(torch.full((1, 1, 2, 2), -30.0), empty).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_bce_good_scores_better_than_bad():
    true_mask = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    good, bad = 4 * (2 * true_mask - 1), -4 * (2 * true_mask - 1)
    criterion = DiceBCELoss()
    assert criterion(good, true_mask).item() < 0.1 < criterion(bad, true_mask).item()


def test_dice_bce_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        DiceBCELoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2))


def test_image_gradients_forward_differences_zero_padded():
    x = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 1.0]]).view(1, 1, 2, 3)
    dy, dx = image_gradients(x)
    assert torch.equal(dx, torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0]]).view(1, 1, 2, 3))
    assert torch.equal(dy, torch.tensor([[-1.0, -2.0, -3.0], [0.0, 0.0, 0.0]]).view(1, 1, 2, 3))


def test_depth_loss_l1_and_edge_hand_computed():
    # pred ramps 0, 0.1, 0.2, 0.3 along x; true is flat 0.5.
    pred = (0.1 * torch.arange(4.0)).view(1, 1, 1, 4).expand(1, 1, 4, 4).contiguous()
    true = torch.full((1, 1, 4, 4), 0.5)
    _, parts = DepthLoss()(pred, true, return_parts=True)
    assert parts["l1"].item() == pytest.approx((0.5 + 0.4 + 0.3 + 0.2) / 4, rel=1e-6)
    # |dx_p - dx_t| = 0.1 on 3 of 4 columns, dy = 0: 12 * 0.1 / 16 pixels.
    assert parts["edge"].item() == pytest.approx(0.075, rel=1e-5)


def test_depth_loss_ssim_of_constant_images_hand_computed():
    # Constant images: variances are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2.
    a, b, c1 = 0.2, 0.5, 1e-4
    ssim = (2 * a * b + c1) / (a * a + b * b + c1)
    pred, true = torch.full((2, 1, 32, 32), a), torch.full((2, 1, 32, 32), b)
    loss, parts = DepthLoss()(pred, true, return_parts=True)
    assert parts["ssim"].item() == pytest.approx((1 - ssim) / 2, rel=1e-5)
    assert parts["edge"].item() == 0.0
    assert loss.item() == pytest.approx(0.1 * 0.3 + (1 - ssim) / 2, rel=1e-5)
    weighted = DepthLoss(w_depth=1.0, w_ssim=0.0, w_edge=0.0)(pred, true)
    assert weighted.item() == pytest.approx(0.3, rel=1e-6)


def test_depth_loss_zero_for_perfect_prediction():
    true = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    assert DepthLoss()(true.clone(), true).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_window_fits_small_images_without_warnings():
    assert ssim_window(32, 32) == 11
    assert ssim_window(192, 8) == 7
    assert ssim_window(10, 10) == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pytorch_msssim warns when it skips smoothing
        loss = DepthLoss()(torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6))
    assert torch.isfinite(loss)


def test_depth_loss_good_scores_better_than_bad():
    gen = torch.Generator().manual_seed(2)
    true = torch.linspace(0.9, 0.2, 32).view(1, 1, 32, 1).expand(2, 1, 32, 32).contiguous()
    true[:, :, 8:20, 8:20] = 0.1  # a near object
    good = (true + 0.02 * torch.randn(true.shape, generator=gen)).clamp(0, 1)
    bad = torch.rand(true.shape, generator=gen)
    criterion = DepthLoss()
    assert criterion(good, true).item() < 0.5 * criterion(bad, true).item()
    assert criterion(good, true).item() < criterion(true.flip(-2), true).item()


@pytest.mark.parametrize("criterion, make_target", [
    (DiceBCELoss(), lambda shape, gen: (torch.rand(shape, generator=gen) > 0.5).float()),
    (DepthLoss(), lambda shape, gen: torch.rand(shape, generator=gen)),
])
def test_losses_float32_and_finite_gradients_under_autocast(criterion, make_target):
    gen = torch.Generator().manual_seed(3)
    shape = (2, 1, 32, 32)
    raw = torch.randn(shape, generator=gen, requires_grad=True)
    target = make_target(shape, gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # A bf16 activation, as a network under autocast would produce.
        pred = torch.sigmoid(raw.to(torch.bfloat16)) if isinstance(criterion, DepthLoss) else raw.to(torch.bfloat16)
        loss, parts = criterion(pred, target, return_parts=True)
    assert pred.dtype == torch.bfloat16
    assert loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in parts.values())
    # The same value as the float32 loss of the (rounded) bf16 values outside autocast.
    assert loss.item() == pytest.approx(criterion(pred.detach().float(), target).item(), rel=1e-6)
    loss.backward()
    assert raw.grad is not None and bool(torch.isfinite(raw.grad).all())


# ---- optional scale-aware depth terms (issue 12)


def test_silog_hand_computed_and_ignores_invalid_pixels():
    from maskdepth.losses import silog_loss

    true = torch.tensor([0.5, 0.5, 0.0]).view(1, 1, 1, 3)  # the third pixel is invalid (no depth)
    pred = torch.tensor([0.5, 0.5 * math.e, 0.9]).view(1, 1, 1, 3)
    # g = ln p - ln t = (0, 1): mean 0.5, mean of squares 0.5 -> sqrt(0.5 - 0.85 * 0.25)
    assert silog_loss(pred, true).item() == pytest.approx(math.sqrt(0.2875), abs=2e-4)
    assert silog_loss(pred, true, lam=0.0).item() == pytest.approx(math.sqrt(0.5), abs=2e-4)


def test_silog_is_blind_to_a_global_scale_with_lambda_one():
    from maskdepth.losses import silog_loss

    true = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    assert silog_loss(true * 0.5, true, lam=1.0).item() == pytest.approx(0.0, abs=1e-3)
    assert silog_loss(true * 0.5, true, lam=0.85).item() > 0.2  # 0.85 keeps some of the scale
    wrong = true.flip(-1)
    assert silog_loss(wrong, true, lam=1.0).item() > silog_loss(true * 0.5, true, lam=1.0).item()


def test_gradient_matching_hand_computed():
    from maskdepth.losses import gradient_matching_loss

    pred = torch.tensor([[0.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    true = torch.full((1, 1, 2, 2), 0.5)
    # residual [[-.5, .5], [-.5, -.5]]: |dx| sums to 1, |dy| to 1, over 4 valid pixels -> 0.5;
    # coarser scales have fewer than 2 px and are not counted
    assert gradient_matching_loss(pred, true, scales=1).item() == pytest.approx(0.5)
    assert gradient_matching_loss(pred, true, scales=4).item() == pytest.approx(0.5)
    # a constant offset has flat residuals at every scale
    true = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.2
    assert gradient_matching_loss(true + 0.1, true).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_matching_loss(true.flip(-1), true).item() > 0.05


def test_gradient_matching_skips_pairs_with_an_invalid_pixel():
    from maskdepth.losses import gradient_matching_loss

    true = torch.tensor([[0.5, 0.0], [0.5, 0.5]]).view(1, 1, 2, 2)  # top right invalid
    pred = torch.tensor([[0.5, 0.9], [0.5, 0.7]]).view(1, 1, 2, 2)
    # valid pairs: dx bottom row |0 - 0.2| = 0.2; dy left column 0; 3 valid pixels
    assert gradient_matching_loss(pred, true, scales=1).item() == pytest.approx(0.2 / 3, rel=1e-5)


def test_depth_loss_adds_the_optional_terms_with_their_weights():
    from maskdepth.losses import gradient_matching_loss, silog_loss

    g = torch.Generator().manual_seed(2)
    pred, true = torch.rand(2, 1, 16, 16, generator=g) * 0.9 + 0.05, torch.rand(2, 1, 16, 16, generator=g) * 0.9 + 0.05
    base, parts = DepthLoss()(pred, true, return_parts=True)
    assert set(parts) == {"l1", "ssim", "edge"}  # off by default, and not computed
    full, parts = DepthLoss(w_silog=0.5, w_grad=2.0)(pred, true, return_parts=True)
    assert parts["silog"].item() == pytest.approx(silog_loss(pred, true).item())
    assert parts["grad"].item() == pytest.approx(gradient_matching_loss(pred, true).item())
    expected = base.item() + 0.5 * parts["silog"].item() + 2.0 * parts["grad"].item()
    assert full.item() == pytest.approx(expected, rel=1e-5)
