"""Image metrics for time and view control: PSNR, SSIM (plain and masked) and Spearman's rho.

PSNR in dB from a mean squared error is `psnr_from_mse`, the one place that conversion is
written, for floats, numpy arrays and torch tensors alike; `psnr_numpy` scores the world's
channel-last numpy images directly.

Images are torch tensors in [0, 1] (data range 1), channel first: (B, C, H, W) or one image
(C, H, W). Numpy arrays in the world's channel-last layout go through `as_image_tensor` first.
Masks are (B, H, W), (B, 1, H, W) or, for one image, (H, W); values in [0, 1] weight pixels
and 0 means "ignore this pixel".

Batched inputs give one value per image, shape (B,); a single image gives a 0-dim tensor.
These are the metrics of docs/method.md, section 4 (masked where a mask exists).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# SSIM constants (Wang, Bovik, Sheikh, Simoncelli 2004, "Image quality assessment: from error
# visibility to structural similarity"): an 11 x 11 Gaussian window with sigma 1.5,
# K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2 with L the data range.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def as_image_tensor(images) -> torch.Tensor:
    """Images to a float32 tensor (B, C, H, W).

    Torch tensors are taken as channel first: (C, H, W) or (B, C, H, W). Numpy arrays are taken
    as channel last, as the world renders them: (H, W, C) or (B, H, W, C). uint8 input is
    divided by 255.
    """
    if isinstance(images, torch.Tensor):
        x = images
        channel_last = False
    else:
        arr = np.asarray(images)
        x = torch.from_numpy(np.ascontiguousarray(arr))
        channel_last = True
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"images must have 3 or 4 dimensions, got shape {tuple(x.shape)}")
    if channel_last:
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check two image tensors and lift them to (B, C, H, W); report whether the input was batched."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("metrics take torch tensors; convert numpy images with as_image_tensor")
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    batched = x.ndim == 4
    if not batched:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    return x.to(dtype), y.to(dtype), batched


def _mask(mask, like: torch.Tensor, batched: bool) -> torch.Tensor:
    """A mask for images `like` (B, C, H, W) as (B, 1, H, W) in the images' dtype."""
    m = torch.as_tensor(mask, device=like.device).to(like.dtype)
    b, _, h, w = like.shape
    if not batched and m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1 or m.shape[2:] != (h, w) or m.shape[0] != b:
        want = "(H, W)" if not batched else "(B, H, W) or (B, 1, H, W)"
        raise ValueError(f"mask must be {want} matching images {tuple(like.shape)}, got shape {tuple(torch.as_tensor(mask).shape)}")
    if torch.any(m < 0) or torch.any(m > 1):
        raise ValueError("mask values must lie in [0, 1]")
    return m


def psnr_from_mse(mse, data_range: float = 1.0, min_mse: float = 0.0):
    """PSNR in dB, 10 log10(L^2 / MSE) with L the data range (peak-to-peak: 2 for images in
    [-1, 1]), of a mean squared error: a float gives a float, a numpy array an array and a torch
    tensor a tensor of the same shape. min_mse > 0 floors the MSE there, so identical images give
    10 log10(L^2 / min_mse) instead of +inf (min_mse 0); nan stays nan."""
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(data_range**2 / (mse.clamp_min(min_mse) if min_mse > 0 else mse))
    m = np.maximum(np.asarray(mse, dtype=np.float64), min_mse)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(data_range**2 / m)
    return float(out) if np.ndim(mse) == 0 and not isinstance(mse, np.ndarray) else out


def mse_numpy(a, b) -> np.ndarray:
    """Per-image mean squared error (N,) of channel-last numpy images (N, H, W, C), in float64."""
    return np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))


def psnr_numpy(a, b, data_range: float = 1.0) -> np.ndarray:
    """Per-image PSNR in dB (N,) of channel-last numpy images (N, H, W, C), in float64, the MSE
    floored at 1e-12 (identical images give 120 dB)."""
    return psnr_from_mse(mse_numpy(a, b), data_range, min_mse=1e-12)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(L^2 / MSE); +inf for identical images.

    x, y: (B, C, H, W) -> (B,), or (C, H, W) -> ().
    """
    x, y, batched = _pair(x, y)
    out = psnr_from_mse(((x - y) ** 2).mean(dim=(1, 2, 3)), data_range)
    return out if batched else out[0]


def masked_psnr(x: torch.Tensor, y: torch.Tensor, mask, data_range: float = 1.0) -> torch.Tensor:
    """PSNR over the pixels inside `mask` only (the MSE is the mask-weighted mean over pixels
    and channels). An image with an empty mask gives nan.

    x, y: (B, C, H, W), mask (B, H, W) -> (B,); or (C, H, W), (H, W) -> ().
    """
    x, y, batched = _pair(x, y)
    m = _mask(mask, x, batched)
    weight = m.sum(dim=(1, 2, 3)) * x.shape[1]
    sq = (m * (x - y) ** 2).sum(dim=(1, 2, 3))
    mse = torch.where(weight > 0, sq / weight.clamp_min(1e-12), torch.full_like(sq, math.nan))
    out = psnr_from_mse(mse, data_range)
    return out if batched else out[0]


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64) -> torch.Tensor:
    """The normalised 1-D Gaussian (size,) whose outer product is SSIM's 2-D window."""
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of (B, C, H, W) -> (B, C, H - k + 1, W - k + 1)."""
    c = x.shape[1]
    k = g.numel()
    gx = g.view(1, 1, 1, k).expand(c, 1, 1, k)
    gy = g.view(1, 1, k, 1).expand(c, 1, k, 1)
    return F.conv2d(F.conv2d(x, gx, groups=c), gy, groups=c)


def _ssim(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None, data_range: float) -> torch.Tensor:
    """Mean SSIM per image of (B, C, H, W) pairs, optionally with a (B, 1, H, W) mask.

    Local statistics are Gaussian-weighted over each window's valid pixels (no padding, as the
    reference implementation's 'valid' filtering). With a mask they are normalised by the
    masked window weight, so pixels outside the mask never enter any statistic, and the map is
    averaged over window centres inside the mask (weighted by the mask there). Computed in
    float64: E[x^2] - E[x]^2 in float32 loses about 1e-5 of SSIM to cancellation.
    """
    out_dtype = x.dtype
    x, y = x.double(), y.double()
    m = None if m is None else m.double()
    b, c, h, w = x.shape
    k = SSIM_WINDOW
    if h < k or w < k:
        raise ValueError(f"SSIM needs images of at least {k} x {k} pixels, got {h} x {w}")
    g = gaussian_window(k, SSIM_SIGMA, x.dtype).to(x.device)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    if m is None:
        m = torch.ones(b, 1, h, w, dtype=x.dtype, device=x.device)
    mc = m.expand(b, c, h, w)
    norm = _blur(mc, g)
    safe = norm.clamp_min(1e-12)
    mu_x = _blur(mc * x, g) / safe
    mu_y = _blur(mc * y, g) / safe
    var_x = (_blur(mc * x * x, g) / safe - mu_x**2).clamp_min(0.0)
    var_y = (_blur(mc * y * y, g) / safe - mu_y**2).clamp_min(0.0)
    cov = _blur(mc * x * y, g) / safe - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    r = (k - 1) // 2
    centre = mc[:, :, r : h - r, r : w - r]
    total = centre.sum(dim=(1, 2, 3))
    score = (centre * ssim_map).sum(dim=(1, 2, 3))
    out = torch.where(total > 0, score / total.clamp_min(1e-12), torch.full_like(score, math.nan))
    return out.to(out_dtype)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (11 x 11 Gaussian window, sigma 1.5), averaged over channels and
    over all valid window positions; 1 for identical images. Images need at least 11 x 11 pixels.

    x, y: (B, C, H, W) -> (B,), or (C, H, W) -> ().
    """
    x, y, batched = _pair(x, y)
    out = _ssim(x, y, None, data_range)
    return out if batched else out[0]


def masked_ssim(x: torch.Tensor, y: torch.Tensor, mask, data_range: float = 1.0) -> torch.Tensor:
    """SSIM that ignores pixels outside `mask`: local means, variances and covariance use only
    masked pixels of each window, and the SSIM map is averaged over window centres in the mask.
    With an all-ones mask it equals `ssim`. Images whose mask has no valid window centre give nan.

    x, y: (B, C, H, W), mask (B, H, W) -> (B,); or (C, H, W), (H, W) -> ().
    """
    x, y, batched = _pair(x, y)
    out = _ssim(x, y, _mask(mask, x, batched), data_range)
    return out if batched else out[0]


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor, ties sharing the average of their ranks."""
    order = torch.argsort(v, stable=True)
    sorted_v = v[order]
    n = v.numel()
    ranks_sorted = torch.empty(n, dtype=torch.float64)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks_sorted[i : j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = ranks_sorted
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation of two 1-D sequences (ties get average ranks): the Pearson
    correlation of their ranks, in [-1, 1]. nan when either sequence is constant.
    """
    a = torch.as_tensor(x, dtype=torch.float64).flatten()
    b = torch.as_tensor(y, dtype=torch.float64).flatten()
    if a.numel() != b.numel():
        raise ValueError(f"spearman needs sequences of equal length, got {a.numel()} and {b.numel()}")
    if a.numel() < 2:
        raise ValueError(f"spearman needs at least 2 values, got {a.numel()}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("spearman needs finite values")
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra = ra - ra.mean()
    rb = rb - rb.mean()
    denom = torch.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denom == 0:
        return math.nan
    return float((ra * rb).sum() / denom)
