"""The 4D source readers on real files the tests write: videos, frame folders, D-NeRF, nerfstudio."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from source_fixtures import ENCODABLE_VIDEO_KINDS, indexed_frames, write_dnerf, write_nerfstudio, write_video

from fourdistill.cli import main
from fourdistill.sources import (
    DNeRFSource,
    FramesFolderSource,
    NerfstudioSource,
    SourceError,
    VideoSource,
    detect_kind,
    open_source,
)

# Mean absolute error (in [0, 1]) a decoded frame may have against what was encoded. Measured
# at these settings: at most 0.02 (avi, MPEG-4), 0.007 (gif), 0.006 (webm), 0.004 (H.264);
# two different frames of the fixture differ by more than 0.1.
CODEC_TOLERANCE = 0.03


# ---------------------------------------------------------------- videos


@pytest.mark.parametrize("kind", ENCODABLE_VIDEO_KINDS, ids=[k[0] for k in ENCODABLE_VIDEO_KINDS])
def test_video_decodes_every_frame_in_order(tmp_path, kind):
    suffix = kind[0]
    frames = indexed_frames(12)
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames)

    source = open_source(path)
    assert isinstance(source, VideoSource)
    assert len(source) == 12
    assert source.resolution == (64, 48)
    assert [i.time01 for i in source.infos()] == pytest.approx([i / 11 for i in range(12)])
    assert all(i.camera is None for i in source.infos())
    truth = frames.astype(np.float32) / 255.0
    for i in range(12):
        f = source.frame(i)
        assert f.rgb.dtype == np.float32 and f.rgb.shape == (48, 64, 3)
        assert f.time01 == pytest.approx(i / 11)
        errors = np.abs(truth - f.rgb).mean(axis=(1, 2, 3))
        assert errors[i] < CODEC_TOLERANCE
        assert int(np.argmin(errors)) == i  # the content identifies its own index


def test_video_stride_and_max_frames(tmp_path):
    frames = indexed_frames(12)
    write_video(tmp_path / "clip.mp4", frames)
    truth = frames.astype(np.float32) / 255.0

    strided = VideoSource(tmp_path / "clip.mp4", stride=3)  # decoded frames 0, 3, 6, 9
    assert len(strided) == 4
    assert [i.time01 for i in strided.infos()] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    for k, original in enumerate((0, 3, 6, 9)):
        assert int(np.argmin(np.abs(truth - strided.frame(k).rgb).mean(axis=(1, 2, 3)))) == original

    capped = VideoSource(tmp_path / "clip.mp4", max_frames=5, stride=2)  # 0, 2, 4, 6, 8
    assert len(capped) == 5
    assert int(np.argmin(np.abs(truth - capped.frame(4).rgb).mean(axis=(1, 2, 3)))) == 8


def test_video_exported_by_the_world_matches_its_renders(tmp_path):
    """The project's own exporter and this reader agree: frame i is the scene at i / (N - 1)."""
    from fourdistill.world import export_video, make_scene, orbit_path, render_views

    scene = make_scene(3)
    export_video(scene, tmp_path / "scene.mp4", n_frames=8, resolution=32)
    source = open_source(tmp_path / "scene.mp4")
    cams = orbit_path(8, 32)
    times = np.linspace(0.0, 1.0, 8)
    renders = render_views(scene, cams, times)["rgb"]
    assert len(source) == 8
    for i in range(8):
        errors = np.abs(renders - source.frame(i).rgb).mean(axis=(1, 2, 3))
        assert errors[i] < CODEC_TOLERANCE
        assert source.frame(i).time01 == pytest.approx(times[i])


def test_still_video_is_reported(tmp_path):
    frames = np.repeat(indexed_frames(1), 6, axis=0)
    write_video(tmp_path / "still.mp4", frames)
    problems = VideoSource(tmp_path / "still.mp4").problems()
    assert any("no visible motion" in p for p in problems)
    write_video(tmp_path / "moving.mp4", indexed_frames(12))
    assert not any("no visible motion" in p for p in VideoSource(tmp_path / "moving.mp4").problems())


def test_frames_folder_is_in_natural_order(tmp_path):
    frames = indexed_frames(11, 16, 48)
    for i, f in enumerate(frames):  # frame_1 .. frame_11: plain sorting would put frame_10 second
        Image.fromarray(f).save(tmp_path / f"frame_{i + 1}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    source = open_source(tmp_path)
    assert isinstance(source, FramesFolderSource)
    assert len(source) == 11
    assert [i.file.rsplit("/", 1)[-1] for i in source.infos()][:3] == ["frame_1.png", "frame_2.png", "frame_3.png"]
    assert source.resolution == (48, 16)
    for i in range(11):
        f = source.frame(i)
        np.testing.assert_array_equal(np.round(f.rgb * 255).astype(np.uint8), frames[i])  # PNG is lossless
        assert f.time01 == pytest.approx(i / 10) and f.camera is None and f.mask is None


def test_frames_folder_reads_jpeg_and_rgba(tmp_path):
    frames = indexed_frames(3, 16, 24)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:02d}.jpg", quality=95)
    source = FramesFolderSource(tmp_path)
    assert np.abs(source.frame(2).rgb - frames[2] / 255.0).mean() < 0.03

    rgba_dir = tmp_path / "rgba"
    rgba_dir.mkdir()
    for i in range(2):
        rgba = np.zeros((4, 4, 4), dtype=np.uint8)
        rgba[..., 0] = 255
        rgba[:, :2, 3] = 255  # left half opaque red, right half clear
        Image.fromarray(rgba, "RGBA").save(rgba_dir / f"{i}.png")
    f = FramesFolderSource(rgba_dir, background=(0.0, 1.0, 0.0)).frame(1)
    np.testing.assert_allclose(f.rgb[:, :2], [[[1.0, 0.0, 0.0]] * 2] * 4)
    np.testing.assert_allclose(f.rgb[:, 2:], [[[0.0, 1.0, 0.0]] * 2] * 4)
    np.testing.assert_array_equal(f.mask, np.repeat([[1.0, 1.0, 0.0, 0.0]], 4, axis=0))


def test_frames_folder_reads_16_bit_and_palette_images(tmp_path):
    gray16 = np.arange(12 * 10, dtype=np.uint16).reshape(10, 12) * 500
    for i in range(2):
        Image.fromarray(gray16).save(tmp_path / f"g{i}.png")  # mode I;16
    f = FramesFolderSource(tmp_path).frame(0)
    np.testing.assert_allclose(f.rgb, np.repeat(gray16[..., None] / 65535.0, 3, axis=-1), atol=1e-6)

    palette_dir = tmp_path / "palette"
    palette_dir.mkdir()
    indices = np.zeros((4, 6), dtype=np.uint8)
    indices[:, 3:] = 1
    for i in range(2):
        im = Image.fromarray(indices, "P")
        im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        im.save(palette_dir / f"p{i}.png", transparency=1)  # palette entry 1 (blue) is transparent
    f = FramesFolderSource(palette_dir, background=(0.0, 1.0, 0.0)).frame(1)
    np.testing.assert_allclose(f.rgb[:, :3], [[[1.0, 0.0, 0.0]] * 3] * 4)
    np.testing.assert_allclose(f.rgb[:, 3:], [[[0.0, 1.0, 0.0]] * 3] * 4)
    np.testing.assert_array_equal(f.mask, (indices == 0).astype(np.float32))


# ---------------------------------------------------------------- D-NeRF


def test_dnerf_poses_times_intrinsics_and_compositing(tmp_path):
    angle = math.radians(50.0)
    truth = write_dnerf(tmp_path / "scene", size=(8, 6), camera_angle_x=angle)
    background = (0.2, 0.4, 1.0)
    source = open_source(tmp_path / "scene", background=background)
    assert isinstance(source, DNeRFSource) and source.split == "train"
    assert len(source) == 3 and source.resolution == (8, 6)
    focal = 0.5 * 8 / math.tan(0.5 * angle)
    for info, (c2w, t, rgba) in zip(source.infos(), truth["train"]):
        assert info.time01 == t
        np.testing.assert_allclose(info.camera.c2w, c2w, atol=1e-12)
        cam = info.camera
        assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == pytest.approx((focal, focal, 4.0, 3.0, 8, 6))
        f = source.frame(info.index)
        alpha = rgba[..., 3:].astype(np.float64) / 255.0
        expected = rgba[..., :3] / 255.0 * alpha + np.array(background) * (1.0 - alpha)
        np.testing.assert_allclose(f.rgb, expected, atol=1e-6)
        np.testing.assert_allclose(f.mask, alpha[..., 0], atol=1e-7)
        assert f.time01 == t and f.camera is cam


def test_dnerf_splits_time_fallback_and_file_extensions(tmp_path):
    truth = write_dnerf(tmp_path / "scene", with_extension={"test": True})
    val = DNeRFSource(tmp_path / "scene", split="val")  # 3 frames, no "time": i / (N - 1)
    assert [i.time01 for i in val.infos()] == [0.0, 0.5, 1.0]
    assert any("i / (N - 1)" in p for p in val.problems())
    test = DNeRFSource(tmp_path / "scene", split="test")  # file_path carries ".png"
    assert [i.time01 for i in test.infos()] == [0.5, 0.75]
    np.testing.assert_allclose(test.infos()[1].camera.c2w, truth["test"][1][0])

    everything = DNeRFSource(tmp_path / "scene", split="all")
    assert len(everything) == 8
    assert everything.frame_splits == ["train"] * 3 + ["val"] * 3 + ["test"] * 2
    assert [i.index for i in everything.infos()] == list(range(8))
    assert [i.time01 for i in everything.infos()] == [0.0, 0.25, 1.0, 0.0, 0.5, 1.0, 0.5, 0.75]
    assert DNeRFSource(tmp_path / "scene").problems() == ["only 3 distinct times: time pairs will be coarse"]


def test_dnerf_rgb_images_have_no_mask_and_per_frame_focal(tmp_path):
    folder = tmp_path / "scene"
    (folder / "train").mkdir(parents=True)
    frames = []
    for i in range(2):
        Image.fromarray(np.full((6, 8, 3), 40 * i, dtype=np.uint8)).save(folder / "train" / f"{i}.png")
        frames.append({"file_path": f"train/{i}", "time": float(i), "fl_x": 7.0, "fl_y": 8.0, "transform_matrix": np.eye(4).tolist()})
    (folder / "transforms_train.json").write_text(json.dumps({"frames": frames}))
    source = DNeRFSource(folder)
    cam = source.infos()[0].camera
    assert (cam.fx, cam.fy) == (7.0, 8.0)
    f = source.frame(1)
    assert f.mask is None
    np.testing.assert_allclose(f.rgb, 40 / 255.0, atol=1e-7)


def test_dnerf_frames_are_cached_small_and_returned_as_copies(tmp_path):
    write_dnerf(tmp_path / "scene")
    source = DNeRFSource(tmp_path / "scene", split="all", cache_size=2)
    first = source.frame(0)
    first.rgb[:] = 0.0
    assert source.frame(0).rgb.max() > 0.0  # the caller's change did not reach the cache
    for i in range(8):
        source.frame(i)
    assert len(source._cache) == 2


def test_dnerf_exported_by_the_world_reads_back_exactly(tmp_path):
    """Poses, intrinsics, times, masks and pixels survive export_dnerf -> DNeRFSource."""
    from fourdistill.world import export_dnerf, make_scene, render_view

    scene = make_scene(5)
    export_dnerf(scene, tmp_path / "dnerf", resolution=24, n_train=4, n_val=2, n_test=0)
    source = open_source(tmp_path / "dnerf", split="all")
    assert source.caption == scene.caption
    assert len(source) == 6 and source.splits == ["train", "val"]
    assert [i.time01 for i in source.infos()][:4] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    for info in source.infos():
        truth = render_view(scene, info.camera, info.time01)
        f = source.frame(info.index)
        np.testing.assert_allclose(f.mask, truth["mask"], atol=0.5 / 255 + 1e-6)
        solid = truth["mask"] == 1.0
        assert solid.sum() > 50
        np.testing.assert_allclose(f.rgb[solid], truth["rgb"][solid], atol=0.5 / 255 + 1e-6)


# ---------------------------------------------------------------- nerfstudio


def test_nerfstudio_shared_intrinsics(tmp_path):
    frames = write_nerfstudio(tmp_path / "cap", n=3, size=(10, 8))
    source = open_source(tmp_path / "cap")
    assert isinstance(source, NerfstudioSource)
    assert len(source) == 3 and source.resolution == (10, 8)
    assert [i.time01 for i in source.infos()] == [0.0, 0.0, 0.0]
    for info, entry in zip(source.infos(), frames):
        cam = info.camera
        assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == (11.0, 12.0, 5.25, 3.75, 10, 8)
        np.testing.assert_allclose(cam.c2w, entry["transform_matrix"])
    expected = np.asarray(Image.open(tmp_path / "cap" / "images" / "frame_00002.png"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(source.frame(1).rgb, expected)
    assert source.frame(1).mask is None
    assert any("static capture" in p for p in source.problems())
    assert source.summary().distinct_times == 1


def test_nerfstudio_per_frame_intrinsics_json_path_and_masks(tmp_path):
    write_nerfstudio(tmp_path / "cap", n=3, size=(10, 8), per_frame=True, extra={"k1": 0.05})
    meta = json.loads((tmp_path / "cap" / "transforms.json").read_text())
    mask = np.zeros((8, 10), dtype=np.uint8)
    mask[2:6, 3:7] = 255
    Image.fromarray(mask).save(tmp_path / "cap" / "mask_0.png")
    meta["frames"][0]["mask_path"] = "mask_0.png"
    (tmp_path / "cap" / "transforms.json").write_text(json.dumps(meta))

    source = open_source(tmp_path / "cap" / "transforms.json")  # the file itself works too
    cams = [i.camera for i in source.infos()]
    np.testing.assert_allclose([(c.fx, c.fy, c.cx, c.cy) for c in cams], [(9.0 + i, 9.5 + i, 4.5 + 0.1 * i, 3.5) for i in range(3)])
    np.testing.assert_array_equal(source.frame(0).mask, mask / 255.0)
    assert source.frame(1).mask is None
    assert any("distortion" in p for p in source.problems())


# ---------------------------------------------------------------- detection, world, summary


def test_open_source_detects_each_kind(tmp_path):
    write_video(tmp_path / "clip.mp4", indexed_frames(3))
    write_dnerf(tmp_path / "dnerf")
    write_nerfstudio(tmp_path / "ns")
    (tmp_path / "frames").mkdir()
    for i in range(2):
        Image.fromarray(indexed_frames(2)[i]).save(tmp_path / "frames" / f"{i}.png")
    assert detect_kind(tmp_path / "clip.mp4") is VideoSource
    assert detect_kind(tmp_path / "dnerf") is DNeRFSource
    assert detect_kind(tmp_path / "ns") is NerfstudioSource
    assert detect_kind(tmp_path / "frames") is FramesFolderSource
    assert open_source(tmp_path / "dnerf", split="test").split == "test"


def test_open_source_world_seed():
    from fourdistill.world import make_scene

    source = open_source("world:7", resolution=16)
    assert source.kind == "world" and source.renders_any_view
    assert source.caption == make_scene(7).caption
    assert source.frame(0).rgb.shape == (16, 16, 3)


def test_open_source_rejects_options_the_reader_does_not_take(tmp_path):
    write_video(tmp_path / "clip.mp4", indexed_frames(3))
    with pytest.raises(SourceError, match=r"clip\.mp4.*split do not apply to a video source"):
        open_source(tmp_path / "clip.mp4", split="val")


# ---------------------------------------------------------------- the inspect command


def test_inspect_prints_a_dnerf_folder(tmp_path, capsys):
    write_dnerf(tmp_path / "scene")
    assert main(["inspect", str(tmp_path / "scene"), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "kind:        dnerf" in out
    assert "frames:      8" in out
    assert "time range:  0.0000 .. 1.0000 (5 distinct times)" in out
    assert "resolution:  8x6" in out
    assert "8 distinct pose(s), fov_x 40.0 deg" in out

    assert main(["inspect", str(tmp_path / "scene"), "--split", "test", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "dnerf" and summary["frames"] == 2 and summary["time_range"] == [0.5, 0.75]


def test_inspect_video_with_stride(tmp_path, capsys):
    write_video(tmp_path / "clip.mp4", indexed_frames(12))
    assert main(["inspect", str(tmp_path / "clip.mp4"), "--stride", "2"]) == 0
    out = capsys.readouterr().out
    assert "kind:        video" in out and "frames:      6" in out and "cameras:     unknown" in out


def test_inspect_bad_folder_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("nothing here")
    assert main(["inspect", str(tmp_path / "junk")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fourdistill inspect: error: ") and str(tmp_path / "junk") in lines[0]
    assert "not a known 4D source" in lines[0]


def test_inspect_bad_dnerf_json_exits_2_naming_file_and_field(tmp_path, capsys):
    write_dnerf(tmp_path / "scene")
    meta = json.loads((tmp_path / "scene" / "transforms_train.json").read_text())
    meta["frames"][1]["time"] = 1.5
    (tmp_path / "scene" / "transforms_train.json").write_text(json.dumps(meta))
    assert main(["inspect", str(tmp_path / "scene")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "transforms_train.json [frames[1].time]" in err and "outside [0, 1]" in err


def test_sources_package_and_commands_import_without_heavy_libraries():
    code = (
        "import sys, fourdistill.commands.inspect, fourdistill.sources;"
        "print(sorted(m for m in ('av', 'PIL', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
