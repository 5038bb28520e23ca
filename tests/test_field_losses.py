"""The reconstruction losses against hand computations."""

import math

import pytest
import torch

from fourdistill.field import losses


def test_photometric_mse():
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([[0.5, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert float(losses.photometric_mse(rgb, target)) == pytest.approx((0.25 + 1.0) / 6)


def test_mask_bce_clamps_opacity():
    opacity = torch.tensor([0.5, 1.0, 0.0])
    mask = torch.tensor([1.0, 1.0, 0.0])
    # -log(0.5) for the first ray; the opaque and the empty ray are clamped to 1 - 1e-5 and 1e-5
    expected = (-math.log(0.5) - math.log(1 - 1e-5) - math.log(1 - 1e-5)) / 3
    assert float(losses.mask_bce(opacity, mask)) == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(float(losses.mask_bce(torch.tensor([0.0]), torch.tensor([1.0]))))


def test_distortion_is_the_mean_over_rays():
    assert float(losses.distortion(torch.tensor([0.1, 0.3, 0.8]))) == pytest.approx(0.4)


def test_cauchy_sparsity():
    # log(1 + 0) + log(1 + 2) + log(1 + 8) = log 27, over 3 points: log 3
    assert float(losses.cauchy_sparsity(torch.tensor([0.0, 1.0, 2.0]))) == pytest.approx(math.log(3.0))


def test_time_smoothness():
    f0 = torch.zeros(2, 3)
    f1 = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 3.0]])
    assert float(losses.time_smoothness(f0, f1)) == pytest.approx(9.0)
    assert float(losses.time_smoothness(f1, f1)) == 0.0
