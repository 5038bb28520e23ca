import math

import numpy as np
import pytest
import torch

from fourdistill.evaluate.metrics import (
    as_image_tensor,
    gaussian_window,
    masked_psnr,
    masked_ssim,
    psnr,
    spearman,
    ssim,
)


def _images(b=2, c=3, h=24, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g), torch.rand(b, c, h, w, generator=g)


def _ssim_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two single-channel 11 x 11 images: one window, Gaussian-weighted statistics."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx = (w * (x - mx) ** 2).sum()
    vy = (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


# ----------------------------------------------------------------------------- PSNR
def test_psnr_of_identical_images_is_inf():
    x, _ = _images()
    assert torch.all(torch.isinf(psnr(x, x.clone())))
    assert psnr(x[0], x[0]).ndim == 0 and math.isinf(float(psnr(x[0], x[0])))


def test_psnr_of_a_known_mse():
    x = torch.full((3, 8, 8), 0.5)
    y = x + 0.1  # MSE = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert float(psnr(x, y)) == pytest.approx(20.0, abs=1e-4)
    z = x.clone()
    z[0, 0, 0] = 1.5  # one error of 1.0 over 192 values: MSE = 1 / 192
    assert float(psnr(x, z)) == pytest.approx(10 * math.log10(192), abs=1e-4)
    assert float(psnr(x * 255, y * 255, data_range=255.0)) == pytest.approx(20.0, abs=1e-3)


def test_psnr_batches_one_value_per_image():
    x = torch.zeros(3, 3, 4, 4)
    y = x.clone()
    y[1] += 0.1
    y[2] += 0.01
    out = psnr(x, y)
    assert out.shape == (3,)
    assert math.isinf(out[0]) and out[1] == pytest.approx(20.0, abs=1e-4) and out[2] == pytest.approx(40.0, abs=1e-3)


def test_masked_psnr_ignores_pixels_outside_the_mask():
    x = torch.zeros(3, 8, 8)
    y = torch.zeros(3, 8, 8)
    mask = torch.zeros(8, 8)
    mask[:4] = 1
    y[:, :4] = 0.1  # inside: MSE 0.01
    y[:, 4:] = torch.rand(3, 4, 8)  # outside: anything
    assert float(masked_psnr(x, y, mask)) == pytest.approx(20.0, abs=1e-4)
    assert float(psnr(x, y)) < 20.0
    z = x.clone()
    z[:, 4:] = 0.7  # differs from x only outside the mask
    assert math.isinf(float(masked_psnr(x, z, mask)))
    assert math.isnan(float(masked_psnr(x, y, torch.zeros(8, 8))))


def test_masked_psnr_with_a_full_mask_equals_psnr():
    x, y = _images()
    np.testing.assert_allclose(masked_psnr(x, y, torch.ones(2, 24, 20)), psnr(x, y), rtol=1e-6)


def test_bad_shapes_are_refused():
    x, y = _images()
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:, :, :-1])
    with pytest.raises(ValueError, match="mask"):
        masked_psnr(x, y, torch.ones(24, 20))  # batched images need a batched mask
    with pytest.raises(ValueError, match="mask values"):
        masked_psnr(x, y, torch.full((2, 24, 20), 2.0))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(3, 10, 30), torch.zeros(3, 10, 30))


# ----------------------------------------------------------------------------- SSIM
def test_gaussian_window_is_the_standard_one():
    g = gaussian_window()
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    assert float(g[5] / g[4]) == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_ssim_of_identical_images_is_one():
    x, _ = _images()
    np.testing.assert_allclose(ssim(x, x.clone()).numpy(), 1.0, atol=1e-6)


def test_ssim_of_constant_images_matches_the_luminance_term():
    a, b = 0.2, 0.7  # no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    c1 = 0.01**2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((3, 16, 16), a), torch.full((3, 16, 16), b))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_ssim_matches_a_hand_computed_window():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (11, 11))
    y = np.clip(x + rng.normal(0, 0.2, (11, 11)), 0, 1)
    want = _ssim_by_hand(x, y)
    got = ssim(torch.tensor(x)[None], torch.tensor(y)[None])
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert 0.1 < want < 0.95  # a case where every term matters


def test_ssim_averages_channels_and_window_positions():
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (2, 12, 11))
    y = rng.uniform(0, 1, (2, 12, 11))
    windows = [_ssim_by_hand(x[c, i : i + 11], y[c, i : i + 11]) for c in range(2) for i in range(2)]
    got = ssim(torch.tensor(x), torch.tensor(y))
    assert float(got) == pytest.approx(np.mean(windows), rel=1e-9)


def test_ssim_falls_with_noise():
    x, _ = _images(b=1, h=32, w=32)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    values = [float(ssim(x, (x + s * noise).clamp(0, 1))) for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]


def test_masked_ssim_with_a_full_mask_equals_ssim():
    x, y = _images(h=20)
    np.testing.assert_allclose(masked_ssim(x, y, torch.ones(2, 20, 20)), ssim(x, y), rtol=1e-6)


def test_masked_ssim_ignores_pixels_outside_the_mask():
    x, y = _images(b=1, h=32, w=32)
    mask = torch.zeros(1, 32, 32)
    mask[:, 4:20, 6:26] = 1
    base = masked_ssim(x, y, mask)
    y2 = y.clone()
    x2 = x.clone()
    y2[..., mask[0] == 0] = torch.rand(int((mask == 0).sum()) * 3).view(1, 3, -1)
    x2[..., mask[0] == 0] = 0.0
    torch.testing.assert_close(masked_ssim(x2, y2, mask), base)
    assert not torch.allclose(ssim(x2, y2), ssim(x, y))
    # identical inside the mask -> 1 whatever lies outside
    x3 = y.clone()
    x3[..., mask[0] == 0] = 1.0
    assert float(masked_ssim(x3, y, mask)) == pytest.approx(1.0, abs=1e-6)


def test_masked_ssim_matches_a_hand_computed_masked_window():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (11, 11))
    y = np.clip(x + rng.normal(0, 0.2, (11, 11)), 0, 1)
    mask = (rng.uniform(0, 1, (11, 11)) > 0.3).astype(np.float64)
    mask[5, 5] = 1.0  # the one window centre is inside
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) * mask
    w /= w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = 0.01**2, 0.03**2
    want = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    got = masked_ssim(torch.tensor(x)[None], torch.tensor(y)[None], torch.tensor(mask))
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert float(got) != pytest.approx(_ssim_by_hand(x, y), rel=1e-3)
    mask[5, 5] = 0.0  # no window centre inside the mask: undefined
    assert math.isnan(float(masked_ssim(torch.tensor(x)[None], torch.tensor(y)[None], torch.tensor(mask))))


# ----------------------------------------------------------------------------- Spearman
def test_spearman_on_known_rankings():
    assert spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); ranks of y are 2,1,4,3,5: sum d^2 = 4
    assert spearman([1, 2, 3, 4, 5], [0.2, 0.1, 0.4, 0.3, 0.9]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    # monotone transforms do not change it
    x = np.array([0.3, 2.0, -1.0, 7.0, 4.0])
    y = np.array([1.0, 0.5, 3.0, 2.0, 9.0])
    assert spearman(np.exp(x), y**3) == pytest.approx(spearman(x, y))


def test_spearman_with_ties_uses_average_ranks():
    # y ranks with ties: [1.5, 1.5, 3, 4]; Pearson of ranks against 1..4
    ry = np.array([1.5, 1.5, 3.0, 4.0])
    rx = np.arange(1.0, 5.0)
    want = np.corrcoef(rx, ry)[0, 1]
    assert spearman([1, 2, 3, 4], [7, 7, 8, 9]) == pytest.approx(want)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2, 3], [1, 2])


# ----------------------------------------------------------------------------- conversion
def test_numpy_images_are_channel_last():
    hwc = np.random.default_rng(0).uniform(0, 1, (5, 7, 3)).astype(np.float32)
    t = as_image_tensor(hwc)
    assert t.shape == (1, 3, 5, 7)
    np.testing.assert_array_equal(t[0, :, 2, 4].numpy(), hwc[2, 4])
    u8 = as_image_tensor((hwc * 255).astype(np.uint8)[None])
    assert u8.shape == (1, 3, 5, 7) and float(u8.max()) <= 1.0
    chw = torch.rand(3, 5, 7)
    assert torch.equal(as_image_tensor(chw)[0], chw)


def test_psnr_from_mse_for_floats_arrays_and_tensors():
    from fourdistill.evaluate.metrics import mse_numpy, psnr_from_mse, psnr_numpy

    assert psnr_from_mse(0.01) == pytest.approx(20.0) and isinstance(psnr_from_mse(0.01), float)
    assert psnr_from_mse(0.04, data_range=2.0) == pytest.approx(20.0)  # images in [-1, 1]
    assert psnr_from_mse(0.0, min_mse=1e-12) == pytest.approx(120.0) and math.isinf(psnr_from_mse(0.0))
    np.testing.assert_allclose(psnr_from_mse(np.array([0.1, 0.001])), [10.0, 30.0])
    t = psnr_from_mse(torch.tensor([0.1, 0.0]))
    assert isinstance(t, torch.Tensor) and float(t[0]) == pytest.approx(10.0) and math.isinf(float(t[1]))
    assert float(psnr_from_mse(torch.tensor([0.0]), min_mse=1e-12)[0]) == pytest.approx(120.0)
    # numpy images (N, H, W, C): the same number as the torch metric on the same pixels
    x, y = _images()
    a, b = x.permute(0, 2, 3, 1).double().numpy(), y.permute(0, 2, 3, 1).double().numpy()
    np.testing.assert_allclose(psnr_numpy(a, b), psnr(x.double(), y.double()).numpy(), rtol=1e-12)
    np.testing.assert_allclose(mse_numpy(a, b), ((x.double() - y.double()) ** 2).mean(dim=(1, 2, 3)).numpy(), rtol=1e-12)
    assert psnr_numpy(a, a).tolist() == pytest.approx([120.0, 120.0])  # identical images: floored, not inf
