import json
import math

import numpy as np
import pytest

from fourdistill.cameras import Camera, orbit_camera, relative_pose, spherical_coordinates, spherical_delta
from fourdistill.world import (
    DEFAULT_ORBIT,
    EVAL_SEEDS,
    GROUND_Z,
    MOTIONS,
    SHAPES,
    WorldConfig,
    check_train_seeds,
    export_dnerf,
    export_video,
    is_eval_seed,
    make_scene,
    render_view,
    render_views,
)
from fourdistill.world.render import sdf_local


def _cam(az=30.0, el=25.0, size=64):
    return orbit_camera(az, el, 3.2, 40.0, size, size)


def _mse(a, b):
    return float(np.mean((a - b) ** 2))


def test_scene_is_a_pure_function_of_the_seed():
    a, b = make_scene(7), make_scene(7)
    assert a == b
    assert a.caption == b.caption
    np.testing.assert_array_equal(render_view(a, _cam(), 0.3)["rgb"], render_view(b, _cam(), 0.3)["rgb"])
    assert any(make_scene(s).caption != a.caption for s in range(8, 20))


def test_captions_are_plain_english_and_name_every_object():
    for seed in range(40):
        scene = make_scene(seed)
        cap = scene.caption
        assert cap.startswith(("a ", "an "))
        for obj in scene.objects:
            assert obj.color_name in cap
        assert "  " not in cap and not cap.endswith(" ")
    two = next(make_scene(s) for s in range(100) if len(make_scene(s).objects) == 2)
    assert " next to " in two.caption


def test_every_shape_and_motion_occurs():
    shapes, motions = set(), set()
    for seed in range(300):
        for o in make_scene(seed).objects:
            shapes.add(o.shape)
            motions.add(o.motion)
    assert shapes == set(SHAPES)
    assert motions == set(MOTIONS)


def test_config_is_validated():
    with pytest.raises(ValueError, match="shapes"):
        WorldConfig(shapes=("cube", "teapot"))
    with pytest.raises(ValueError, match="n_objects"):
        WorldConfig(n_objects=(0, 2))
    scene = make_scene(1, WorldConfig(n_objects=(3, 3), shapes=("torus",)))
    assert len(scene.objects) == 3 and all(o.shape == "torus" for o in scene.objects)


def test_eval_seeds_are_reserved():
    assert is_eval_seed(EVAL_SEEDS[0]) and not is_eval_seed(0)
    check_train_seeds(range(100))
    with pytest.raises(ValueError, match="reserved for evaluation"):
        check_train_seeds([3, EVAL_SEEDS[5]])


def test_render_outputs_have_the_documented_shapes_and_ranges():
    f = render_view(make_scene(3), _cam(size=48), 0.5)
    assert f["rgb"].shape == (48, 48, 3) and f["rgb"].dtype == np.float32
    assert f["mask"].shape == (48, 48) and f["depth"].shape == (48, 48)
    assert 0.0 <= f["rgb"].min() and f["rgb"].max() <= 1.0
    assert set(np.unique(f["mask"])) <= {0.0, 1.0}
    assert np.all(np.isinf(f["depth"][f["mask"] == 0])) and np.all(np.isfinite(f["depth"][f["mask"] == 1]))
    # the camera sees the scene: ground and objects cover a good part of the image
    assert 0.3 < f["mask"].mean() < 1.0


def test_any_resolution_and_batch_matches_single_renders():
    scene = make_scene(11)
    for size in (16, 33, 128):
        assert render_view(scene, _cam(size=size), 0.2)["rgb"].shape == (size, size, 3)
    cams = [_cam(az) for az in (0, 90, 200)]
    times = [0.0, 0.4, 1.0]
    batch = render_views(scene, cams, times)
    for i in range(3):
        np.testing.assert_allclose(batch["rgb"][i], render_view(scene, cams[i], times[i])["rgb"], atol=1e-6)


def test_non_square_camera():
    cam = Camera.from_fov(orbit_camera(0, 20, 3.2).c2w, 40.0, 80, 48)
    assert render_view(make_scene(2), cam, 0.5)["rgb"].shape == (48, 80, 3)


def test_time_and_view_are_identifiable_from_single_images():
    """Two times from one camera differ clearly, and so do two cameras at one time."""
    for seed in range(30):
        scene = make_scene(seed)
        a = render_view(scene, _cam(30.0), 0.1)["rgb"]
        later = render_view(scene, _cam(30.0), 0.9)["rgb"]
        moved = render_view(scene, _cam(100.0), 0.1)["rgb"]
        assert _mse(a, later) > 1e-3, f"seed {seed}: t=0.1 and t=0.9 look the same"
        assert _mse(a, moved) > 1e-3, f"seed {seed}: azimuth 30 and 100 look the same"


def test_spinning_cube_changes_and_a_static_ball_does_not():
    spin = make_scene(0, WorldConfig(n_objects=(1, 1), shapes=("cube",), motions=("spin",)))
    static_ball = make_scene(0, WorldConfig(n_objects=(1, 1), shapes=("sphere",), motions=("static",)))
    cam = _cam()
    assert _mse(render_view(spin, cam, 0.0)["rgb"], render_view(spin, cam, 0.3)["rgb"]) > 1e-3
    np.testing.assert_array_equal(render_view(static_ball, cam, 0.0)["rgb"], render_view(static_ball, cam, 0.8)["rgb"])


def test_ground_pattern_reads_the_view_even_for_a_symmetric_object():
    """A static ball seen from opposite sides: the quadrant-tinted ground tells them apart."""
    scene = make_scene(0, WorldConfig(n_objects=(1, 1), shapes=("sphere",), motions=("static",)))
    assert _mse(render_view(scene, _cam(0.0), 0.5)["rgb"], render_view(scene, _cam(180.0), 0.5)["rgb"]) > 1e-3


def test_objects_rest_on_the_ground_and_stay_in_the_box():
    for seed in range(60):
        for obj in make_scene(seed).objects:
            centre, _, scale = obj.state(np.linspace(0, 1, 21))
            assert np.all(np.linalg.norm(centre[:, :2], axis=1) + scale <= 1.0 + 1e-6)  # footprint over the ground
            bottom = centre[:, 2] - scale * (1.05 if obj.shape == "torus" else 1.0)
            assert np.all(bottom >= GROUND_Z - 1e-6)
            if obj.motion != "bounce":
                np.testing.assert_allclose(bottom, GROUND_Z, atol=1e-9)  # resting, not floating
            assert np.all(centre[:, 2] + scale * 1.1 <= 1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_signed_distances_are_exact_on_known_points(shape):
    inside = np.zeros((1, 3))
    assert sdf_local(shape, inside if shape != "torus" else np.array([[0.0, 0.75, 0.0]]))[0] < 0
    far = np.array([[0.0, 0.0, 5.0]])
    # far above every primitive: the distance is the gap to its top
    top = {"cube": 1.0, "sphere": 1.0, "cylinder": 1.0, "cone": 1.0, "torus": 1.05}[shape]
    assert sdf_local(shape, far)[0] == pytest.approx(5.0 - top, abs=1e-6)


def test_depth_is_the_distance_to_the_ground_where_the_ground_is_hit():
    cam = orbit_camera(45.0, 30.0, 3.2, 40.0, 32, 32)
    f = render_view(make_scene(0, WorldConfig(n_objects=(1, 1), size=(0.28, 0.28))), cam, 0.0)
    o, d = cam.rays()
    t_ground = (GROUND_Z - o[..., 2]) / d[..., 2]
    p = o + t_ground[..., None] * d
    on_ground = (d[..., 2] < 0) & (np.abs(p[..., 0]) <= 1) & (np.abs(p[..., 1]) <= 1) & (f["depth"] < t_ground - 1e-3) == False  # noqa: E712
    hit = on_ground & np.isfinite(f["depth"]) & (np.abs(f["depth"] - t_ground) < 1e-3)
    assert hit.sum() > 100  # most ground pixels carry the analytic ground distance


def test_render_rejects_times_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        render_view(make_scene(0), _cam(), 1.5)


def test_relative_pose_and_spherical_delta_conventions():
    a = orbit_camera(10.0, 20.0, 3.0).c2w
    b = orbit_camera(70.0, 35.0, 3.5).c2w
    rel = relative_pose(a, b)
    np.testing.assert_allclose(a @ rel, b, atol=1e-9)
    d_az, d_el, d_r = spherical_delta(a, b)
    assert (d_az, d_el, d_r) == pytest.approx((60.0, 15.0, 0.5), abs=1e-6)
    d_az, _, _ = spherical_delta(orbit_camera(170.0, 20.0, 3.0).c2w, orbit_camera(-170.0, 20.0, 3.0).c2w)
    assert d_az == pytest.approx(20.0)  # wrapped, not -340
    az, el, r = spherical_coordinates(orbit_camera(-120.0, 15.0, 2.5).c2w)
    assert (az, el, r) == pytest.approx((-120.0, 15.0, 2.5))


def test_orbit_camera_looks_at_the_target_in_opengl_axes():
    cam = orbit_camera(0.0, 0.0, 3.0)
    # camera at +x looking toward the origin: its -z axis points along -x, its +y is world +z
    np.testing.assert_allclose(cam.c2w[:3, 2], [1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(cam.c2w[:3, 1], [0.0, 0.0, 1.0], atol=1e-9)
    o, d = cam.rays()
    centre_ray = d[cam.height // 2, cam.width // 2]
    assert centre_ray[0] < -0.99


def test_export_dnerf_writes_a_complete_folder(tmp_path):
    scene = make_scene(5)
    out = export_dnerf(scene, tmp_path / "scene", resolution=32, n_train=6, n_val=2, n_test=3)
    from PIL import Image

    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        meta = json.loads((out / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == pytest.approx(math.radians(DEFAULT_ORBIT.fov_x_deg))
        assert len(meta["frames"]) == n
        for fr in meta["frames"]:
            assert 0.0 <= fr["time"] <= 1.0
            assert np.asarray(fr["transform_matrix"]).shape == (4, 4)
            img = Image.open(out / (fr["file_path"][2:] + ".png"))
            assert img.mode == "RGBA" and img.size == (32, 32)
    train_times = [f["time"] for f in json.loads((out / "transforms_train.json").read_text())["frames"]]
    assert train_times == sorted(train_times) and train_times[0] == 0.0 and train_times[-1] == 1.0
    # the PNG holds exactly what the renderer produced for that camera and time
    fr = json.loads((out / "transforms_test.json").read_text())["frames"][1]
    cam = Camera.from_fov(np.asarray(fr["transform_matrix"]), DEFAULT_ORBIT.fov_x_deg, 32, 32)
    truth = render_view(scene, cam, fr["time"])
    png = np.asarray(Image.open(out / (fr["file_path"][2:] + ".png")), dtype=np.float32) / 255.0
    np.testing.assert_allclose(png[..., :3], truth["rgb"], atol=1.0 / 255 + 1e-6)
    np.testing.assert_allclose(png[..., 3], truth["mask"], atol=1e-6)
    # an existing folder is not overwritten by accident, and nothing half-written is left
    with pytest.raises(FileExistsError):
        export_dnerf(scene, out, resolution=32, n_train=2, n_val=0, n_test=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_export_video_round_trips_through_a_real_decoder(tmp_path, suffix):
    import av

    path = export_video(make_scene(4), tmp_path / f"clip{suffix}", n_frames=10, resolution=32)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (32, 32, 3)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_world_source_renders_any_view_and_lists_held_frames():
    from fourdistill.sources.world import WorldScenes, WorldSource

    scene = make_scene(9)
    src = WorldSource(scene, resolution=32, n_views=4, n_times=5)
    assert src.renders_any_view and src.caption == scene.caption and src.orbit == DEFAULT_ORBIT
    infos = src.infos()
    assert len(infos) == 20 and src.resolution == (32, 32)
    frame = src.frame(7)
    np.testing.assert_array_equal(frame.rgb, render_view(scene, infos[7].camera, infos[7].time01)["rgb"])
    summary = src.summary()
    assert summary.kind == "world" and summary.distinct_times == 5 and summary.frames == 20
    scenes = WorldScenes(range(10, 13), resolution=32)
    assert len(scenes) == 3 and scenes[1].scene.seed == 11
    with pytest.raises(ValueError, match="reserved for evaluation"):
        WorldScenes([EVAL_SEEDS[0]])


def test_the_command_line_starts_without_torch():
    """`fourdistill --help` must stay fast: no subcommand may import torch when it registers."""
    import subprocess
    import sys

    code = "import sys, fourdistill.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
