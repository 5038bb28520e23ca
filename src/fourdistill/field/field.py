"""The 4D field of 4D-fy (Bahmani et al. 2024): static 3D + dynamic 4D hash grids, two small MLPs.

A point x in the scene box [-bound, bound]^3 (world units; bound = 1 is the [-1, 1]^3 box of
the world and of D-NeRF scenes) at time t in [0, 1] is encoded by a static 3D hash grid on
x and a dynamic 4D hash grid on (x, t), both on coordinates normalised to [0, 1]; the two
encodings have the same width (n_levels * n_features_per_level = 32) and are summed. A density
MLP 32 -> 64 -> 1 and a colour MLP 32 -> 64 -> 3 (sigmoid) read the sum (and, with
position_input, the point's coordinates beside it). The density carries
the centre bias of Magic3D / 4D-fy:

    sigma = softplus(raw + blob),  blob = blob_scale * (1 - ||x|| / blob_radius)

with ||x|| measured in world units of the scene box (not in the normalised [0, 1] cube), so the
default blob is positive inside a ball of radius 0.5 about the origin and falls to -10 at the
box faces (the activation can also be Instant-NGP's truncated exponential, see FieldConfig).
A background model gives the colour of rays that leave the box: a small MLP on a
spherical-harmonics encoding of the ray direction, or a fixed solid colour (what fitting RGBA
images composited on a known colour needs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .hash_grid import HashGridConfig, HashGridEncoding

BACKGROUNDS = ("mlp", "solid")
DENSITY_ACTIVATIONS = ("softplus", "exp")


class TruncExp(torch.autograd.Function):
    """exp with its gradient clamped at exp(15) (Instant-NGP's density activation)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


@dataclass
class FieldConfig:
    """Everything that defines a `Field4D`; the defaults are 4D-fy's (Bahmani et al. 2024).

    static_grid / dynamic_grid: the hash grids on (x, y, z) and (x, y, z, t); their output
    widths must match because the encodings are summed. dynamic: False builds a static field
    (no dynamic grid, time is ignored). bound: half-size of the scene box in world units.
    blob_scale / blob_radius: the centre bias above (4D-fy / Magic3D: 10 and 0.5; 0 turns it off).
    density_bias: a constant added to the raw density with the blob (our choice; 0 as in 4D-fy,
    whose blob already starts the box empty away from the centre). A negative value starts a
    field without the blob nearly empty, so its occupancy grid can skip space from the start.
    density_activation: "softplus" (4D-fy) or "exp" (Instant-NGP's truncated exponential, whose
    density grows multiplicatively, so surfaces turn opaque in far fewer steps when fitting images).
    background: "mlp" (spherical harmonics of the ray direction -> MLP -> sigmoid, 4D-fy) or
    "solid" (background_color, RGB in [0, 1]). background_sh_degree: number of SH bands
    (3 -> 9 coefficients, as threestudio's environment-map background).
    time_scale: the dynamic grid sees t * time_scale, so its time axis has time_scale times the
    spatial resolution of each level (1 as in 4D-fy). Below 1 it trades temporal detail for
    smoothness: with one view per time (a monocular capture) a full-resolution time axis can
    give every frame cells of its own and explain each view with its own fog.
    position_input: also feed the point's coordinates (x / bound, in [-1, 1]) to both MLPs, beside
    the grid features (off in 4D-fy). A plane such as the world's ground is then a linear function
    the MLP can form directly, instead of something pieced together from interpolated cells.
    seed: initialises the grids and the MLPs.
    """

    static_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(n_input_dims=3))
    dynamic_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(n_input_dims=4))
    dynamic: bool = True
    hidden_dim: int = 64  # 4D-fy: density MLP 32 -> 64 -> 1, colour MLP 32 -> 64 -> 3
    bound: float = 1.0
    blob_scale: float = 10.0  # 4D-fy (threestudio, Magic3D blob): density_blob_scale = 10
    blob_radius: float = 0.5  # 4D-fy: density_blob_std = 0.5
    density_bias: float = 0.0
    density_activation: str = "softplus"  # 4D-fy: softplus
    background: str = "mlp"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background_sh_degree: int = 3  # threestudio's neural environment map: SH degree 3
    background_hidden_dim: int = 16  # threestudio's neural environment map: 16 neurons
    time_scale: float = 1.0
    position_input: bool = False
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.time_scale <= 1.0:
            raise ValueError(f"FieldConfig.time_scale must lie in (0, 1], got {self.time_scale}")
        if self.static_grid.n_input_dims != 3:
            raise ValueError(f"FieldConfig.static_grid must take 3 input dims, got {self.static_grid.n_input_dims}")
        if self.dynamic_grid.n_input_dims != 4:
            raise ValueError(f"FieldConfig.dynamic_grid must take 4 input dims, got {self.dynamic_grid.n_input_dims}")
        static_width = self.static_grid.n_levels * self.static_grid.n_features_per_level
        dynamic_width = self.dynamic_grid.n_levels * self.dynamic_grid.n_features_per_level
        if self.dynamic and static_width != dynamic_width:
            raise ValueError(
                f"FieldConfig: the static and dynamic encodings are summed, so their widths must match "
                f"(n_levels * n_features_per_level: {static_width} vs {dynamic_width})"
            )
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"FieldConfig.density_activation must be one of {DENSITY_ACTIVATIONS}, got {self.density_activation!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"FieldConfig.background must be one of {BACKGROUNDS}, got {self.background!r}")
        color = tuple(float(c) for c in self.background_color)
        if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"FieldConfig.background_color must be 3 values in [0, 1], got {self.background_color}")
        self.background_color = color
        if not 1 <= self.background_sh_degree <= 4:
            raise ValueError(f"FieldConfig.background_sh_degree must be 1..4, got {self.background_sh_degree}")
        if self.bound <= 0 or self.blob_radius <= 0:
            raise ValueError("FieldConfig.bound and blob_radius must be positive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FieldConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"FieldConfig: unknown keys {unknown}")
        d = dict(d)
        for key in ("static_grid", "dynamic_grid"):
            if key in d and isinstance(d[key], dict):
                d[key] = HashGridConfig(**d[key])
        if "background_color" in d:
            d["background_color"] = tuple(d["background_color"])
        return cls(**d)


def spherical_harmonics(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics of unit directions, bands 0 .. degree - 1.

    dirs: (N, 3) unit vectors -> (N, degree**2). Standard real SH normalisation constants.
    """
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (3.0 * zz - 1.0),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree > 3:
        out += [
            -0.5900435899266435 * y * (3.0 * xx - yy),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (5.0 * zz - 1.0),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            -0.4570457994644658 * x * (5.0 * zz - 1.0),
            1.445305721320277 * z * (xx - yy),
            -0.5900435899266435 * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


class Field4D(nn.Module):
    """sigma(x, t) and rgb(x, t) inside the scene box, plus a background colour per direction.

    Shapes: points x (N, 3) in world units, times t (N,) in [0, 1]; `density` -> (N,),
    `forward` -> (density (N,), rgb (N, 3)); `background(dirs (N, 3))` -> (N, 3).
    """

    def __init__(self, config: FieldConfig | None = None, backend: str = "auto"):
        super().__init__()
        self.config = config = config or FieldConfig()
        self.bound = float(config.bound)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.static_grid = HashGridEncoding(config.static_grid, backend=backend, seed=config.seed)
            self.dynamic_grid = (
                HashGridEncoding(config.dynamic_grid, backend=backend, seed=config.seed + 1) if config.dynamic else None
            )
            width = self.static_grid.n_output_dims
            if self.dynamic_grid is not None and self.dynamic_grid.n_output_dims != width:
                raise ValueError(f"static grid gives {width} features but the dynamic grid {self.dynamic_grid.n_output_dims}")
            hidden = config.hidden_dim
            mlp_in = width + (3 if config.position_input else 0)
            self.density_mlp = nn.Sequential(nn.Linear(mlp_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.color_mlp = nn.Sequential(nn.Linear(mlp_in, hidden), nn.ReLU(), nn.Linear(hidden, 3))
            if config.background == "mlp":
                bh = config.background_hidden_dim
                self.background_mlp = nn.Sequential(
                    nn.Linear(config.background_sh_degree**2, bh), nn.ReLU(), nn.Linear(bh, bh), nn.ReLU(), nn.Linear(bh, 3)
                )
            else:
                self.background_mlp = None
        self.register_buffer("background_color", torch.tensor(config.background_color, dtype=torch.float32))
        self.dynamic_frozen = False

    @property
    def is_dynamic(self) -> bool:
        return self.dynamic_grid is not None

    def freeze_dynamic(self, frozen: bool = True) -> None:
        """Stop (or restart) training the dynamic grid. Frozen, it still adds its features but is
        evaluated without autograd, so the static stages of 4D-fy (Bahmani et al. 2024) cost less."""
        self.dynamic_frozen = bool(frozen)
        if self.dynamic_grid is not None:
            for p in self.dynamic_grid.parameters():
                p.requires_grad_(not frozen)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group learning rates: static_grid, dynamic_grid, mlp."""
        mlps = list(self.density_mlp.parameters()) + list(self.color_mlp.parameters())
        if self.background_mlp is not None:
            mlps += list(self.background_mlp.parameters())
        return {
            "static_grid": list(self.static_grid.parameters()),
            "dynamic_grid": list(self.dynamic_grid.parameters()) if self.dynamic_grid is not None else [],
            "mlp": mlps,
        }

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the MLPs read: the summed grid features, x (N, 3) world units, t (N,) -> (N, 32),
        followed by x / bound (N, 3) with position_input."""
        u = ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)  # 4D-fy: [-1, 1]^3 -> [0, 1]^3
        h = self.static_grid(u)
        if self.dynamic_grid is not None:
            ut = torch.cat([u, t.reshape(-1, 1).to(u.dtype).clamp(0.0, 1.0) * self.config.time_scale], dim=-1)
            if self.dynamic_frozen:
                with torch.no_grad():
                    dynamic = self.dynamic_grid(ut)
            else:
                dynamic = self.dynamic_grid(ut)
            h = h + dynamic
        if self.config.position_input:
            h = torch.cat([h, x.to(h.dtype) / self.bound], dim=-1)
        return h

    def dynamic_features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The dynamic grid's features alone at x (N, 3), t (N,): what time adds to the static grid."""
        if self.dynamic_grid is None:
            raise ValueError("a static field has no dynamic features")
        u = ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)
        return self.dynamic_grid(torch.cat([u, t.reshape(-1, 1).to(u.dtype).clamp(0.0, 1.0) * self.config.time_scale], dim=-1))

    def blob(self, x: torch.Tensor) -> torch.Tensor:
        """Centre bias (plus density_bias) added to the raw density: (N, 3) -> (N,)."""
        return self.config.blob_scale * (1.0 - x.norm(dim=-1) / self.config.blob_radius) + self.config.density_bias

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw density (with blob) -> sigma >= 0."""
        return TruncExp.apply(raw) if self.config.density_activation == "exp" else F.softplus(raw)

    def density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """sigma >= 0 per world unit: x (N, 3), t (N,) -> (N,)."""
        return self.activate(self.density_mlp(self.features(x, t))[:, 0] + self.blob(x))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and colour (N, 3) in [0, 1] at points x (N, 3) and times t (N,)."""
        h = self.features(x, t)
        sigma = self.activate(self.density_mlp(h)[:, 0] + self.blob(x))
        rgb = torch.sigmoid(self.color_mlp(h))
        return sigma, rgb

    def background(self, dirs: torch.Tensor) -> torch.Tensor:
        """Colour of rays leaving the box: unit directions (N, 3) -> (N, 3) in [0, 1]."""
        if self.background_mlp is None:
            return self.background_color.to(dirs).expand(dirs.shape[0], 3)
        return torch.sigmoid(self.background_mlp(spherical_harmonics(dirs, self.config.background_sh_degree)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def grid_summary(config: HashGridConfig) -> str:
    finest = config.base_resolution * config.per_level_scale ** (config.n_levels - 1)
    return (
        f"{config.n_input_dims}D, {config.n_levels} levels x {config.n_features_per_level} features, "
        f"table 2^{config.log2_hashmap_size}, resolution {config.base_resolution}..{round(finest)}"
    )
