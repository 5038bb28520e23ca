"""Pinhole cameras in the D-NeRF / Blender convention.

World axes are z-up (as Blender and D-NeRF). A camera is a camera-to-world 4x4 matrix in
OpenGL axes: +x right, +y up, the camera looks down -z. Intrinsics are in pixels.

Orbit cameras are parameterised by azimuth (degrees, counter-clockwise about +z from +x),
elevation (degrees above the xy-plane) and radius, looking at a target point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: pose (camera-to-world, OpenGL axes) and pixel intrinsics.

    c2w: (4, 4) float64 camera-to-world. fx, fy, cx, cy in pixels; width, height in pixels.
    """

    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        c2w = np.asarray(self.c2w, dtype=np.float64)
        if c2w.shape != (4, 4):
            raise ValueError(f"camera c2w must be 4x4, got shape {c2w.shape}")
        if not np.all(np.isfinite(c2w)):
            raise ValueError("camera c2w has non-finite entries")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "c2w", c2w)

    @classmethod
    def from_fov(cls, c2w, fov_x_deg: float, width: int, height: int) -> "Camera":
        """A centred camera with horizontal field of view `fov_x_deg` and square pixels."""
        focal = 0.5 * width / math.tan(0.5 * math.radians(fov_x_deg))
        return cls(np.asarray(c2w, dtype=np.float64), focal, focal, width / 2.0, height / 2.0, int(width), int(height))

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan(0.5 * self.width / self.fx))

    @property
    def position(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return self.c2w[:3, 3].copy()

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera with intrinsics scaled to a new image size."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width), int(height))

    def ray_directions_camera(self) -> np.ndarray:
        """(H, W, 3) unnormalised ray directions in camera axes through pixel centres."""
        j, i = np.meshgrid(np.arange(self.height) + 0.5, np.arange(self.width) + 0.5, indexing="ij")
        x = (i - self.cx) / self.fx
        y = -(j - self.cy) / self.fy
        return np.stack([x, y, -np.ones_like(x)], axis=-1)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """World-space rays through pixel centres.

        Returns origins (H, W, 3) and unit directions (H, W, 3), float64.
        """
        d_cam = self.ray_directions_camera()
        d = d_cam @ self.c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = np.broadcast_to(self.c2w[:3, 3], d.shape).copy()
        return o, d

    def to_dict(self) -> dict:
        return {
            "c2w": self.c2w.tolist(),
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(np.asarray(d["c2w"], dtype=np.float64), d["fx"], d["fy"], d["cx"], d["cy"], d["width"], d["height"])

    def same_pose(self, other: "Camera", atol: float = 1e-6) -> bool:
        return bool(np.allclose(self.c2w, other.c2w, atol=atol))


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) camera-to-world matrix (OpenGL axes) for a camera at `eye` looking at `target`."""
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    forward = target - eye
    forward /= np.linalg.norm(forward)
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight along up: pick any right vector
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = true_up
    c2w[:3, 2] = -forward
    c2w[:3, 3] = eye
    return c2w


def orbit_pose(azimuth_deg: float, elevation_deg: float, radius: float, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """(4, 4) camera-to-world for a camera on a sphere around `target`, looking at it."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    t = np.asarray(target, dtype=np.float64)
    eye = t + radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return look_at(eye, t)


def orbit_camera(
    azimuth_deg: float,
    elevation_deg: float,
    radius: float,
    fov_x_deg: float = 40.0,
    width: int = 64,
    height: int = 64,
    target=(0.0, 0.0, 0.0),
) -> Camera:
    """An orbit camera; fov 40 deg is 4D-fy's evaluation orbit (Bahmani et al. 2024)."""
    return Camera.from_fov(orbit_pose(azimuth_deg, elevation_deg, radius, target), fov_x_deg, width, height)


def spherical_coordinates(c2w: np.ndarray, target=(0.0, 0.0, 0.0)) -> tuple[float, float, float]:
    """(azimuth_deg, elevation_deg, radius) of a camera centre about `target`."""
    p = np.asarray(c2w, dtype=np.float64)[:3, 3] - np.asarray(target, dtype=np.float64)
    radius = float(np.linalg.norm(p))
    elevation = math.degrees(math.asin(np.clip(p[2] / max(radius, 1e-12), -1.0, 1.0)))
    azimuth = math.degrees(math.atan2(p[1], p[0]))
    return azimuth, elevation, radius


def relative_pose(c2w_ref: np.ndarray, c2w_tgt: np.ndarray) -> np.ndarray:
    """Relative camera `inverse(P_ref) @ P_tgt` (docs/method.md, 1.1): (4, 4)."""
    return np.linalg.inv(np.asarray(c2w_ref, dtype=np.float64)) @ np.asarray(c2w_tgt, dtype=np.float64)


@dataclass(frozen=True)
class OrbitRange:
    """Where cameras make sense for an object-centric source: ranges of an orbit about `target`."""

    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    elevation_deg: tuple[float, float] = (10.0, 40.0)
    radius: tuple[float, float] = (3.6, 4.2)
    fov_x_deg: float = 40.0
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def sample(self, rng: np.random.Generator, width: int, height: int) -> Camera:
        az = rng.uniform(*self.azimuth_deg)
        el = rng.uniform(*self.elevation_deg)
        r = rng.uniform(*self.radius)
        return orbit_camera(az, el, r, self.fov_x_deg, width, height, self.target)


def wrap_degrees(angle: float) -> float:
    """Wrap an angle to (-180, 180]."""
    a = (angle + 180.0) % 360.0 - 180.0
    return 180.0 if a == -180.0 else a


def spherical_delta(c2w_ref: np.ndarray, c2w_tgt: np.ndarray, target=(0.0, 0.0, 0.0)) -> tuple[float, float, float]:
    """(d_azimuth_deg, d_elevation_deg, d_radius) from reference to target camera, azimuth wrapped."""
    a0, e0, r0 = spherical_coordinates(c2w_ref, target)
    a1, e1, r1 = spherical_coordinates(c2w_tgt, target)
    return wrap_degrees(a1 - a0), e1 - e0, r1 - r0
