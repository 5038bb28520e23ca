"""The 4D field: shapes, the centre blob, static vs dynamic, freezing, background, configs."""

from __future__ import annotations

import math

import pytest
import torch

from fourdistill.field.field import Field4D, FieldConfig, spherical_harmonics
from fourdistill.field.hash_grid import HashGridConfig


def small_config(**overrides) -> FieldConfig:
    base = dict(
        static_grid=HashGridConfig(n_input_dims=3, n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0),
        dynamic_grid=HashGridConfig(n_input_dims=4, n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0),
        hidden_dim=16,
    )
    base.update(overrides)
    return FieldConfig(**base)


def points(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * 2 - 1, torch.rand(n, generator=g)


def train_tables(field: Field4D, steps: int = 5) -> None:
    """A few optimisation steps that move every part of the field away from its initial state."""
    opt = torch.optim.Adam(field.parameters(), lr=1e-1)
    x, t = points(2048, seed=1)
    for _ in range(steps):
        sigma, rgb = field(x, t)
        loss = ((sigma - 3.0 * (x[:, 0] > 0).float() * t) ** 2).mean() + ((rgb - t[:, None]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_defaults_are_4dfy():
    cfg = FieldConfig()
    for grid, dims in ((cfg.static_grid, 3), (cfg.dynamic_grid, 4)):
        assert (grid.n_input_dims, grid.n_levels, grid.n_features_per_level, grid.log2_hashmap_size) == (dims, 16, 2, 19)
        assert (grid.base_resolution, grid.per_level_scale) == (16, 1.447)
    assert (cfg.hidden_dim, cfg.blob_scale, cfg.blob_radius) == (64, 10.0, 0.5)


def test_shapes_and_ranges():
    field = Field4D(small_config())
    x, t = points(500)
    sigma, rgb = field(x, t)
    assert sigma.shape == (500,) and rgb.shape == (500, 3)
    assert bool((sigma >= 0).all()) and bool((rgb >= 0).all()) and bool((rgb <= 1).all())
    assert torch.allclose(field.density(x, t), sigma)
    assert field.features(x, t).shape == (500, 8)


def test_blob_is_measured_in_world_units():
    field = Field4D(small_config(blob_scale=10.0, blob_radius=0.5))
    x = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    expected = torch.tensor([10.0, 0.0, -10.0, 10.0 * (1 - math.sqrt(3) / 0.5)])
    assert torch.allclose(field.blob(x), expected, atol=1e-5)
    # the density follows it: dense at the centre, nearly empty at the corners
    t = torch.zeros(4)
    sigma = field.density(x, t)
    assert sigma[0] > 9.0 and sigma[3] < 1e-6


def test_density_bias_shifts_raw_density():
    x, t = points(100)
    a = Field4D(small_config(blob_scale=0.0))
    b = Field4D(small_config(blob_scale=0.0, density_bias=-3.0))
    raw_a = torch.log(torch.expm1(a.density(x, t)))
    raw_b = torch.log(torch.expm1(b.density(x, t)))
    assert torch.allclose(raw_a - 3.0, raw_b, atol=1e-4)


def test_time_matters_only_for_dynamic_fields():
    dynamic = Field4D(small_config(blob_scale=0.0))
    static = Field4D(small_config(blob_scale=0.0, dynamic=False))
    assert static.dynamic_grid is None and not static.is_dynamic
    train_tables(dynamic)
    train_tables(static)
    x, _ = points(300)
    t0, t1 = torch.zeros(300), torch.ones(300)
    assert not torch.allclose(dynamic.density(x, t0), dynamic.density(x, t1))
    assert torch.equal(static.density(x, t0), static.density(x, t1))


def test_freeze_dynamic_stops_its_updates_only():
    field = Field4D(small_config(blob_scale=0.0))
    field.freeze_dynamic(True)
    static_before = field.static_grid.table.detach().clone()
    dynamic_before = field.dynamic_grid.table.detach().clone()
    train_tables(field, steps=2)
    assert not torch.equal(field.static_grid.table, static_before)
    assert torch.equal(field.dynamic_grid.table, dynamic_before)
    # frozen, the dynamic grid still contributes its features
    x, _ = points(50)
    assert not torch.allclose(field.features(x, torch.zeros(50)), field.static_grid((x + 1) / 2), atol=0)
    field.freeze_dynamic(False)
    train_tables(field, steps=2)
    assert not torch.equal(field.dynamic_grid.table, dynamic_before)


def test_parameter_groups_cover_every_parameter_once():
    field = Field4D(small_config())
    groups = field.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(field.parameters()))
    assert groups["static_grid"][0] is field.static_grid.table
    assert groups["dynamic_grid"][0] is field.dynamic_grid.table


def test_seeded_and_deterministic():
    x, t = points(200)
    a, b, c = Field4D(small_config(seed=3)), Field4D(small_config(seed=3)), Field4D(small_config(seed=4))
    assert torch.equal(a(x, t)[1], b(x, t)[1])
    assert not torch.equal(a(x, t)[1], c(x, t)[1])


def test_backgrounds():
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    solid = Field4D(small_config(background="solid", background_color=(0.2, 0.4, 0.6)))
    assert torch.allclose(solid.background(dirs), torch.tensor([0.2, 0.4, 0.6]).expand(64, 3))
    assert solid.background_mlp is None
    learned = Field4D(small_config(background="mlp"))
    bg = learned.background(dirs)
    assert bg.shape == (64, 3) and bool((bg > 0).all()) and bool((bg < 1).all())
    assert bg.std(dim=0).sum() > 0  # depends on the direction


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_spherical_harmonics_are_orthonormal(degree):
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(400_000, 3, generator=g, dtype=torch.float64), dim=-1)
    y = spherical_harmonics(dirs, degree)
    assert y.shape == (400_000, degree**2)
    gram = 4 * math.pi * (y.T @ y) / len(dirs)  # Monte Carlo integral over the sphere
    assert torch.allclose(gram, torch.eye(degree**2, dtype=torch.float64), atol=0.02)


def test_config_round_trip_and_validation():
    cfg = small_config(background="solid", background_color=(0.0, 0.5, 1.0), density_bias=-2.0)
    again = FieldConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ValueError, match="widths must match"):
        small_config(dynamic_grid=HashGridConfig(n_input_dims=4, n_levels=3, n_features_per_level=2, log2_hashmap_size=12))
    with pytest.raises(ValueError, match="background"):
        small_config(background="sky")
    with pytest.raises(ValueError, match="background_color"):
        small_config(background_color=(0.0, 2.0, 0.0))
    with pytest.raises(ValueError, match="unknown keys"):
        FieldConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="3 input dims"):
        small_config(static_grid=HashGridConfig(n_input_dims=4, n_levels=4, n_features_per_level=2))


def test_position_input_feeds_the_coordinates_to_both_mlps():
    field = Field4D(small_config(position_input=True, blob_scale=0.0, bound=2.0))
    x, t = points(32)
    x = x * 2.0  # world units in the [-2, 2]^3 box
    h = field.features(x, t)
    assert h.shape == (32, 4 * 2 + 3)
    assert torch.allclose(h[:, -3:], x / 2.0)
    assert field.density_mlp[0].in_features == 11 and field.color_mlp[0].in_features == 11
    sigma, rgb = field(x, t)
    assert sigma.shape == (32,) and rgb.shape == (32, 3)
    # a config written before the option existed reads as off
    d = field.config.to_dict()
    assert FieldConfig.from_dict(d).position_input
    d.pop("position_input")
    assert not FieldConfig.from_dict(d).position_input
