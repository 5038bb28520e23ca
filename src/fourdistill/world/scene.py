"""Procedural 4D scenes with exact ground truth: the project's embedded default 4D source.

A scene is a few coloured primitives on a patterned ground square, each with a motion over
t in [0, 1], lit by one fixed directional light. Everything is a pure function of the seed.

World units: objects live inside the box [-1, 1]^3; the ground is the square |x|, |y| <= 1 at
z = GROUND_Z; the up axis is +z (Blender / D-NeRF convention).

A scene is data (objects, motions, caption); `render.py` turns it into images and
`fourdistill.sources.world` reads it as a 4D source.

Identifiability (time and view both readable from one image): cube faces carry different
colours, round objects carry a stripe that turns with them, the ground's tiles are tinted by
world quadrant, and motions over [0, 1] are not periodic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..cameras import OrbitRange

GROUND_Z = -0.5
GROUND_HALF = 1.0

# Seeds reserved for evaluation: never trained on. Defined here, once.
EVAL_SEEDS = range(1_000_000, 1_001_000)
TRAIN_SEEDS = range(0, 1_000_000)

# Where cameras look at the world from (fov 40 deg: 4D-fy's evaluation fov, Bahmani et al. 2024).
DEFAULT_ORBIT = OrbitRange(azimuth_deg=(-180.0, 180.0), elevation_deg=(10.0, 40.0), radius=(3.0, 3.4), fov_x_deg=40.0)

# Strong, well separated colours with plain English names (linear RGB albedo in [0, 1]).
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.75),
    "orange": (0.98, 0.50, 0.05),
}

SHAPES = ("cube", "sphere", "cylinder", "cone", "torus")
SHAPE_NOUNS = {"cube": "cube", "sphere": "ball", "cylinder": "cylinder", "cone": "cone", "torus": "ring"}

MOTIONS = ("bounce", "orbit", "spin", "slide", "grow", "shrink", "static")
MOTION_VERBS = {
    "bounce": "bouncing",
    "orbit": "circling",
    "spin": "spinning",
    "slide": "sliding",
    "grow": "growing",
    "shrink": "shrinking",
    "static": "",
}

# Bottom extent of each unit primitive below its centre (local units), so objects rest on the ground.
_BOTTOM = {"cube": 1.0, "sphere": 1.0, "cylinder": 1.0, "cone": 1.0, "torus": 1.05}


@dataclass(frozen=True)
class WorldConfig:
    """The distribution scenes are drawn from.

    n_objects: inclusive range of the object count. size: range of an object's half-extent
    in world units. The defaults are what the embedded stack is trained on.
    """

    n_objects: tuple[int, int] = (1, 2)
    shapes: tuple[str, ...] = SHAPES
    motions: tuple[str, ...] = MOTIONS
    colors: tuple[str, ...] = tuple(COLORS)
    size: tuple[float, float] = (0.28, 0.36)

    def __post_init__(self):
        lo, hi = self.n_objects
        if not 1 <= lo <= hi <= 4:
            raise ValueError(f"n_objects must satisfy 1 <= lo <= hi <= 4, got {self.n_objects}")
        for name, allowed, values in (("shapes", SHAPES, self.shapes), ("motions", MOTIONS, self.motions), ("colors", tuple(COLORS), self.colors)):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"WorldConfig.{name}: unknown or empty {bad or values}; choose from {allowed}")


@dataclass(frozen=True)
class WorldObject:
    """One primitive with its motion. Positions in world units, angles in radians."""

    shape: str
    color_name: str
    motion: str
    size: float  # half-extent at rest
    anchor: tuple[float, float]  # (x, y) on the ground
    heading: float  # initial rotation about +z
    motion_dir: float  # direction of a slide / phase of an orbit
    motion_amount: float  # amplitude of the motion (meaning per motion)

    @property
    def color(self) -> np.ndarray:
        return np.asarray(COLORS[self.color_name], dtype=np.float32)

    @property
    def description(self) -> str:
        color = self.color_name
        article = "an" if color[0] in "aeiou" else "a"
        verb = MOTION_VERBS[self.motion]
        return f"{article} {color} {SHAPE_NOUNS[self.shape]}" + (f" {verb}" if verb else "")

    def state(self, time01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pose at times `time01` (array (B,)): centre (B, 3), angle about z (B,), scale (B,)."""
        t = np.asarray(time01, dtype=np.float64)
        ax, ay = self.anchor
        scale = np.full_like(t, self.size)
        angle = np.full_like(t, self.heading)
        x = np.full_like(t, ax)
        y = np.full_like(t, ay)
        lift = np.zeros_like(t)
        if self.motion == "bounce":
            # a damped bounce: three hops of decreasing height, not periodic over [0, 1]
            lift = self.motion_amount * np.exp(-1.2 * t) * np.abs(np.sin(math.pi * 3.0 * t))
        elif self.motion == "orbit":
            # circle the anchor through 270 degrees so t = 0 and t = 1 differ
            phi = self.motion_dir + 1.5 * math.pi * t
            x = ax + 0.15 * np.cos(phi)
            y = ay + 0.15 * np.sin(phi)
            angle = self.heading + 1.5 * math.pi * t
        elif self.motion == "spin":
            angle = self.heading + 1.5 * math.pi * t * np.sign(self.motion_amount or 1.0)
        elif self.motion == "slide":
            s = (t - 0.5) * 2.0 * self.motion_amount
            x = ax + s * math.cos(self.motion_dir)
            y = ay + s * math.sin(self.motion_dir)
        elif self.motion == "grow":
            scale = self.size * (0.5 + 0.6 * t)
        elif self.motion == "shrink":
            scale = self.size * (1.1 - 0.6 * t)
        z = GROUND_Z + _BOTTOM[self.shape] * scale + lift
        return np.stack([x, y, z], axis=-1), angle, scale


@dataclass(frozen=True)
class Scene:
    """A procedural 4D scene. Build with `make_scene(seed)`; render with `render_views` /
    `render_view` (fourdistill.world)."""

    seed: int
    objects: tuple[WorldObject, ...]
    config: WorldConfig = field(default_factory=WorldConfig)

    @property
    def caption(self) -> str:
        """Plain English, deterministic: "a red cube spinning next to a blue ball"."""
        parts = [o.description for o in self.objects]
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            return f"{parts[0]} next to {parts[1]}"
        return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def is_eval_seed(seed: int) -> bool:
    return int(seed) in EVAL_SEEDS


def check_train_seeds(seeds) -> None:
    """Raise if any seed is reserved for evaluation."""
    bad = [int(s) for s in seeds if is_eval_seed(s)]
    if bad:
        raise ValueError(
            f"seeds {bad[:5]}{'...' if len(bad) > 5 else ''} are reserved for evaluation "
            f"({EVAL_SEEDS.start}..{EVAL_SEEDS.stop - 1}) and must not be trained on"
        )


def make_scene(seed: int, config: WorldConfig | None = None) -> Scene:
    """Draw a scene from `config` with a seeded generator; the same seed gives the same scene."""
    config = config or WorldConfig()
    rng = np.random.default_rng([int(seed), 0x4D])
    n = int(rng.integers(config.n_objects[0], config.n_objects[1] + 1))
    # anchors spread around a circle so objects rarely collide; one object sits near the centre
    base_angle = rng.uniform(0, 2 * math.pi)
    ring = 0.0 if n == 1 else 0.42
    shapes = rng.choice(len(config.shapes), size=n, replace=n > len(config.shapes))
    colors = rng.choice(len(config.colors), size=n, replace=n > len(config.colors))
    objects = []
    for k in range(n):
        phi = base_angle + 2 * math.pi * k / n
        jitter = rng.uniform(-0.03, 0.03, size=2)
        anchor = (ring * math.cos(phi) + jitter[0], ring * math.sin(phi) + jitter[1])
        motion = config.motions[int(rng.integers(len(config.motions)))]
        objects.append(
            WorldObject(
                shape=config.shapes[int(shapes[k])],
                color_name=config.colors[int(colors[k])],
                motion=motion,
                size=float(rng.uniform(*config.size)),
                anchor=(float(anchor[0]), float(anchor[1])),
                heading=float(rng.uniform(0, 2 * math.pi)),
                # slides run tangentially to the ring so neighbours are not hit
                motion_dir=float(phi + math.pi / 2 if n > 1 else rng.uniform(0, 2 * math.pi)),
                motion_amount=float(rng.uniform(0.45, 0.6) if motion == "bounce" else rng.uniform(0.12, 0.18) * rng.choice([-1, 1])),
            )
        )
    return Scene(seed=int(seed), objects=tuple(objects), config=config)
