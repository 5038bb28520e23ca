"""The demo's functions (what its buttons call), without a browser: the same images as the
library, the grid and its video, a field rendered at any camera, and user errors as messages."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from fourdistill.app import (
    Demo,
    check_eval_seed,
    error_message,
    generate_image,
    load_field,
    make_reference,
    render_field,
    sweep_grid,
)
from fourdistill.cameras import OrbitRange, orbit_camera
from fourdistill.cli import main
from fourdistill.field.checkpoint import field_metadata, orbit_to_dict, save_checkpoint
from fourdistill.field.field import Field4D
from fourdistill.field.render import OccupancyConfig, OccupancyGrid, RenderConfig, render_image
from fourdistill.generate import ControlledPipeline, ViewChange, world_reference
from fourdistill.io import to_uint8
from fourdistill.sources.base import SourceError

from test_field import small_config

pytestmark = pytest.mark.usefixtures("one_thread")
SEED = 1_000_002


@pytest.fixture(scope="module")
def cp():
    torch.set_num_threads(1)
    return ControlledPipeline.from_pretrained()


@pytest.fixture(scope="module")
def reference(cp):
    return make_reference(cp.size[0], SEED)


# ----------------------------------------------------------------------------- references
def test_a_world_reference_is_the_scene_render_and_its_caption(cp, reference):
    world = world_reference(SEED, size=cp.size[0])
    np.testing.assert_array_equal(reference.image, world.image)
    assert reference.caption == world.caption and reference.world is not None
    assert make_reference(cp.size[0], SEED, caption="  my words ").caption == "my words"


def test_only_held_out_seeds_are_offered():
    assert check_eval_seed(1_000_999.0) == 1_000_999
    for bad in (3, 1_001_000, 1_000_000.5, None, float("nan")):
        with pytest.raises(ValueError, match="1000000..1000999"):
            check_eval_seed(bad)


def test_an_upload_is_composited_resized_and_needs_a_caption(cp):
    rgba = np.zeros((100, 80, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:50, :, 3] = 255  # top half opaque red, bottom half transparent
    ref = make_reference(cp.size[0], image=rgba, caption="a red wall")
    assert ref.image.shape == (cp.size[0], cp.size[0], 3) and ref.world is None
    assert ref.image[2, 32].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.02)  # red where opaque
    assert ref.image[-2, 32].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.02)  # white where transparent
    with pytest.raises(ValueError, match="caption"):
        make_reference(cp.size[0], image=rgba, caption=" ")
    with pytest.raises(ValueError, match="RGB or RGBA"):
        make_reference(cp.size[0], image=np.zeros((8, 8, 2), np.uint8), caption="x")


# ----------------------------------------------------------------------------- generation
def test_generate_returns_what_the_library_returns_and_the_truth(cp, reference):
    generated, truth = generate_image(cp, reference, d=0.25, azimuth=20.0, elevation=-10.0, steps=2, guidance=5.0, seed=3)
    view = ViewChange(azimuth_deg=20.0, elevation_deg=-10.0)
    expected = cp(reference.caption, reference.image, time=0.25, view=view, num_inference_steps=2, guidance_scale=5.0, seed=3)
    assert generated.dtype == np.uint8 and generated.shape == (64, 64, 3)
    np.testing.assert_array_equal(generated, to_uint8(expected[0]))
    np.testing.assert_array_equal(truth, to_uint8(reference.world.truth(0.25, view, 64)))
    _, grey = generate_image(cp, reference, d=0.75, steps=1)  # t = 1.25 is outside the scene's time
    assert (grey == 128).all()


def test_an_upload_has_no_truth(cp):
    ref = make_reference(cp.size[0], image=np.full((64, 64, 3), 200, np.uint8), caption="a grey box")
    generated, truth = generate_image(cp, ref, d=0.5, steps=1)
    assert generated.shape == (64, 64, 3) and truth is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d=1.5), "time displacement d must lie in"),
        (dict(azimuth=float("nan")), "azimuth must be a number"),
        (dict(steps=0), "steps must be a whole number"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(guidance=-1.0), "guidance must be"),
        (dict(seed=-1), "noise seed"),
    ],
)
def test_bad_settings_are_named(cp, reference, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_image(cp, reference, **{"steps": 1, **kwargs})


def test_the_sweep_is_the_time_view_grid_and_its_video(cp, reference, tmp_path):
    calls = []
    image, files = sweep_grid(cp, reference, tmp_path / "sweep", n=2, steps=1, progress=lambda f, desc: calls.append((f, desc)))
    side = 64 + 2
    assert image.dtype == np.uint8 and image.shape == (2 * side + 2, 3 * side + 2, 3)
    assert [p.name for p in files] == ["grid.png", "grid.mp4", "grid.gif"] and all(p.stat().st_size > 0 for p in files)
    assert [f for f, _ in calls] == [0.0, 0.5, 1.0]
    deltas, azimuths, grid = cp.time_view_grid(reference.caption, reference.image, [-1.0, 1.0], [-90.0, 90.0], num_inference_steps=1)
    cell = image[2 + side : 2 + side + 64, 2 + side : 2 + side + 64]  # row d = +1, column azimuth -90
    assert np.abs(cell.astype(int) - to_uint8(grid[1, 0]).astype(int)).max() <= 1
    with pytest.raises(ValueError, match="grid size"):
        sweep_grid(cp, reference, tmp_path / "bad", n=1, steps=1)


# ----------------------------------------------------------------------------- fields
@pytest.fixture(scope="module")
def field_folder(tmp_path_factory):
    torch.manual_seed(0)
    field = Field4D(small_config(blob_scale=10.0, blob_radius=0.5))
    grid = OccupancyGrid(OccupancyConfig(resolution=8, time_bins=2), field.bound, 0.05)
    orbit = OrbitRange(elevation_deg=(20.0, 30.0), radius=(3.0, 3.4))
    meta = field_metadata(field.config, RenderConfig(n_samples=32), grid.config, orbit=orbit_to_dict(orbit), caption="a tiny blob",
                          resolution=[24, 24])
    return save_checkpoint(tmp_path_factory.mktemp("field") / "run" / "checkpoint", field, grid, meta).parent


def test_a_field_renders_at_any_time_and_camera(field_folder):
    loaded = load_field(field_folder)
    view = loaded.default_view()
    assert view == {"time": 0.5, "azimuth": 0.0, "elevation": 25.0, "radius": 3.2, "size": 24}
    assert "a tiny blob" in loaded.summary()
    image = render_field(loaded, 0.3, 40.0, 20.0, 3.0, 16)
    assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
    expected = render_image(loaded.field, orbit_camera(40.0, 20.0, 3.0, 40.0, 16, 16), 0.3, loaded.meta["render_config"], loaded.grid)["rgb"]
    np.testing.assert_array_equal(image, to_uint8(expected.numpy()))
    assert not np.array_equal(image, render_field(loaded, 0.3, 130.0, 20.0, 3.0, 16))


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(time01=1.5), "time must lie in"), (dict(radius=-1.0), "radius must be positive"),
     (dict(size=4), "size must be"), (dict(elevation=90.0), "elevation must lie")],
)
def test_bad_field_cameras_are_named(field_folder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_field(load_field(field_folder), **{"size": 16, **kwargs})


def test_a_folder_that_is_not_a_field_is_a_message(tmp_path):
    with pytest.raises(SourceError, match="not a field checkpoint") as info:
        load_field(tmp_path)
    assert "not a field checkpoint" in error_message(info.value) and "\n" not in error_message(info.value)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_field(tmp_path / "missing")
    with pytest.raises(ValueError, match="type the path"):
        load_field("  ")


def test_the_demo_reopens_a_field_when_the_path_changes(field_folder, tmp_path):
    demo = Demo(out_dir=tmp_path)
    a = demo.render(str(field_folder), 0.5, 0.0, 25.0, 3.2, 16)
    assert demo._field is not None and demo._field.path == field_folder
    np.testing.assert_array_equal(a, demo.render(str(field_folder / "checkpoint"), 0.5, 0.0, 25.0, 3.2, 16))
    assert demo._field.path == field_folder / "checkpoint"


def test_error_messages_are_one_line():
    assert error_message(ValueError("bad d")) == "bad d"
    assert error_message(RuntimeError("out of memory")) == "RuntimeError: out of memory"
    assert error_message(KeyError()) == "KeyError"


# ----------------------------------------------------------------------------- the command
def test_the_command_checks_its_flags_before_starting(capsys):
    assert main(["app", "--port", "0"]) == 2
    assert "--port must lie in 1..65535" in capsys.readouterr().err
    assert main(["app", "--steps", "0"]) == 2
    assert "--steps must lie in 1..1000" in capsys.readouterr().err

    assert main(["app", "--host", " "]) == 2
    assert "--host is empty" in capsys.readouterr().err


def test_without_gradio_the_command_says_what_to_install(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert main(["app"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[app]"' in err


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="needs gradio: pip install -e \".[app]\"")
def test_the_page_builds_with_both_tabs(tmp_path):
    import gradio as gr

    page = __import__("fourdistill.app", fromlist=["build_app"]).build_app(Demo(out_dir=tmp_path))
    assert isinstance(page, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"generate", "sweep", "time", "azimuth", "elevation", "generated", "truth", "grid", "video", "field-path", "field-render"} <= ids
