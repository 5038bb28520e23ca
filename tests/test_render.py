"""The volume renderer against analytic densities; occupancy skipping; early stop; chunks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fourdistill.cameras import orbit_camera
from fourdistill.field.field import Field4D
from fourdistill.field.render import (
    OccupancyConfig,
    OccupancyGrid,
    RenderConfig,
    camera_rays,
    camera_sees_box,
    ray_box,
    render_image,
    render_rays,
)

from test_field import small_config

RED = torch.tensor([1.0, 0.0, 0.0])
BLUE = torch.tensor([0.0, 0.0, 1.0])


class UniformBox(nn.Module):
    """Density `sigma` everywhere in [-1, 1]^3, colour red; background blue."""

    bound = 1.0

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    def density(self, x, t):
        return torch.full((x.shape[0],), self.sigma)

    def forward(self, x, t):
        return self.density(x, t), RED.expand(x.shape[0], 3)

    def background(self, dirs):
        return BLUE.expand(dirs.shape[0], 3)


class MovingBall(nn.Module):
    """A ball of uniform density `sigma` and radius `radius` whose centre moves along x with time;
    its colour varies over the ball, so a skipped sample would show."""

    bound = 1.0

    def __init__(self, sigma: float = 40.0, radius: float = 0.35):
        super().__init__()
        self.sigma, self.radius = sigma, radius

    def centre(self, t):
        return torch.stack([-0.4 + 0.8 * t, torch.zeros_like(t), torch.zeros_like(t)], dim=-1)

    def density(self, x, t):
        inside = (x - self.centre(t)).norm(dim=-1) < self.radius
        return torch.where(inside, torch.full_like(t, self.sigma), torch.zeros_like(t))

    def forward(self, x, t):
        rgb = torch.sigmoid(3.0 * (x - self.centre(t)) / self.radius)
        return self.density(x, t), rgb

    def background(self, dirs):
        return torch.ones(dirs.shape[0], 3)


def camera(width=32, height=32, az=30.0, el=20.0, radius=3.2):
    return orbit_camera(az, el, radius, 40.0, width, height)


def test_uniform_density_composites_exactly():
    """Opacity is 1 - exp(-sigma L) for the chord L through the box, and colour mixes with the background by it."""
    cam = camera()
    o, d = camera_rays(cam)
    near, far = ray_box(o, d, 1.0)
    chord = (far - near.clamp(min=0.05)).clamp(min=0.0)
    for sigma in (0.3, 2.0):
        out = render_rays(UniformBox(sigma), o, d, torch.zeros(len(o)), RenderConfig(n_samples=64, early_stop_eps=0.0))
        opacity = 1.0 - torch.exp(-sigma * chord)
        assert torch.allclose(out["opacity"], opacity, atol=1e-5)
        assert torch.allclose(out["rgb"], opacity[:, None] * RED + (1 - opacity)[:, None] * BLUE, atol=1e-5)
    # some rays miss the box: background, zero opacity, infinite depth
    missed = far <= near
    assert bool(missed.any()) and bool((~missed).any())
    assert torch.all(out["opacity"][missed] == 0) and torch.all(torch.isinf(out["depth"][missed]))
    assert torch.allclose(out["rgb"][missed], BLUE.expand(int(missed.sum()), 3))


def test_uniform_density_depth_is_the_expected_termination_distance():
    """For constant sigma over [a, b] the expected termination distance given a hit is analytic."""
    cam = camera(16, 16)
    o, d = camera_rays(cam)
    near, far = ray_box(o, d, 1.0)
    hit = far > near
    sigma = 1.5
    out = render_rays(UniformBox(sigma), o[hit], d[hit], torch.zeros(int(hit.sum())), RenderConfig(n_samples=2048, early_stop_eps=0.0))
    a, b = near[hit], far[hit]
    L = b - a
    # E[s | s < b] for an exponential start at a: a + 1/sigma - L e^{-sigma L} / (1 - e^{-sigma L})
    expected = a + 1.0 / sigma - L * torch.exp(-sigma * L) / (1.0 - torch.exp(-sigma * L))
    assert torch.allclose(out["depth"], expected, atol=2e-3)


def test_ball_opacity_matches_chord_length():
    ball = MovingBall(sigma=3.0, radius=0.5)
    cam = camera(24, 24)
    o, d = camera_rays(cam)
    t = torch.full((len(o),), 0.5)  # ball at the origin
    out = render_rays(ball, o, d, t, RenderConfig(n_samples=1024, early_stop_eps=0.0))
    closest = (o * d).sum(-1).neg()
    impact2 = (o + closest[:, None] * d).pow(2).sum(-1)
    chord = 2.0 * torch.sqrt((ball.radius**2 - impact2).clamp(min=0.0))
    assert torch.allclose(out["opacity"], 1.0 - torch.exp(-ball.sigma * chord), atol=0.01)


def test_dense_ball_depth_is_its_surface():
    ball = MovingBall(sigma=2000.0, radius=0.5)
    o = torch.tensor([[0.0, -3.0, 0.0], [0.2, -3.0, 0.1]])
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    out = render_rays(ball, o, d, torch.full((2,), 0.5), RenderConfig(n_samples=512))
    surface = torch.tensor([3.0 - 0.5, 3.0 - math.sqrt(0.25 - 0.05)])
    assert torch.allclose(out["depth"], surface, atol=2 * 2.0 / 512)
    assert torch.allclose(out["opacity"], torch.ones(2), atol=1e-4)


def test_early_stop_saves_samples_and_changes_nothing_visible():
    ball = MovingBall(sigma=500.0, radius=0.9)
    cam = camera(24, 24)
    o, d = camera_rays(cam)
    t = torch.full((len(o),), 0.5)
    full = render_rays(ball, o, d, t, RenderConfig(n_samples=256, early_stop_eps=0.0, segment=16))
    early = render_rays(ball, o, d, t, RenderConfig(n_samples=256, early_stop_eps=1e-4, segment=16))
    assert int(early["samples"]) < 0.8 * int(full["samples"])
    assert (early["rgb"] - full["rgb"]).abs().max() < 1e-3
    assert (early["opacity"] - full["opacity"]).abs().max() < 1e-3


def test_occupancy_skipping_changes_no_pixel():
    """After warm-up refreshes, the grid skips most samples and no pixel moves beyond 1e-3."""
    ball = MovingBall(sigma=40.0, radius=0.35)
    config = RenderConfig(n_samples=128, early_stop_eps=0.0)
    grid = OccupancyGrid(OccupancyConfig(resolution=32, time_bins=8), bound=1.0, step_size=2 * math.sqrt(3) / 128)
    g = torch.Generator().manual_seed(0)
    for step in range(0, 64, 16):
        grid.refresh(ball, step, g)
    assert 0.0 < grid.occupied_fraction < 0.1
    for az, time01 in ((30.0, 0.1), (150.0, 0.55), (-100.0, 0.93)):
        cam = camera(32, 32, az=az)
        plain = render_image(ball, cam, time01, config)
        skipped = render_image(ball, cam, time01, config, grid)
        assert skipped["samples"] < 0.25 * plain["samples"]
        assert (skipped["rgb"] - plain["rgb"]).abs().max() < 1e-3
        assert (skipped["opacity"] - plain["opacity"]).abs().max() < 1e-3


def test_occupancy_follows_time():
    ball = MovingBall()
    t0, t1 = torch.tensor([0.05]), torch.tensor([0.95])
    exact = OccupancyGrid(OccupancyConfig(resolution=16, time_bins=4, dilate=False), bound=1.0, step_size=0.03)
    exact.refresh(ball, 0)
    left, right = torch.tensor([[-0.4, 0.0, 0.0]]), torch.tensor([[0.4, 0.0, 0.0]])
    assert exact.query(left, t0).item() and not exact.query(right, t0).item()
    assert exact.query(right, t1).item() and not exact.query(left, t1).item()
    # dilated by one cell and one time bin, the grid still tells the ends of the motion apart
    grown = OccupancyGrid(OccupancyConfig(resolution=16, time_bins=4), bound=1.0, step_size=0.03)
    grown.refresh(ball, 0)
    assert grown.occupied_fraction > exact.occupied_fraction
    assert bool((grown.occupied >= exact.occupied).all())
    left, right = torch.tensor([[-0.7, 0.0, 0.0]]), torch.tensor([[0.7, 0.0, 0.0]])
    assert grown.query(left, t0).item() and not grown.query(right, t0).item()
    assert grown.query(right, t1).item() and not grown.query(left, t1).item()


def test_refresh_runs_on_its_schedule():
    grid = OccupancyGrid(OccupancyConfig(resolution=8, time_bins=2, update_every=4), bound=1.0, step_size=0.03)
    grid.refresh(MovingBall(), 3)
    assert grid.occupied_fraction == 1.0 and bool((grid.opacity_ema < 0).all())  # not refreshed yet
    grid.refresh(MovingBall(), 4)
    assert grid.occupied_fraction < 0.5


def test_chunked_image_equals_one_batch():
    field = Field4D(small_config(blob_scale=10.0))
    cam = camera(20, 12)
    whole = render_image(field, cam, 0.3, RenderConfig(chunk=10_000))
    chunked = render_image(field, cam, 0.3, RenderConfig(chunk=37))
    assert whole["rgb"].shape == (12, 20, 3) and whole["opacity"].shape == (12, 20)
    for key in ("rgb", "opacity"):
        assert torch.allclose(whole[key], chunked[key], atol=1e-6)


def test_gradients_reach_every_part_of_the_field():
    field = Field4D(small_config(blob_scale=10.0, background="mlp"))
    o, d = camera_rays(camera(8, 8))
    out = render_rays(field, o, d, torch.rand(len(o)), RenderConfig(n_samples=32), stratified=True, generator=torch.Generator().manual_seed(0))
    out["rgb"].sum().backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_no_rays_and_cameras_that_miss_the_box():
    empty = render_rays(UniformBox(1.0), torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0), RenderConfig())
    assert empty["rgb"].shape == (0, 3) and empty["opacity"].shape == (0,)
    away = orbit_camera(0.0, 20.0, 3.2, 40.0, 16, 16)
    c2w = away.c2w.copy()
    c2w[:3, 2] *= -1  # look away from the box
    c2w[:3, 0] *= -1
    from fourdistill.cameras import Camera

    backwards = Camera(c2w, away.fx, away.fy, away.cx, away.cy, 16, 16)
    assert camera_sees_box(away) and not camera_sees_box(backwards)
    image = render_image(UniformBox(1.0), backwards, 0.0)
    assert torch.all(image["opacity"] == 0) and torch.allclose(image["rgb"], BLUE.expand(16, 16, 3))


def test_bad_render_settings():
    with pytest.raises(ValueError):
        RenderConfig(n_samples=0)
    with pytest.raises(ValueError):
        OccupancyConfig(resolution=0)
    with pytest.raises(ValueError, match="time01"):
        render_image(UniformBox(1.0), camera(8, 8), 1.5)
