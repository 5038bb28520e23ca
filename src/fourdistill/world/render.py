"""Exact renderer for world scenes: sphere tracing of signed distance functions, in NumPy.

Every primitive is a signed distance function in its own unit-sized local frame; a ray is
marched from where it enters the objects' box until it is within `HIT_EPS` of a surface. The
ground square is intersected analytically. Shading: Lambert under one fixed directional light
plus ambient, and a soft contact shadow on the ground under each object.

All views in one call are marched together, so batching many small images is cheap.

A scene (`scene.py`) is data; this module is what turns it into images: `render_views` for a
batch, `render_view` for one image, `object_mask` for which pixels show an object, and
`to_local` / `sdf_local`, the geometry the judge's object-pixel counts reuse. For the world as a
4D source (images as `Frame`s), read it through `fourdistill.sources.world.WorldSource`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .scene import GROUND_HALF, GROUND_Z, Scene

LIGHT_DIR = np.array([0.45, -0.35, 0.82], dtype=np.float32)
LIGHT_DIR /= np.linalg.norm(LIGHT_DIR)
AMBIENT = 0.38
HIT_EPS = 1e-3
MAX_STEPS = 96
OBJECT_BOX = (np.array([-1.3, -1.3, GROUND_Z - 0.05], dtype=np.float32), np.array([1.3, 1.3, 1.3], dtype=np.float32))
SKY_HORIZON = np.array([0.80, 0.86, 0.93], dtype=np.float32)
SKY_ZENITH = np.array([0.42, 0.58, 0.88], dtype=np.float32)
WHITE = np.ones(3, dtype=np.float32)

# Ground tile tints per world quadrant (+x+y, -x+y, -x-y, +x-y): the view is readable from the floor.
QUADRANT_TINT = np.array(
    [[1.00, 0.88, 0.72], [0.74, 0.95, 0.78], [0.74, 0.80, 1.00], [0.98, 0.78, 0.92]], dtype=np.float32
)
GROUND_TILES = 8


# ----------------------------------------------------------------------------- distances
def _length(*xs):
    return np.sqrt(sum(x * x for x in xs))


def sdf_local(shape: str, q: np.ndarray) -> np.ndarray:
    """Signed distance of a unit primitive at local points q (N, 3) -> (N,)."""
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    if shape == "cube":  # rounded box, half extent 1
        r = 0.08
        a = np.abs(q) - (1.0 - r)
        outside = _length(*(np.maximum(a[:, i], 0.0) for i in range(3)))
        inside = np.minimum(a.max(axis=1), 0.0)
        return outside + inside - r
    if shape == "sphere":
        return _length(x, y, z) - 1.0
    if shape == "cylinder":  # axis z, radius 0.85, half height 1
        dx = _length(x, y) - 0.85
        dz = np.abs(z) - 1.0
        return np.minimum(np.maximum(dx, dz), 0.0) + _length(np.maximum(dx, 0.0), np.maximum(dz, 0.0))
    if shape == "cone":  # capped cone: radius 1 at z = -1, apex at z = +1
        qx, qy = _length(x, y), z
        r1, r2, h = 1.0, 0.0, 1.0
        ca_x = qx - np.minimum(qx, np.where(qy < 0.0, r1, r2))
        ca_y = np.abs(qy) - h
        k2x, k2y = r2 - r1, 2.0 * h
        s = np.clip(((r2 - qx) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y), 0.0, 1.0)
        cb_x = qx - r2 + k2x * s
        cb_y = qy - h + k2y * s
        sign = np.where((cb_x < 0.0) & (ca_y < 0.0), -1.0, 1.0)
        return sign * np.sqrt(np.minimum(ca_x * ca_x + ca_y * ca_y, cb_x * cb_x + cb_y * cb_y))
    if shape == "torus":  # upright ring: axis along local x, major 0.75, minor 0.3
        return _length(_length(y, z) - 0.75, x) - 0.3
    raise ValueError(f"unknown shape {shape!r}")


def albedo_local(shape: str, q: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Surface colour of a unit primitive at local surface points q (N, 3) -> (N, 3).

    Patterns are fixed to the object, so its rotation and the viewpoint show in the image.
    """
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    n = len(q)
    col = np.broadcast_to(base, (n, 3)).copy()
    if shape == "cube":
        axis = np.abs(q).argmax(axis=1)
        positive = q[np.arange(n), axis] > 0
        face = axis * 2 + (~positive)  # 0:+x 1:-x 2:+y 3:-y 4:+z 5:-z
        faces = np.stack(
            [base, 0.45 * base, 0.45 * base + 0.55 * WHITE, 0.6 * base + 0.4 * (1.0 - base), base, 0.3 * base]
        )
        col = faces[face]
        marker = (face == 0) & (np.abs(y) < 0.4) & (np.abs(z) < 0.4)
        col[marker] = 0.95 * WHITE
    elif shape == "sphere":
        col[y > 0] = 0.7 * base + 0.3 * WHITE
        col[np.abs(x) < 0.28] = 0.95 * WHITE
    elif shape == "cylinder":
        ang = np.arctan2(y, x)
        col[np.abs(ang) < 0.45] = 0.95 * WHITE
        col[z > 0.98] = 0.6 * base + 0.4 * WHITE
    elif shape == "cone":
        ang = np.arctan2(y, x)
        col[np.abs(ang) < 0.5] = 0.4 * base
        col[(z > -0.15) & (z < 0.2)] = 0.95 * WHITE
    elif shape == "torus":
        ang = np.arctan2(z, y)
        col[(ang > 0.0) & (ang < 1.0)] = 0.95 * WHITE
        col[(ang < -1.6) & (ang > -2.6)] = 0.4 * base
    return col


# ----------------------------------------------------------------------------- renderer
def _object_states(scene: Scene, times: np.ndarray):
    """Per object: centre (B, 3), angle (B,), scale (B,) at each view's time."""
    return [o.state(times) for o in scene.objects]


def to_local(p: np.ndarray, centre: np.ndarray, angle: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """World points p (N, 3) to an object's unit frame, where `sdf_local` and `albedo_local` apply.

    centre (N, 3) world units, angle (N,) radians about +z, scale (N,) the object's half-extent,
    per point (an object's pose from `WorldObject.state`, indexed by each point's view). A world
    distance is `sdf_local(shape, to_local(p, ...)) * scale`.
    """
    d = p - centre
    c, s = np.cos(angle), np.sin(angle)
    x = c * d[:, 0] + s * d[:, 1]
    y = -s * d[:, 0] + c * d[:, 1]
    return np.stack([x, y, d[:, 2]], axis=1) / scale[:, None]


def _scene_sdf(scene: Scene, p: np.ndarray, params) -> tuple[np.ndarray, np.ndarray]:
    """Min distance over objects at points p (N, 3) and the index of the nearest object."""
    best = np.full(len(p), np.inf, dtype=np.float32)
    which = np.zeros(len(p), dtype=np.int64)
    for k, obj in enumerate(scene.objects):
        centre, angle, scale = params[k]
        d = (sdf_local(obj.shape, to_local(p, centre, angle, scale)) * scale).astype(np.float32)
        closer = d < best
        best = np.where(closer, d, best)
        which = np.where(closer, k, which)
    return best, which


def _ray_box(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
        t0 = (lo - o) * inv
        t1 = (hi - o) * inv
    tnear = np.minimum(t0, t1).max(axis=1)
    tfar = np.maximum(t0, t1).min(axis=1)
    return np.maximum(tnear, 0.0), tfar


def render_views(scene: Scene, cameras, times) -> dict[str, np.ndarray]:
    """Render views of `scene`: one (camera, time) each, all cameras the same size.

    cameras: a sequence of `Camera`; times: a sequence of floats in [0, 1], one per camera.
    Returns rgb (B, H, W, 3) float32 in [0, 1], mask (B, H, W) float32 (1 where the ray hits an
    object or the ground, 0 for sky) and depth (B, H, W) float32 (distance along the ray, inf
    for sky).
    """
    cameras, times = list(cameras), list(times)
    if len(cameras) != len(times):
        raise ValueError(f"got {len(cameras)} cameras but {len(times)} times")
    if not cameras:
        raise ValueError("render_views needs at least one camera")
    w, h = cameras[0].width, cameras[0].height
    if any((c.width, c.height) != (w, h) for c in cameras):
        raise ValueError("all cameras in one render_views call must share an image size")
    times = np.asarray(times, dtype=np.float64)
    if np.any(~np.isfinite(times)) or np.any(times < 0.0) or np.any(times > 1.0):
        raise ValueError(f"times must lie in [0, 1], got {times.min()}..{times.max()}")
    b, npix = len(cameras), w * h

    origins, dirs = zip(*(c.rays() for c in cameras))
    o = np.concatenate([x.reshape(-1, 3) for x in origins]).astype(np.float32)
    d = np.concatenate([x.reshape(-1, 3) for x in dirs]).astype(np.float32)
    view = np.repeat(np.arange(b), npix)
    n = len(o)

    states = _object_states(scene, times)
    params_all = [(c.astype(np.float32), a.astype(np.float32), s.astype(np.float32)) for c, a, s in states]

    # --- objects: sphere tracing from the box entry
    t_obj = np.full(n, np.inf, dtype=np.float32)
    hit_obj = np.full(n, -1, dtype=np.int64)
    tnear, tfar = _ray_box(o, d, *OBJECT_BOX)
    active = np.nonzero(tnear < tfar)[0]
    t = tnear[active].astype(np.float32)
    tmax = tfar[active]
    for _ in range(MAX_STEPS):
        if len(active) == 0:
            break
        p = o[active] + t[:, None] * d[active]
        v = view[active]
        params = [(c[v], a[v], s[v]) for c, a, s in params_all]
        dist, which = _scene_sdf(scene, p, params)
        done = dist < HIT_EPS
        t_obj[active[done]] = t[done]
        hit_obj[active[done]] = which[done]
        t = t + np.maximum(dist, 0.0) * 0.95
        keep = (~done) & (t < tmax)
        active, t, tmax = active[keep], t[keep], tmax[keep]

    # --- ground square
    with np.errstate(divide="ignore", invalid="ignore"):
        t_g = np.where(d[:, 2] < -1e-6, (GROUND_Z - o[:, 2]) / d[:, 2], np.inf)
    pg = o + np.where(np.isfinite(t_g), t_g, 0.0)[:, None] * d
    on_ground = np.isfinite(t_g) & (np.abs(pg[:, 0]) <= GROUND_HALF) & (np.abs(pg[:, 1]) <= GROUND_HALF)
    t_g = np.where(on_ground, t_g, np.inf).astype(np.float32)

    # --- sky
    up = np.clip(d[:, 2], 0.0, 1.0)[:, None]
    rgb = (SKY_HORIZON * (1.0 - up) + SKY_ZENITH * up).astype(np.float32)
    depth = np.minimum(t_obj, t_g)
    mask = np.isfinite(depth).astype(np.float32)

    # --- ground shading: quadrant-tinted checker with soft contact shadows
    g = np.nonzero(t_g < t_obj)[0]
    if len(g):
        pgg = pg[g]
        quadrant = np.where(pgg[:, 0] >= 0, np.where(pgg[:, 1] >= 0, 0, 3), np.where(pgg[:, 1] >= 0, 1, 2))
        tile = np.floor((pgg[:, :2] + GROUND_HALF) / (2 * GROUND_HALF) * GROUND_TILES).astype(np.int64)
        light = ((tile[:, 0] + tile[:, 1]) % 2 == 0)[:, None]
        col = QUADRANT_TINT[quadrant] * np.where(light, 0.78, 0.52)
        # a darker border frames the square
        border = np.abs(pgg[:, :2]).max(axis=1) > GROUND_HALF * 0.94
        col[border] *= 0.55
        shade = np.ones(len(g), dtype=np.float32)
        for k in range(len(scene.objects)):
            centre, _, scale = (x[view[g]] for x in params_all[k])
            # shadow cast along the light direction onto the ground plane
            height = centre[:, 2] - GROUND_Z
            sx = centre[:, 0] - LIGHT_DIR[0] / LIGHT_DIR[2] * height
            sy = centre[:, 1] - LIGHT_DIR[1] / LIGHT_DIR[2] * height
            r2 = (pgg[:, 0] - sx) ** 2 + (pgg[:, 1] - sy) ** 2
            shade *= 1.0 - 0.55 * np.exp(-r2 / (1.3 * scale) ** 2)
        ground_lambert = AMBIENT + (1.0 - AMBIENT) * max(float(LIGHT_DIR[2]), 0.0)
        rgb[g] = col * (ground_lambert * shade)[:, None]

    # --- object shading: Lambert with normals from central differences
    hit = np.nonzero(t_obj <= t_g)[0]
    hit = hit[np.isfinite(t_obj[hit])]
    if len(hit):
        p = o[hit] + t_obj[hit, None] * d[hit]
        v = view[hit]
        which = hit_obj[hit]
        eps = 1e-3
        normal = np.zeros_like(p)
        colour = np.zeros_like(p)
        for k, obj in enumerate(scene.objects):
            sel = np.nonzero(which == k)[0]
            if len(sel) == 0:
                continue
            centre, angle, scale = (x[v[sel]] for x in params_all[k])
            ps = p[sel]
            for axis in range(3):
                off = np.zeros(3, dtype=np.float32)
                off[axis] = eps
                plus = sdf_local(obj.shape, to_local(ps + off, centre, angle, scale))
                minus = sdf_local(obj.shape, to_local(ps - off, centre, angle, scale))
                normal[sel, axis] = plus - minus
            colour[sel] = albedo_local(obj.shape, to_local(ps, centre, angle, scale), obj.color)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        lambert = np.clip(normal @ LIGHT_DIR, 0.0, 1.0)
        rgb[hit] = colour * (AMBIENT + (1.0 - AMBIENT) * lambert)[:, None]

    return {
        "rgb": np.clip(rgb, 0.0, 1.0).reshape(b, h, w, 3),
        "mask": mask.reshape(b, h, w),
        "depth": depth.reshape(b, h, w),
    }


def render_view(scene: Scene, camera, time01: float) -> dict[str, np.ndarray]:
    """Render one view: rgb (H, W, 3), mask (H, W) and depth (H, W), as in `render_views`."""
    out = render_views(scene, [camera], [time01])
    return {key: value[0] for key, value in out.items()}


def object_mask(scene: Scene, cameras, times, depth) -> np.ndarray:
    """Which pixels show an object: (B, H, W) bool, where `depth` (B, H, W), rendered at these
    cameras and times, is nearer than the scene without its objects (ground or sky)."""
    bare = render_views(replace(scene, objects=()), cameras, times)["depth"]
    return np.asarray(depth) < bare - 1e-4
