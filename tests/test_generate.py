import numpy as np
import pytest
import torch
from PIL import Image

from fourdistill.cli import main
from fourdistill.distill import DistillConfig, run
from fourdistill.generate import ControlledPipeline, ViewChange, reference_to_pil, world_reference

from tiny_models import tiny_stack_folder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stack_folder(tmp_path_factory):
    return tiny_stack_folder(tmp_path_factory.mktemp("generate"))


def _mappers(tmp, stack_folder, mode):
    cfg = DistillConfig(model=str(stack_folder), out=str(tmp / mode), mode=mode, steps=2, batch_size=2, grad_accum=1, world_seeds=(0, 20), lr=3e-2)
    run(cfg, progress=False)
    return tmp / mode / "checkpoint"


@pytest.fixture(scope="module")
def joint_folder(tmp_path_factory, stack_folder):
    return _mappers(tmp_path_factory.mktemp("mappers"), stack_folder, "joint")


@pytest.fixture(scope="module")
def joint(joint_folder, stack_folder):
    return ControlledPipeline.from_pretrained(str(stack_folder), joint_folder)


@pytest.fixture(scope="module")
def reference(joint):
    return world_reference(1_000_001, size=joint.size[0]).image


def test_generates_images_in_range_deterministically(joint, reference):
    a = joint("a red cube", reference, time=0.5, num_inference_steps=3)
    b = joint("a red cube", reference, time=0.5, num_inference_steps=3)
    assert a.shape == (1, 64, 64, 3) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    c = joint("a red cube", reference, time=0.5, num_inference_steps=3, seed=1)
    assert not np.array_equal(a, c)


def test_the_control_changes_the_image_and_batches_broadcast(joint, reference):
    images = joint("a red cube", reference, time=[-1.0, 0.0, 1.0], view=ViewChange(azimuth_deg=30.0), num_inference_steps=3)
    assert images.shape[0] == 3
    assert not np.allclose(images[0], images[2])  # the same noise, another d
    one = joint("a red cube", reference, time=-1.0, view=ViewChange(azimuth_deg=30.0), num_inference_steps=3)
    np.testing.assert_allclose(one[0], images[0], atol=1e-5)  # shared noise: a batch row is the single image


def test_each_image_of_a_batch_gets_its_own_reference(joint, reference):
    other = world_reference(1_000_002, size=joint.size[0]).image
    prompts = ["a red cube", "a blue ball"]
    for call in (joint, joint.plain):
        both = call(prompts, [reference, other], time=[0.2, -0.4], num_inference_steps=3)
        for k, (p, r, d) in enumerate(zip(prompts, [reference, other], [0.2, -0.4])):
            np.testing.assert_allclose(both[k], call(p, r, time=d, num_inference_steps=3)[0], atol=1e-4)


def test_conditions_are_computed_once_per_call_and_per_timestep(joint, reference):
    calls = []
    cond = joint.conditioner
    original = cond.forward

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    cond.forward = counted
    seen = []
    handle = joint.pipe.unet.register_forward_pre_hook(lambda m, a, k: seen.append(k["cross_attention_kwargs"]["layer_conditions"].clone()), with_kwargs=True)
    try:
        joint("a red cube", reference, time=[0.2, -0.4], num_inference_steps=4, guidance_scale=3.0)
    finally:
        cond.forward = original
        handle.remove()
    steps = len(joint.pipe.scheduler.timesteps)
    assert calls == [steps * 2]  # one conditioner pass for every (step, image); layers batched inside
    assert len(seen) == steps
    n_layers = cond.n_layers
    assert seen[0].shape[:2] == (n_layers, 4)  # CFG: negative half first, then the mapped conditions
    assert not torch.allclose(seen[0][:, 2:], seen[-1][:, 2:])  # per-timestep conditions differ
    assert not torch.allclose(seen[0][0, 2:], seen[0][1, 2:])  # two layers, two conditions
    torch.testing.assert_close(seen[0][:, :2], seen[-1][:, :2])  # the negative prompt does not depend on t


def test_guidance_keeps_the_image_tokens_in_the_unconditional_pass(joint, reference):
    pil = reference_to_pil(reference, joint.size)
    kept = joint._image_embeds([pil], guided=True, image_in_uncond=True)[0]
    torch.testing.assert_close(kept[0], kept[1])
    dropped = joint._image_embeds([pil], guided=True, image_in_uncond=False)[0]
    assert not torch.allclose(dropped[0], dropped[1])


def test_sweeps_and_grid_shapes(joint, reference):
    d, images = joint.time_sweep("a cube", reference, [-1.0, 0.0, 1.0], num_inference_steps=2)
    assert images.shape[0] == 3 and list(d) == [-1.0, 0.0, 1.0]
    a, images = joint.view_orbit("a cube", reference, [-45.0, 45.0], num_inference_steps=2)
    assert images.shape[0] == 2
    d, a, grid = joint.time_view_grid("a cube", reference, [-0.5, 0.5], [-30.0, 0.0, 30.0], num_inference_steps=2)
    assert grid.shape == (2, 3, 64, 64, 3)


def test_argument_errors(joint, reference, tmp_path):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        joint("a cube", reference, time=1.5, num_inference_steps=2)
    with pytest.raises(ValueError, match="both controls are off"):
        joint("a cube", reference, num_inference_steps=2)
    with pytest.raises(ValueError, match="size 32x32"):
        joint("a cube", np.zeros((32, 32, 3), np.float32), time=0.1, num_inference_steps=2)
    resized = joint("a cube", np.zeros((32, 32, 3), np.float32), time=0.1, num_inference_steps=2, resize=True)
    assert resized.shape == (1, 64, 64, 3)
    rgba = Image.new("RGBA", joint.size)
    with pytest.raises(ValueError, match="mode 'RGBA'"):
        joint("a cube", rgba, time=0.1, num_inference_steps=2)
    path = tmp_path / "ref.png"
    Image.new("L", joint.size).save(path)
    with pytest.raises(ValueError, match=r"ref\.png: mode 'L'"):
        joint("a cube", str(path), time=0.1, num_inference_steps=2)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        joint("a cube", str(tmp_path / "missing.png"), time=0.1, num_inference_steps=2)
    with pytest.raises(ValueError, match="time: 2 values for 3 images"):
        joint(["a", "b", "c"], reference, time=[0.1, 0.2], num_inference_steps=2)
    with pytest.raises(ValueError, match="spherical deltas"):
        joint("a cube", reference, view=ViewChange(relative_pose=np.eye(4).tolist()), num_inference_steps=2)
    with pytest.raises(ValueError, match=r"guidance_rescale must lie in \[0, 1\]"):
        joint("a cube", reference, time=0.1, num_inference_steps=2, guidance_rescale=-0.1)


def test_guidance_rescale_defaults_to_the_stacks_schedule(joint, reference):
    # an epsilon stack with SD 1.x's schedule: plain guidance, unless asked
    plain = joint("a cube", reference, time=0.3, num_inference_steps=2)
    assert np.array_equal(plain, joint("a cube", reference, time=0.3, num_inference_steps=2, guidance_rescale=0.0))
    assert not np.array_equal(plain, joint("a cube", reference, time=0.3, num_inference_steps=2, guidance_rescale=0.7))


def test_a_time_only_checkpoint_refuses_view_control(tmp_path, stack_folder, reference):
    folder = _mappers(tmp_path, stack_folder, "time")
    cp = ControlledPipeline.from_pretrained(str(stack_folder), folder)
    assert cp.has_time and not cp.has_view
    assert cp("a cube", reference, time=0.3, num_inference_steps=2).shape == (1, 64, 64, 3)
    with pytest.raises(ValueError, match="no View Mapper"):
        cp("a cube", reference, view=ViewChange(azimuth_deg=10.0), num_inference_steps=2)
    with pytest.raises(ValueError, match="both a Time and a View Mapper"):
        cp.time_view_grid("a cube", reference, num_inference_steps=2)


def test_generate_command_writes_grids_and_videos(tmp_path, stack_folder, joint, capsys):
    folder = _mappers(tmp_path, stack_folder, "joint")
    base = ["generate", "--model", str(stack_folder), "--mappers", str(folder), "--steps", "2"]
    assert main(base + ["--world", "1000002", "--time", "0.25", "--azimuth", "20", "--out", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").size[0] > 64
    capsys.readouterr()
    assert main(base + ["--world", "1000002", "--sweep", "grid", "--frames", "2", "--out", str(tmp_path / "grid.png")]) == 0
    for suffix in (".png", ".mp4", ".gif"):
        assert (tmp_path / f"grid{suffix}").stat().st_size > 0
    said = capsys.readouterr().out
    assert "rows d = +0.00, +1.00" in said and "the true grid to the right" in said  # reference at t = 0: every target exists
    assert Image.open(tmp_path / "grid.png").size[0] > Image.open(tmp_path / "grid.png").size[1] * 2  # generated | truth
    assert main(base + ["--world", "1000002", "--sweep", "time", "--frames", "3", "--out", str(tmp_path / "wt.png")]) == 0
    assert "d = -0.50, +0.00, +0.50" in capsys.readouterr().out  # from t = 0.5, d stays inside [0, 1]
    assert main(base + ["--world", "1000002", "--time", "0.25", "--no-mappers", "--out", str(tmp_path / "plain.png")]) == 0
    ref = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(ref)
    assert main(base + ["--prompt", "a red cube", "--image", str(ref), "--sweep", "time", "--frames", "3", "--out", str(tmp_path / "t.png")]) == 0
    assert "d = -1.00, +0.00, +1.00" in capsys.readouterr().out
    assert main(base + ["--prompt", "a red cube", "--image", str(ref), "--time", "2", "--out", str(tmp_path / "bad.png")]) == 2
    assert "[-1, 1]" in capsys.readouterr().err


def test_plain_generation_is_the_same_call_without_the_mappers(joint, reference):
    plain = joint.plain("a red cube", reference, time=0.9, num_inference_steps=3)
    again = joint.plain("a red cube", reference, num_inference_steps=3)
    np.testing.assert_array_equal(plain, again)  # time is ignored
    mapped = joint("a red cube", reference, time=0.9, num_inference_steps=3)
    assert not np.allclose(plain, mapped)


def test_the_shipped_mappers_run_on_the_embedded_stack(tmp_path):
    """`fourdistill generate --prompt ... --image ref.png --time 0.5` with every default."""
    from fourdistill.generate import SHIPPED_MAPPERS

    assert (SHIPPED_MAPPERS / "README.md").is_file() and (SHIPPED_MAPPERS / "mappers.safetensors").stat().st_size < 5_000_000
    ref = tmp_path / "ref.png"
    Image.fromarray((world_reference(1_000_005).image * 255 + 0.5).astype(np.uint8)).save(ref)
    out = tmp_path / "g.png"
    assert main(["generate", "--prompt", "a red cube spinning", "--image", str(ref), "--time", "0.5", "--steps", "4", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 64


def _direct(stack_folder, folder, bypass_alphas=None):
    """A ControlledPipeline over a conditioner built by hand from the checkpoint's files, with
    the layer processors installed directly: what `load_mappers` must amount to."""
    from safetensors.torch import load_file

    from fourdistill.conditioning.processors import install_layer_processors
    from fourdistill.mappers.checkpoint import WEIGHTS_NAME, build_conditioner, read_mapper_config
    from fourdistill.teachers.image.load import load_stack

    pipe = load_stack(str(stack_folder), ip_adapter=True)
    pipe.set_progress_bar_config(disable=True)
    config = read_mapper_config(folder)
    if bypass_alphas is not None:
        config = {**config, "bypass": dict(zip(("time_alpha", "view_alpha"), bypass_alphas))}
    install_layer_processors(pipe.unet)
    cond = build_conditioner(config, pipe.text_encoder, pipe.tokenizer, load_file(str(folder / WEIGHTS_NAME))).eval()
    return ControlledPipeline(pipe, conditioner=cond)


def test_load_mappers_returns_what_it_builds_and_generates_as_a_direct_construction(stack_folder, joint_folder, reference):
    from fourdistill.mappers.checkpoint import LoadedMappers, load_mappers
    from fourdistill.teachers.image.load import load_stack

    pipe = load_stack(str(stack_folder), ip_adapter=True)
    pipe.set_progress_bar_config(disable=True)
    attributes = set(vars(pipe))
    loaded = load_mappers(pipe, joint_folder)
    assert isinstance(loaded, LoadedMappers) and loaded.layers == loaded.config["layers"]
    assert set(vars(pipe)) == attributes
    with pytest.raises(ValueError, match="no mappers"):
        ControlledPipeline(pipe)
    kw = dict(time=[0.5, -0.3], view=ViewChange(azimuth_deg=30.0), num_inference_steps=3, seed=3, ip_adapter_scale=0.5)
    cp = ControlledPipeline(pipe, loaded)
    assert cp.trained_ip_scale == ControlledPipeline(pipe, joint_folder).trained_ip_scale
    np.testing.assert_array_equal(cp("a red cube", reference, **kw), _direct(stack_folder, joint_folder)("a red cube", reference, **kw))


def test_the_bypass_is_switched_off_per_call_as_zero_alphas_would(joint, stack_folder, joint_folder, reference):
    kw = dict(time=[0.5, -0.3], view=ViewChange(azimuth_deg=30.0), num_inference_steps=3, seed=3, ip_adapter_scale=0.5)
    alphas = (joint.conditioner.bypass_config.time_alpha, joint.conditioner.bypass_config.view_alpha)
    off = joint("a red cube", reference, textual_bypass=False, **kw)
    assert (joint.conditioner.bypass_config.time_alpha, joint.conditioner.bypass_config.view_alpha) == alphas
    np.testing.assert_array_equal(off, _direct(stack_folder, joint_folder, bypass_alphas=(0.0, 0.0))("a red cube", reference, **kw))
    assert not np.array_equal(off, joint("a red cube", reference, **kw))
