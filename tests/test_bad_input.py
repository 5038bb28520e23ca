"""Bad 4D data: every reader fails with a SourceError naming the file (and field), writing nothing."""

import json

import numpy as np
import pytest
from PIL import Image
from source_fixtures import ENCODABLE_VIDEO_KINDS, folder_listing, indexed_frames, write_dnerf, write_nerfstudio, write_video

from fourdistill.sources import (
    DNeRFSource,
    FramesFolderSource,
    NerfstudioSource,
    SourceError,
    VideoSource,
    open_source,
)


def expect_error(open_call, path, field_name=None, match=None, folder=None):
    """Run `open_call`; it must raise SourceError naming `path` (and `field_name`), writing nothing.

    Returns the error for further checks.
    """
    before = folder_listing(folder) if folder is not None else None
    with pytest.raises(SourceError) as info:
        open_call()
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    if field_name is not None:
        assert err.field_name == field_name
        assert f"[{field_name}]" in str(err)
    if match is not None:
        assert match in err.problem, err.problem
    assert "\n" not in str(err)
    if folder is not None:
        assert folder_listing(folder) == before
    return err


def rewrite_json(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


# ---------------------------------------------------------------- videos


@pytest.mark.parametrize("kind", ENCODABLE_VIDEO_KINDS, ids=[k[0] for k in ENCODABLE_VIDEO_KINDS])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_video(tmp_path, kind, keep):
    path = tmp_path / f"clip{kind[0]}"
    write_video(path, indexed_frames(12))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    expect_error(lambda: open_source(path), path, folder=tmp_path)


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_truncated_video_with_index_first(tmp_path, suffix):
    """With the index at the front (faststart) the header is intact and the frame data is cut."""
    path = tmp_path / f"clip{suffix}"
    write_video(path, indexed_frames(12), faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    expect_error(lambda: VideoSource(path), path, match="truncated", folder=tmp_path)


def test_corrupt_video(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expect_error(lambda: open_source(path), path, match="not a readable video", folder=tmp_path)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    expect_error(lambda: open_source(empty), empty, match="not a readable video")


def test_video_with_one_frame(tmp_path):
    path = tmp_path / "one.mp4"
    write_video(path, indexed_frames(1))
    expect_error(lambda: open_source(path), path, match="at least 2 frames", folder=tmp_path)
    gif = tmp_path / "one.gif"
    write_video(gif, indexed_frames(1))
    expect_error(lambda: open_source(gif), gif, match="at least 2 frames")


def test_video_stride_leaving_one_frame(tmp_path):
    path = tmp_path / "short.mp4"
    write_video(path, indexed_frames(3))
    err = expect_error(lambda: VideoSource(path, stride=3), path, match="at least 2 frames")
    assert "stride 3" in err.problem


def test_frames_folder_with_mixed_sizes(tmp_path):
    for i in range(4):
        size = (16, 12) if i != 2 else (16, 14)
        Image.fromarray(np.full((size[1], size[0], 3), 30 * i, dtype=np.uint8)).save(tmp_path / f"f{i}.png")
    expect_error(lambda: open_source(tmp_path), tmp_path / "f2.png", match="16x14", folder=tmp_path)


def test_frames_folder_with_unreadable_image(tmp_path):
    for i in range(3):
        Image.fromarray(indexed_frames(3)[i]).save(tmp_path / f"{i}.png")
    (tmp_path / "1.png").write_bytes(b"not a png at all")
    expect_error(lambda: FramesFolderSource(tmp_path), tmp_path / "1.png", match="unreadable image", folder=tmp_path)


def test_frames_folder_with_one_image(tmp_path):
    Image.fromarray(indexed_frames(1)[0]).save(tmp_path / "only.png")
    expect_error(lambda: open_source(tmp_path), tmp_path, match="at least 2 images")


# ---------------------------------------------------------------- D-NeRF


@pytest.fixture
def scene(tmp_path):
    write_dnerf(tmp_path / "scene")
    return tmp_path / "scene"


def test_dnerf_missing_image(scene):
    (scene / "train" / "r_001.png").unlink()
    expect_error(lambda: open_source(scene), scene / "train" / "r_001.png", "frames[1].file_path", "missing", folder=scene)


def test_dnerf_unreadable_image(scene):
    (scene / "train" / "r_002.png").write_bytes(b"\x89PNG garbage")
    expect_error(lambda: DNeRFSource(scene), scene / "train" / "r_002.png", "frames[2].file_path", "unreadable image", folder=scene)


def test_dnerf_truncated_image_fails_when_decoded(scene):
    """The header is intact, so the source opens; the cut pixel data fails at decode."""
    path = scene / "train" / "r_000.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = DNeRFSource(scene)
    expect_error(lambda: source.frame(0), path, "frames[0].file_path", "unreadable image", folder=scene)


def test_dnerf_invalid_json(scene):
    path = scene / "transforms_train.json"
    path.write_text('{"camera_angle_x": 0.7, "frames": [')
    expect_error(lambda: open_source(scene), path, match="invalid JSON at line 1", folder=scene)


def test_dnerf_json_without_frames(scene):
    path = scene / "transforms_train.json"
    rewrite_json(path, lambda m: m.pop("frames"))
    expect_error(lambda: open_source(scene), path, "frames", "no 'frames'")
    rewrite_json(path, lambda m: m.update(frames=[]))
    expect_error(lambda: open_source(scene), path, "frames", "is empty")
    rewrite_json(path, lambda m: m.update(frames={"0": {}}))
    expect_error(lambda: open_source(scene), path, "frames", "must be a list")


@pytest.mark.parametrize(
    "matrix, match",
    [
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "must be 4x4, got 3x4"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], "must be 4x4, got 4x3"),
        ([[1, 0, 0, 0], [0, 1, 0, float("nan")], [0, 0, 1, 0], [0, 0, 0, 1]], "non-finite"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, float("inf")], [0, 0, 0, 1]], "non-finite"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, "2"], [0, 0, 0, 1]], "only numbers"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], "bottom row"),
        ("eye", "4x4 list"),
    ],
)
def test_dnerf_bad_transform_matrix(scene, matrix, match):
    path = scene / "transforms_train.json"
    rewrite_json(path, lambda m: m["frames"][1].update(transform_matrix=matrix))
    expect_error(lambda: open_source(scene), path, "frames[1].transform_matrix", match, folder=scene)


def test_dnerf_missing_transform_matrix(scene):
    path = scene / "transforms_train.json"
    rewrite_json(path, lambda m: m["frames"][2].pop("transform_matrix"))
    expect_error(lambda: open_source(scene), path, "frames[2].transform_matrix", "missing")


@pytest.mark.parametrize(
    "time, match",
    [(-0.1, "outside [0, 1]"), (1.5, "outside [0, 1]"), (float("nan"), "outside [0, 1]"), ("0.5", "must be a number"), (True, "must be a number")],
)
def test_dnerf_bad_time(scene, time, match):
    path = scene / "transforms_train.json"
    rewrite_json(path, lambda m: m["frames"][2].update(time=time))
    expect_error(lambda: open_source(scene), path, "frames[2].time", match, folder=scene)


def test_dnerf_time_on_some_frames_only(scene):
    path = scene / "transforms_train.json"
    rewrite_json(path, lambda m: m["frames"][1].pop("time"))
    expect_error(lambda: open_source(scene), path, "frames[1].time", "on every frame or on none")
    val = scene / "transforms_val.json"  # no frame has a time; giving one to frame 2 is mixed too
    rewrite_json(val, lambda m: m["frames"][2].update(time=0.3))
    expect_error(lambda: DNeRFSource(scene, split="val"), val, "frames[2].time", "on every frame or on none")


def test_dnerf_missing_camera_angle(scene):
    path = scene / "transforms_train.json"
    rewrite_json(path, lambda m: m.pop("camera_angle_x"))
    expect_error(lambda: open_source(scene), path, "camera_angle_x", "no focal length")
    rewrite_json(path, lambda m: m.update(camera_angle_x=-1.0))
    expect_error(lambda: open_source(scene), path, "camera_angle_x", "must be positive")


def test_dnerf_mixed_image_sizes(scene):
    path = scene / "train" / "r_002.png"
    Image.fromarray(np.zeros((7, 8, 4), dtype=np.uint8), "RGBA").save(path)
    expect_error(lambda: open_source(scene), path, "frames[2].file_path", "8x7", folder=scene)


def test_dnerf_missing_split(scene):
    (scene / "transforms_val.json").unlink()
    expect_error(lambda: DNeRFSource(scene, split="val"), scene / "transforms_val.json", match="no val split")


def test_dnerf_bad_file_path_field(scene):
    path = scene / "transforms_train.json"
    rewrite_json(path, lambda m: m["frames"][0].update(file_path=3))
    expect_error(lambda: open_source(scene), path, "frames[0].file_path", "non-empty string")


# ---------------------------------------------------------------- nerfstudio


@pytest.fixture
def capture(tmp_path):
    write_nerfstudio(tmp_path / "cap")
    return tmp_path / "cap"


def test_nerfstudio_not_a_pinhole_camera(capture):
    path = capture / "transforms.json"
    rewrite_json(path, lambda m: m.update(camera_model="OPENCV_FISHEYE"))
    expect_error(lambda: open_source(capture), path, "camera_model", "not a pinhole camera", folder=capture)


def test_nerfstudio_size_differs_from_w_h(capture):
    rewrite_json(capture / "transforms.json", lambda m: m["frames"][1].update(w=12))
    expect_error(lambda: NerfstudioSource(capture), capture / "images" / "frame_00002.png", "frames[1].w", "width is 10")


def test_nerfstudio_without_focal(capture):
    path = capture / "transforms.json"
    rewrite_json(path, lambda m: m.pop("fl_x"))
    expect_error(lambda: open_source(capture), path, "fl_x", "no focal length")


def test_nerfstudio_bad_transform_and_missing_mask(capture):
    path = capture / "transforms.json"
    rewrite_json(path, lambda m: m["frames"][0].update(transform_matrix=[[1, 0, 0, 0]] * 3))
    expect_error(lambda: open_source(capture), path, "frames[0].transform_matrix", "4x4")
    write_nerfstudio(capture)
    rewrite_json(path, lambda m: m["frames"][2].update(mask_path="masks/m2.png"))
    expect_error(lambda: open_source(capture), capture / "masks" / "m2.png", "frames[2].mask_path", "missing")


def test_nerfstudio_without_frames(capture):
    path = capture / "transforms.json"
    rewrite_json(path, lambda m: m.pop("frames"))
    expect_error(lambda: open_source(capture), path, "frames", "no 'frames'")


# ---------------------------------------------------------------- detection and options


def test_folder_of_no_known_kind(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "transforms_extra.json").write_text("{}")
    err = expect_error(lambda: open_source(tmp_path), tmp_path, match="not a known 4D source", folder=tmp_path)
    for kind in ("video file", "D-NeRF folder", "nerfstudio", "image frames", "world:SEED"):
        assert kind in err.problem
    other = tmp_path / "clip.txt"
    other.write_text("x")
    expect_error(lambda: open_source(other), other, match="not a known 4D source")


def test_missing_path(tmp_path):
    expect_error(lambda: open_source(tmp_path / "nope.mp4"), tmp_path / "nope.mp4", match="no such file or folder")
    expect_error(lambda: open_source("world:three"), "world:three", match="must be an integer")


def test_bad_options_are_value_errors(tmp_path, scene):
    write_video(tmp_path / "clip.mp4", indexed_frames(4))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        VideoSource(tmp_path / "clip.mp4", stride=0)
    with pytest.raises(ValueError, match="max_frames must be >= 2"):
        VideoSource(tmp_path / "clip.mp4", max_frames=1)
    with pytest.raises(ValueError, match="split must be one of"):
        DNeRFSource(scene, split="training")
    with pytest.raises(ValueError, match="background must be three numbers"):
        DNeRFSource(scene, background=(2.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="background must be three numbers"):
        DNeRFSource(scene, background="white")


def test_truncated_avi_says_how_many_frames_decode(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, indexed_frames(12))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.9)])
    err = expect_error(lambda: VideoSource(path), path, match="truncated video")
    assert "declares 12 frames" in err.problem
