"""Training losses: DiceBCELoss for the mask, DepthLoss (DenseDepth) for depth.

DepthLoss also carries two optional scale-aware terms, off by default: a scale-invariant log
loss (Eigen et al. 2014, the SILog of AdaBins) and multi-scale gradient matching (MiDaS,
Ranftl et al. 2020); `silog_loss` and `gradient_matching_loss` are the same terms as functions.

Both cast their inputs to float32 and run with autocast disabled: BCE, the Dice ratio and the
SSIM statistics (differences of small means of squares) lose too much in bf16/fp16.
Both return a scalar, or `(scalar, parts)` with `return_parts=True`, where `parts` maps each
term's name to its unweighted value (a detached 0-d float32 tensor) for logging.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import Tensor, nn

SSIM_WINDOW = 11


def _float32_region(device: torch.device) -> AbstractContextManager[None]:
    """Disable autocast on `device` so the loss runs in float32 inside an autocast block."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


class DiceBCELoss(nn.Module):
    """bce_weight * BCE + dice_weight * (1 - soft Dice), for a binary mask.

    Args:
        bce_weight, dice_weight: weights of the two terms.
        smooth: added to the Dice numerator and denominator (keeps an empty mask finite).
        from_logits: True when `pred` holds logits (the model's output); False for
            probabilities in [0, 1].

    forward(pred [B,1,H,W], true_mask [B,1,H,W] in {0,1}, return_parts=False):
        soft Dice = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth), with p = sigmoid(pred)
        and the sums over the whole batch (the usual DiceBCE; pixels weigh equally), BCE the mean
        over all pixels. Returns the scalar loss, or (loss, {"bce", "dice"}) where "dice" is the
        Dice loss term 1 - soft Dice.
    """

    def __init__(
        self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0, from_logits: bool = True
    ) -> None:
        super().__init__()
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self.from_logits = bool(from_logits)

    def forward(
        self, pred: Tensor, true_mask: Tensor, return_parts: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        if pred.shape != true_mask.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and true_mask {tuple(true_mask.shape)} differ in shape")
        with _float32_region(pred.device):
            pred = pred.float()
            true_mask = true_mask.float()
            if self.from_logits:
                bce = F.binary_cross_entropy_with_logits(pred, true_mask)
                pred_prob = torch.sigmoid(pred)
            else:
                pred_prob = pred.clamp(0.0, 1.0)
                bce = F.binary_cross_entropy(pred_prob, true_mask)  # clamps log at -100 itself
            intersection = (pred_prob * true_mask).sum()
            dice = (2.0 * intersection + self.smooth) / (pred_prob.sum() + true_mask.sum() + self.smooth)
            dice_loss = 1.0 - dice
            loss = self.bce_weight * bce + self.dice_weight * dice_loss
        if return_parts:
            return loss, {"bce": bce.detach(), "dice": dice_loss.detach()}
        return loss


def image_gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences (dy, dx) of [B,C,H,W], zero in the last row / column (as tf.image)."""
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    return dy, dx


def silog_loss(pred_depth: Tensor, true_depth: Tensor, lam: float = 0.85, min_depth: float = 1e-3) -> Tensor:
    """Scale-invariant log loss (Eigen et al. 2014; AdaBins' SILog without its factor 10).

    pred_depth, true_depth: [B,1,H,W] in (0, 1]. Per image over its valid pixels (true >
    min_depth; pred clamped to at least min_depth), with g = ln pred - ln true:
        silog = sqrt(mean(g^2) - lam * mean(g)^2)
    then the mean over images that have valid pixels. lam = 1 ignores a global scale error
    entirely, lam = 0 is the RMSE of log depth; 0.85 keeps a little of the scale. Returns a 0-d
    float32 tensor (0 when no image has a valid pixel).
    """
    valid = (true_depth > min_depth).float()
    g = (pred_depth.clamp(min=min_depth).log() - true_depth.clamp(min=min_depth).log()) * valid
    n = valid.flatten(1).sum(1)
    has = n > 0
    mean_g = g.flatten(1).sum(1) / n.clamp(min=1)
    mean_g2 = (g * g).flatten(1).sum(1) / n.clamp(min=1)
    var = (mean_g2 - lam * mean_g * mean_g).clamp(min=0)
    per_image = torch.sqrt(var + 1e-8) - 1e-4  # sqrt(1e-8): a finite gradient where g == 0
    return per_image[has].mean() if bool(has.any()) else pred_depth.sum() * 0


def gradient_matching_loss(pred_depth: Tensor, true_depth: Tensor, scales: int = 4, min_depth: float = 1e-3) -> Tensor:
    """Multi-scale gradient matching (MiDaS): the residual R = pred - true should be flat.

    pred_depth, true_depth: [B,1,H,W]. At scale k = 0 .. scales-1 both are subsampled every
    2**k pixels (as MiDaS does) and the term is sum(|dx R| + |dy R|) / (number of valid pixels
    at that scale), forward differences counted only where both pixels are valid (true >
    min_depth); the result is the mean over the scales (those at least 2 px on a side). Unlike
    the DenseDepth edge term this compares gradients over 2, 4, 8 px too, so coarse structure (a
    floor's slope) counts as much as fine edges. Returns a 0-d float32 tensor.
    """
    total, used = pred_depth.new_zeros(()), 0
    for k in range(scales):
        step = 2**k
        p, t = pred_depth[..., ::step, ::step], true_depth[..., ::step, ::step]
        if min(p.shape[-2:]) < 2:  # nothing left to differentiate at this scale
            break
        used += 1
        valid = (t > min_depth).float()
        r = (p - t) * valid
        gx = (r[..., :, 1:] - r[..., :, :-1]).abs() * valid[..., :, 1:] * valid[..., :, :-1]
        gy = (r[..., 1:, :] - r[..., :-1, :]).abs() * valid[..., 1:, :] * valid[..., :-1, :]
        total = total + (gx.sum() + gy.sum()) / valid.sum().clamp(min=1)
    return total / max(used, 1)


def ssim_window(height: int, width: int) -> int:
    """SSIM window: 11, or the largest odd size that fits an image smaller than 11 pixels."""
    side = min(SSIM_WINDOW, height, width)
    return side if side % 2 else side - 1


class DepthLoss(nn.Module):
    """DenseDepth's loss: w_depth * L1 + w_ssim * clip((1 - SSIM) / 2, 0, 1) + w_edge * edge,
    plus w_silog * silog + w_grad * gradient matching (both 0, i.e. off, by default).

    Args:
        w_depth, w_ssim, w_edge: weights of the three terms (DenseDepth: 0.1, 1, 1).
        w_silog: weight of `silog_loss` (lam 0.85); w_grad: of `gradient_matching_loss`
            (`grad_scales` scales). A term whose weight is 0 is not computed.

    forward(pred_depth [B,1,H,W], true_depth [B,1,H,W], both in [0,1], return_parts=False):
        l1   = mean |pred - true| over all pixels;
        ssim = clip((1 - SSIM) / 2, 0, 1), SSIM from pytorch_msssim.ssim (Gaussian window 11,
               sigma 1.5, data_range 1, 'valid' filtering, mean over the batch). Images smaller
               than 11 px on a side use the largest odd window that fits (pytorch_msssim would
               otherwise skip smoothing along that axis); 32 px and up always use 11;
        edge = mean over the B*H*W pixels of |dx_p - dx_t| + |dy_p - dy_t|, forward differences
               padded with a zero last column / row (tf.image.image_gradients, as in DenseDepth).
        Returns the scalar loss, or (loss, {"l1", "ssim", "edge"[, "silog"][, "grad"]}) with
        the unweighted terms (silog and grad only when their weight is not 0).
    """

    def __init__(self, w_depth: float = 0.1, w_ssim: float = 1.0, w_edge: float = 1.0,
                 w_silog: float = 0.0, w_grad: float = 0.0, grad_scales: int = 4) -> None:
        super().__init__()
        self.w_depth = float(w_depth)
        self.w_ssim = float(w_ssim)
        self.w_edge = float(w_edge)
        self.w_silog = float(w_silog)
        self.w_grad = float(w_grad)
        self.grad_scales = int(grad_scales)

    def forward(
        self, pred_depth: Tensor, true_depth: Tensor, return_parts: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        if pred_depth.shape != true_depth.shape or pred_depth.dim() != 4:
            raise ValueError(
                f"pred_depth {tuple(pred_depth.shape)} and true_depth {tuple(true_depth.shape)} "
                "must both be [B,C,H,W]"
            )
        with _float32_region(pred_depth.device):
            pred_depth = pred_depth.float()
            true_depth = true_depth.float()
            l1 = (pred_depth - true_depth).abs().mean()

            win = ssim_window(pred_depth.shape[-2], pred_depth.shape[-1])
            ssim_value = ssim(pred_depth, true_depth, data_range=1.0, win_size=win, size_average=True)
            ssim_term = ((1.0 - ssim_value) * 0.5).clamp(0.0, 1.0)

            pred_dy, pred_dx = image_gradients(pred_depth)
            true_dy, true_dx = image_gradients(true_depth)
            edge = ((pred_dy - true_dy).abs() + (pred_dx - true_dx).abs()).mean()

            loss = self.w_depth * l1 + self.w_ssim * ssim_term + self.w_edge * edge
            parts = {"l1": l1.detach(), "ssim": ssim_term.detach(), "edge": edge.detach()}
            if self.w_silog:
                silog = silog_loss(pred_depth, true_depth)
                loss = loss + self.w_silog * silog
                parts["silog"] = silog.detach()
            if self.w_grad:
                grad = gradient_matching_loss(pred_depth, true_depth, self.grad_scales)
                loss = loss + self.w_grad * grad
                parts["grad"] = grad.detach()
        if return_parts:
            return loss, parts
        return loss


__all__ = ["DepthLoss", "DiceBCELoss", "gradient_matching_loss", "image_gradients", "silog_loss", "ssim_window"]
