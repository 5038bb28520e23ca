"""The teachers' world data in its three shapes: images, K-view sets, T-frame clips."""

import numpy as np
import pytest

from fourdistill.cameras import spherical_coordinates, wrap_degrees
from fourdistill.teachers.data import DataConfig, clip_times, render_world_set
from fourdistill.world import make_scene
from fourdistill.world.render import render_views


def test_view_sets_are_k_views_90_degrees_apart_at_one_time_and_match_the_renderer():
    cfg = DataConfig(n_scenes=2, views_per_scene=2)
    data = render_world_set(cfg, 24, 0, mode="views", n_views=4, progress=False)
    assert data["images"].shape == (4, 4, 24, 24, 3) and data["images"].dtype == np.uint8
    assert data["objects"].shape == (4, 4, 24, 24) and data["cameras"].shape == (4, 4, 4, 4)
    assert data["times"].shape == (4,) and data["azimuth_deg"].shape == (4, 4)
    assert list(data["scene"]) == [0, 0, 1, 1]
    for n in range(4):
        az = data["azimuth_deg"][n]
        steps = [wrap_degrees(float(az[k + 1] - az[k])) for k in range(3)]
        assert np.allclose(steps, 90.0, atol=1e-3)
        # the camera matrices sit at those azimuths and at one elevation
        read = np.array([spherical_coordinates(c) for c in data["cameras"][n].astype(np.float64)])
        assert np.allclose([wrap_degrees(a - b) for a, b in zip(read[:, 0], az)], 0.0, atol=1e-2)
        assert np.allclose(read[:, 1], data["elevation_deg"][n], atol=1e-2)
    # an independent render of one set at its cameras and time gives the same pixels
    from fourdistill.cameras import Camera

    scene = make_scene(int(data["seeds"][1]))
    cams = [Camera.from_fov(c, 40.0, 24, 24) for c in data["cameras"][2].astype(np.float64)]
    again = render_views(scene, cams, [float(data["times"][2])] * 4)["rgb"]
    assert np.abs((np.clip(again, 0, 1) * 255 + 0.5).astype(np.uint8).astype(int) - data["images"][2].astype(int)).max() <= 1


def test_clips_are_t_frames_of_one_camera_over_the_scene_time():
    data = render_world_set(DataConfig(n_scenes=3, views_per_scene=1), 16, 3, mode="clips", n_frames=8, progress=False)
    assert data["images"].shape == (3, 8, 16, 16, 3) and data["cameras"].shape == (3, 4, 4)
    t = data["times"]
    assert t.shape == (3, 8) and np.allclose(np.diff(t, axis=1), 1 / 8, atol=1e-6)
    assert np.all((t[:, 0] >= 0) & (t[:, 0] < 1 / 8))
    # scenes whose objects move (a spinning cone looks the same at every time) change over the clip
    moving = [k for k, s in enumerate(data["seeds"]) if any(o.motion not in ("static", "spin") for o in make_scene(int(s)).objects)]
    assert moving
    for k in moving:
        assert np.abs(data["images"][k, 0].astype(int) - data["images"][k, -1].astype(int)).mean() > 0.5
    times = clip_times(np.random.default_rng(0), 16)
    assert times.shape == (16,) and np.isclose(times[1] - times[0], 1 / 16)


def test_modes_and_sizes_are_checked_and_held_out_seeds_refused():
    with pytest.raises(ValueError, match="mode"):
        render_world_set(DataConfig(n_scenes=1), 16, 0, mode="video", progress=False)
    with pytest.raises(ValueError, match="n_views"):
        render_world_set(DataConfig(n_scenes=1), 16, 0, mode="views", n_views=0, progress=False)
    with pytest.raises(ValueError, match="reserved for evaluation"):
        render_world_set(DataConfig(first_seed=1_000_000, n_scenes=1), 16, 0, mode="clips", progress=False)
