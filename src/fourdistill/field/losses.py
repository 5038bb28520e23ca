"""The losses of fitting a field to images, one named function each.

R is a number of rays, P a number of points, F a feature width. Each returns a scalar tensor;
the reconstruction loop weighs them (ReconstructConfig says why each weight is what it is):

    loss = photometric_mse + mask_weight * mask_bce + distortion_weight * distortion
         + sparsity_weight * cauchy_sparsity + time_smoothness_weight * time_smoothness
"""

from __future__ import annotations

import torch


def photometric_mse(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between rendered and true colours, rgb and target (R, 3) in [0, 1]."""
    return torch.mean((rgb - target) ** 2)


def mask_bce(opacity: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Binary cross-entropy between each ray's opacity (R,) and the source's mask (R,) in
    [0, 1]; opacity is clamped to [eps, 1 - eps] so a fully transparent or opaque ray stays finite.
    Unlike an MSE it keeps pushing opacity towards 1 on the subject."""
    return torch.nn.functional.binary_cross_entropy(opacity.clamp(eps, 1.0 - eps), mask)


def distortion(per_ray: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's distortion loss (Barron et al. 2022) averaged over rays.

    per_ray (R,): sum_ij w_i w_j |s_i - s_j| + 1/3 sum_i w_i^2 (s_{i+1} - s_i) of each ray's
    weights w and normalised sample positions s, as render_rays returns it ("distortion"). It
    gathers each ray's weight into one short interval, so surfaces turn opaque."""
    return per_ray.mean()


def cauchy_sparsity(sigma: torch.Tensor) -> torch.Tensor:
    """Plenoxels' Cauchy sparsity (Fridovich-Keil et al. 2022), mean of log(1 + 2 sigma^2) over
    densities sigma (P,) at random points and times: removes fog nothing in the images asks
    for, and is nearly flat where sigma is large (real surfaces)."""
    return torch.log1p(2.0 * sigma**2).mean()


def time_smoothness(features_t0: torch.Tensor, features_t1: torch.Tensor) -> torch.Tensor:
    """K-Planes' temporal smoothness (Fridovich-Keil et al. 2023) as a sampled penalty: the
    squared change of the dynamic grid's features (P, F) between times t and t + delta at the
    same points, summed over features and averaged over points."""
    return ((features_t1 - features_t0) ** 2).sum(-1).mean()
