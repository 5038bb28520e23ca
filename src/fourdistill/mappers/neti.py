"""NeTI-style mappers: (diffusion timestep t, cross-attention layer l, condition c) -> token.

The Time Mapper's condition is the signed time displacement d = t_tgt - t_ref in [-1, 1]
(docs/method.md, 1.1); the View Mapper's is the relative camera, as spherical deltas
(Δazimuth, Δelevation, Δradius) for orbits or as the flattened 3x4 relative transform.

Each mapper outputs two vectors of the text encoder's width: v_base, which replaces the
placeholder token's input embedding, and v_bypass, which is added at the placeholder's
output position (NeTI's textual bypass; see `fourdistill.conditioning`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# Published sigmas of the random Fourier features (Alaluf et al. 2023). NeTI applies sigma_t and
# sigma_l to raw units: t in [0, 1000), l in [0, L). Conditions are already in [-1, 1].
NETI_SIGMA_T = 0.03  # NeTI
NETI_SIGMA_L = 2.0  # NeTI
SIGMA_TIME_DELTA = 1.0  # 4Distillation reference: sigma_d = 1.0
SIGMA_VIEW = 0.5  # ViewNeTI camera encoding

VIEW_CONDITIONS = {"spherical": 3, "matrix": 12}


@dataclass
class MapperConfig:
    """Everything needed to rebuild a mapper; saved next to its weights.

    kind: "time" or "view". word_dim: the text encoder's width (768 for SD 1.x, 1024 for SD
    2.x). n_layers: the U-Net's cross-attention layer count (derived from the U-Net, never
    assumed). view_condition: "spherical" (Δaz, Δel, Δr) or "matrix" (flattened 3x4 relative
    transform, as ViewNeTI).
    """

    kind: str = "time"
    word_dim: int = 768
    n_layers: int = 16
    n_timesteps: int = 1000
    view_condition: str = "spherical"
    n_fourier_features: int = 64  # reference: 64
    sigma_t: float = NETI_SIGMA_T
    sigma_l: float = NETI_SIGMA_L
    sigma_condition: float | None = None  # None: SIGMA_TIME_DELTA for time, SIGMA_VIEW for view
    hidden_dim: int = 64  # reference: 64 (NeTI: 128)
    nested_dropout_p: float = 0.5  # NeTI
    base_norm: float | None = None  # NeTI: the norm of a super-category word's embedding; None: unnormalised
    encoding_seed: int = 0
    # scales that bring view deltas to [-1, 1]
    azimuth_scale_deg: float = 180.0
    elevation_scale_deg: float = 90.0
    radius_scale: float = 1.0
    translation_scale: float = 4.0

    def __post_init__(self):
        if self.kind not in ("time", "view"):
            raise ValueError(f"MapperConfig.kind must be 'time' or 'view', got {self.kind!r}")
        if self.view_condition not in VIEW_CONDITIONS:
            raise ValueError(f"MapperConfig.view_condition must be one of {tuple(VIEW_CONDITIONS)}, got {self.view_condition!r}")
        if self.n_layers < 1 or self.word_dim < 1 or self.hidden_dim < 1:
            raise ValueError("MapperConfig: n_layers, word_dim and hidden_dim must be positive")
        if self.n_fourier_features % 2:
            raise ValueError("MapperConfig.n_fourier_features must be even (sin and cos halves)")

    @property
    def condition_dim(self) -> int:
        return 1 if self.kind == "time" else VIEW_CONDITIONS[self.view_condition]

    @property
    def sigma_c(self) -> float:
        if self.sigma_condition is not None:
            return self.sigma_condition
        return SIGMA_TIME_DELTA if self.kind == "time" else SIGMA_VIEW

    def to_dict(self) -> dict:
        return asdict(self)


class FourierEncoding(nn.Module):
    """Frozen, seeded random Fourier features `[sin(x W), cos(x W)]`.

    W: (D, F/2) drawn N(0, 1) from `seed`, row i scaled by sigmas[i]. x: (N, D) -> (N, F).
    """

    def __init__(self, sigmas: list[float], n_features: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        w = torch.randn(len(sigmas), n_features // 2, generator=gen) * torch.tensor(sigmas)[:, None]
        self.register_buffer("weight", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x.to(self.weight.dtype) @ self.weight
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class NetiMapper(nn.Module):
    """Fourier features of (t, l, c) -> two Linear-LayerNorm-LeakyReLU blocks -> (v_base, v_bypass).

    Nested dropout (NeTI): in training, with probability p, every hidden unit after a random
    index is zeroed, so early units carry the coarse meaning; at inference `truncation` keeps
    only the first units, trading fidelity for editability.
    """

    def __init__(self, config: MapperConfig):
        super().__init__()
        self.config = config
        sigmas = [config.sigma_t, config.sigma_l] + [config.sigma_c] * config.condition_dim
        self.encoding = FourierEncoding(sigmas, config.n_fourier_features, config.encoding_seed)
        h = config.hidden_dim
        self.blocks = nn.Sequential(
            nn.Linear(config.n_fourier_features, h),
            nn.LayerNorm(h),
            nn.LeakyReLU(),
            nn.Linear(h, h),
            nn.LayerNorm(h),
            nn.LeakyReLU(),
        )
        self.output = nn.Linear(h, 2 * config.word_dim)

    def encode_inputs(self, timesteps: torch.Tensor, layers: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Raw inputs to the encoding's input columns: (N,), (N,), (N, k) -> (N, 2 + k).

        Timesteps and layer indices stay in raw units, as NeTI's sigmas assume.
        """
        n = timesteps.shape[0]
        condition = condition.reshape(n, -1).to(torch.float32)
        if condition.shape[1] != self.config.condition_dim:
            raise ValueError(f"{self.config.kind} mapper expects a condition of width {self.config.condition_dim}, got {condition.shape[1]}")
        return torch.cat([timesteps.reshape(n, 1).float(), layers.reshape(n, 1).float(), condition], dim=1)

    def forward(
        self,
        timesteps: torch.Tensor,
        layers: torch.Tensor,
        condition: torch.Tensor,
        truncation: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """timesteps (N,) in [0, n_timesteps), layers (N,) in [0, n_layers), condition (N, k) in [-1, 1].

        Returns v_base (N, word_dim) and v_bypass (N, word_dim).
        """
        x = self.encoding(self.encode_inputs(timesteps, layers, condition))
        hidden = self.blocks(x.to(self.output.weight.dtype))
        if self.training and self.config.nested_dropout_p > 0:
            hidden = self._nested_dropout(hidden)
        elif truncation is not None:
            keep = torch.arange(hidden.shape[1], device=hidden.device) < int(truncation)
            hidden = hidden * keep
        out = self.output(hidden)
        v_base, v_bypass = out.chunk(2, dim=-1)
        if self.config.base_norm is not None:
            v_base = v_base / v_base.norm(dim=-1, keepdim=True).clamp_min(1e-8) * self.config.base_norm
        return v_base, v_bypass

    def _nested_dropout(self, hidden: torch.Tensor) -> torch.Tensor:
        n, h = hidden.shape
        apply = torch.rand(n, device=hidden.device) < self.config.nested_dropout_p
        cut = torch.randint(1, h + 1, (n,), device=hidden.device)
        cut = torch.where(apply, cut, torch.full_like(cut, h))
        keep = torch.arange(h, device=hidden.device)[None, :] < cut[:, None]
        return hidden * keep


class TimeMapper(NetiMapper):
    """The Time Mapper: condition d = t_tgt - t_ref in [-1, 1]."""

    def __init__(self, config: MapperConfig | None = None, **overrides):
        config = config or MapperConfig(kind="time", **overrides)
        if config.kind != "time":
            raise ValueError("TimeMapper needs MapperConfig(kind='time')")
        super().__init__(config)

    def condition(self, time_delta: torch.Tensor) -> torch.Tensor:
        """(B,) displacements -> (B, 1), checked to lie in [-1, 1]."""
        d = time_delta.reshape(-1, 1).float()
        if torch.any(d.abs() > 1.0 + 1e-6):
            raise ValueError(f"time displacement must lie in [-1, 1], got {d.min().item():.3f}..{d.max().item():.3f}")
        return d


class ViewMapper(NetiMapper):
    """The View Mapper: condition the relative camera, spherical deltas or the 3x4 transform."""

    def __init__(self, config: MapperConfig | None = None, **overrides):
        config = config or MapperConfig(kind="view", **overrides)
        if config.kind != "view":
            raise ValueError("ViewMapper needs MapperConfig(kind='view')")
        super().__init__(config)

    def condition(self, spherical_delta: torch.Tensor | None = None, relative_pose: torch.Tensor | None = None) -> torch.Tensor:
        """Scale a view change to [-1, 1].

        spherical_delta: (B, 3) (Δazimuth_deg, Δelevation_deg, Δradius); relative_pose: (B, 4, 4).
        """
        c = self.config
        if c.view_condition == "spherical":
            if spherical_delta is None:
                raise ValueError("this View Mapper is conditioned on spherical deltas: pass spherical_delta")
            s = spherical_delta.reshape(-1, 3).float()
            scale = torch.tensor([c.azimuth_scale_deg, c.elevation_scale_deg, c.radius_scale], device=s.device)
            return (s / scale).clamp(-1.0, 1.0)
        if relative_pose is None:
            raise ValueError("this View Mapper is conditioned on the relative transform: pass relative_pose")
        m = relative_pose.reshape(-1, 4, 4)[:, :3, :].float().clone()
        m[:, :, 3] = m[:, :, 3] / c.translation_scale  # ViewNeTI: flattened 3x4 scaled to [-1, 1]
        return m.reshape(-1, 12).clamp(-1.0, 1.0)


def build_mapper(config: MapperConfig) -> NetiMapper:
    return TimeMapper(config) if config.kind == "time" else ViewMapper(config)

