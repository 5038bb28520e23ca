"""Batched, differentiable rendering for score distillation: render_cameras and render_clip against
render_image, gradients (autograd against central differences in float64), frozen grids,
backgrounds, checkpointing and argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from fourdistill.cameras import orbit_camera
from fourdistill.field.field import Field4D
from fourdistill.field.render import (
    OccupancyConfig,
    OccupancyGrid,
    RenderConfig,
    camera_rays,
    random_background,
    render_cameras,
    render_clip,
    render_image,
)

from test_field import small_config, train_tables
from test_render import UniformBox

pytestmark = pytest.mark.usefixtures("one_thread")


def camera(az: float, width: int = 10, height: int = 8, el: float = 20.0):
    return orbit_camera(az, el, 3.2, 40.0, width, height)


def trained_field(**overrides) -> Field4D:
    field = Field4D(small_config(blob_scale=10.0, **overrides))
    train_tables(field, steps=3)
    field.zero_grad(set_to_none=True)
    return field


def refreshed_grid(field, n_samples: int) -> OccupancyGrid:
    grid = OccupancyGrid(OccupancyConfig(resolution=16, time_bins=4), bound=1.0, step_size=2 * math.sqrt(3) / n_samples)
    grid.refresh(field, 0, torch.Generator().manual_seed(0))
    return grid


def assert_same_image(batched: dict, single: dict, atol: float = 1e-6) -> None:
    for key in ("rgb", "opacity"):
        assert torch.allclose(batched[key], single[key], atol=atol), key
    finite = torch.isfinite(single["depth"])
    assert torch.equal(torch.isfinite(batched["depth"]), finite)
    assert torch.allclose(batched["depth"][finite], single["depth"][finite], atol=1e-5)


def test_batch_equals_render_image_per_camera():
    """Chunks that straddle cameras, occupancy skipping and one time per camera change nothing."""
    field = trained_field(background="mlp")
    config = RenderConfig(n_samples=48, chunk=37, segment=9)
    grid = refreshed_grid(field, config.n_samples)
    assert grid.occupied_fraction < 0.9  # the grid does skip
    cams = [camera(az) for az in (0.0, 100.0, 230.0)]
    times = [0.1, 0.5, 0.9]
    for requires_grad in (False, True):
        out = render_cameras(field, grid, cams, times, config, requires_grad=requires_grad)
        assert out["rgb"].shape == (3, 8, 10, 3) and out["opacity"].shape == (3, 8, 10) and out["depth"].shape == (3, 8, 10)
        assert out["rgb"].requires_grad == requires_grad
        singles = [render_image(field, c, t, config, grid) for c, t in zip(cams, times)]
        for b, single in enumerate(singles):
            assert_same_image({k: out[k][b].detach() for k in ("rgb", "opacity", "depth")}, single)
        assert out["samples"] == sum(s["samples"] for s in singles)
        assert float(out["opacity"].detach().max()) > 0.1  # the comparison sees the object, not just background


def test_one_time_is_broadcast_and_clip_matches_cameras():
    field = trained_field()
    config = RenderConfig(n_samples=32)
    cams = [camera(az) for az in (10.0, 70.0)]
    broadcast = render_cameras(field, None, cams, 0.4, config, requires_grad=False)
    assert torch.equal(broadcast["rgb"], render_cameras(field, None, cams, torch.tensor(0.4), config, requires_grad=False)["rgb"])
    listed = render_cameras(field, None, cams, [0.4, 0.4], config, requires_grad=False)
    assert torch.equal(broadcast["rgb"], listed["rgb"])
    cam = camera(45.0)
    times = [0.0, 0.5, 1.0]
    clip = render_clip(field, None, cam, times, config, requires_grad=False)
    assert clip["rgb"].shape == (3, 8, 10, 3)
    for i, t in enumerate(times):
        assert_same_image({k: clip[k][i] for k in ("rgb", "opacity", "depth")}, render_image(field, cam, t, config))
    assert (clip["rgb"][0] - clip["rgb"][2]).abs().max() > 1e-4  # the dynamic grid makes frames differ


def test_gradients_reach_grids_and_mlps():
    field = trained_field(background="mlp")
    config = RenderConfig(n_samples=32)
    grid = refreshed_grid(field, config.n_samples)
    out = render_cameras(field, grid, [camera(az) for az in (0.0, 90.0, 180.0, 270.0)], [0.2, 0.4, 0.6, 0.8], config)
    (out["rgb"].sum() + out["opacity"].sum()).backward()
    for name in ("static_grid.table", "dynamic_grid.table", "density_mlp.0.weight", "color_mlp.2.weight", "background_mlp.0.weight"):
        p = dict(field.named_parameters())[name]
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name

    field.zero_grad(set_to_none=True)
    clip = render_clip(field, grid, camera(30.0), [0.0, 0.3, 0.7, 1.0], config)
    clip["rgb"].sum().backward()
    assert field.dynamic_grid.table.grad is not None and float(field.dynamic_grid.table.grad.abs().sum()) > 0
    assert float(field.static_grid.table.grad.abs().sum()) > 0


def test_frozen_dynamic_grid_gets_no_gradient():
    config = RenderConfig(n_samples=32)
    for freeze in ("requires_grad", "freeze_dynamic"):
        field = trained_field()
        if freeze == "requires_grad":
            field.dynamic_grid.table.requires_grad_(False)
        else:
            field.freeze_dynamic(True)
        clip = render_clip(field, None, camera(30.0), [0.1, 0.9], config)
        clip["rgb"].sum().backward()
        assert field.dynamic_grid.table.grad is None, freeze
        assert float(field.static_grid.table.grad.abs().sum()) > 0, freeze
        assert float(field.density_mlp[0].weight.grad.abs().sum()) > 0, freeze


def test_gradient_matches_central_differences_in_float64():
    """d loss / d theta from autograd against (L(theta + h) - L(theta - h)) / 2h for one entry of
    each grid table and of an MLP weight, on a tiny float64 field (the reference hash grid)."""
    field = Field4D(small_config(blob_scale=10.0, background="solid"), backend="torch")
    train_tables(field, steps=3)
    field = field.double()
    field.zero_grad(set_to_none=True)
    config = RenderConfig(n_samples=24, early_stop_eps=0.0)
    grid = refreshed_grid(field, config.n_samples)
    cams, times = [camera(20.0, 6, 5), camera(140.0, 6, 5)], [0.25, 0.75]
    g = torch.Generator().manual_seed(1)
    w_rgb = torch.rand(2, 5, 6, 3, generator=g, dtype=torch.float64)
    w_opacity = torch.rand(2, 5, 6, generator=g, dtype=torch.float64)

    def loss() -> torch.Tensor:
        out = render_cameras(field, grid, cams, times, config, chunk=23)
        assert out["rgb"].dtype == torch.float64
        return (out["rgb"] * w_rgb).sum() + (out["opacity"] * w_opacity).sum()

    loss().backward()
    params = dict(field.named_parameters())
    for name in ("static_grid.table", "dynamic_grid.table", "density_mlp.0.weight"):
        p = params[name]
        entry = int(p.grad.abs().reshape(-1).argmax())  # an entry the image depends on
        analytic = float(p.grad.reshape(-1)[entry])
        assert abs(analytic) > 1e-3, name
        h = 1e-5
        with torch.no_grad():
            flat = p.view(-1)
            flat[entry] += h
            plus = float(loss())
            flat[entry] -= 2 * h
            minus = float(loss())
            flat[entry] += h
        numeric = (plus - minus) / (2 * h)
        assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(analytic)), (name, analytic, numeric)


def test_checkpointing_changes_neither_values_nor_gradients():
    """Stratified samples come from per-chunk seeds, so the recomputed chunk is the same chunk."""
    config = RenderConfig(n_samples=32)
    cams, times = [camera(0.0), camera(120.0)], [0.3, 0.6]
    results = []
    for checkpoint in (True, False):
        field = trained_field()
        out = render_cameras(field, None, cams, times, config, chunk=50, checkpoint=checkpoint, stratified=True,
                             generator=torch.Generator().manual_seed(5))
        out["rgb"].sum().backward()
        results.append((out["rgb"].detach(), {n: p.grad.clone() for n, p in field.named_parameters()}))
    (rgb_a, grads_a), (rgb_b, grads_b) = results
    assert torch.equal(rgb_a, rgb_b)
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-7, rtol=1e-5), name
    plain = render_cameras(trained_field(), None, cams, times, config, requires_grad=False)
    assert (plain["rgb"] - rgb_a).abs().max() > 1e-6  # jittered samples differ from bin centres


def test_backgrounds_solid_per_image_and_callable():
    empty = UniformBox(0.0)  # nothing in the box: every pixel is background
    cams = [camera(0.0), camera(90.0)]
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]], requires_grad=True)
    out = render_cameras(empty, None, cams, 0.5, RenderConfig(n_samples=8, chunk=30), background=colours)
    assert torch.allclose(out["rgb"], colours[:, None, None, :].expand(2, 8, 10, 3).detach())
    out["rgb"].sum().backward()
    assert torch.allclose(colours.grad, torch.full((2, 3), 80.0))  # 8 x 10 pixels per image

    one = render_cameras(empty, None, cams, 0.5, RenderConfig(n_samples=8), background=(0.2, 0.3, 0.4), requires_grad=False)
    assert torch.allclose(one["rgb"], torch.tensor([0.2, 0.3, 0.4]).expand(2, 8, 10, 3))

    sky = render_cameras(empty, None, cams, 0.5, RenderConfig(n_samples=8, chunk=30), background=lambda d: (d + 1.0) / 2.0,
                         requires_grad=False)
    dirs = torch.cat([camera_rays(c)[1] for c in cams]).reshape(2, 8, 10, 3)
    assert torch.allclose(sky["rgb"], (dirs + 1.0) / 2.0)

    field_own = render_cameras(empty, None, cams, 0.5, RenderConfig(n_samples=8), requires_grad=False)
    assert torch.allclose(field_own["rgb"], torch.tensor([0.0, 0.0, 1.0]).expand(2, 8, 10, 3))  # UniformBox's blue


def test_random_background():
    assert random_background(4, p=0.0) is None
    colours = random_background(4, p=1.0, generator=torch.Generator().manual_seed(0))
    assert colours.shape == (4, 3) and bool(((colours >= 0) & (colours <= 1)).all())
    draws = [random_background(4, generator=torch.Generator().manual_seed(s)) for s in range(64)]
    assert 16 < sum(d is not None for d in draws) < 48  # p = 0.5
    with pytest.raises(ValueError, match="p must"):
        random_background(4, p=1.5)


def test_argument_errors_name_the_argument():
    field = UniformBox(1.0)
    cams = [camera(0.0), camera(90.0), camera(180.0)]
    with pytest.raises(ValueError, match="times: got 2 times for 3 cameras"):
        render_cameras(field, None, cams, [0.1, 0.2])
    with pytest.raises(ValueError, match="times must lie in"):
        render_cameras(field, None, cams, 1.5)
    with pytest.raises(ValueError, match="cameras: expected a sequence of cameras"):
        render_cameras(field, None, cams[0], 0.5)
    with pytest.raises(ValueError, match="cameras: need at least one"):
        render_cameras(field, None, [], 0.5)
    with pytest.raises(ValueError, match="cameras: all cameras must have one image size"):
        render_cameras(field, None, [camera(0.0), camera(0.0, width=12)], 0.5)
    with pytest.raises(ValueError, match="background"):
        render_cameras(field, None, cams, 0.5, background=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="times: render_clip needs one time per frame"):
        render_clip(field, None, cams[0], 0.5)
    with pytest.raises(ValueError, match="times: render_clip needs at least one frame"):
        render_clip(field, None, cams[0], [])
