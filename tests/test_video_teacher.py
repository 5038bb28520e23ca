"""The video teacher: an AnimateDiff MotionAdapter on the embedded stack's U-Net, and the loader's
Zeroscope / ModelScope path, checked against the image U-Net and against diffusers' own pipelines."""

import json
import shutil

import numpy as np
import pytest
import torch

from fourdistill.teachers.image.load import NO_NETWORK, SHIPPED_STACK, StackLoadError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stack_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(SHIPPED_STACK), subfolder="unet").eval()


def _randomise_outputs(adapter, seed=1, std=0.05):
    """Non-zero output projections, as after training: the frames then mix."""
    from fourdistill.teachers.video.model import motion_transformers

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in motion_transformers(adapter):
            m.proj_out.weight.normal_(0, std)
            m.proj_out.bias.normal_(0, std)


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory, stack_unet):
    """A random MotionAdapter for the embedded stack, saved in float16 as the shipped one is."""
    from fourdistill.teachers.video.model import build_motion_adapter

    adapter = build_motion_adapter(stack_unet, seed=0)
    _randomise_outputs(adapter)
    folder = tmp_path_factory.mktemp("adapter") / "motion_adapter"
    adapter.to(torch.float16).save_pretrained(folder)
    return folder


def _inputs(b=2, frames=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, frames, 16, 16, generator=g)
    text = torch.randn(b, 77, 128, generator=g)
    t = torch.tensor([900, 300])[:b]
    return x, t, text


# ------------------------------------------------------------------------------------ model


def test_untrained_adapter_is_the_image_unet_on_every_frame(stack_unet):
    from diffusers import MotionAdapter, UNetMotionModel

    from fourdistill.teachers.video.model import (adapter_kwargs, build_motion_adapter, build_motion_unet,
                                                  motion_parameters, motion_transformers, video_unet_output)

    kw = adapter_kwargs(stack_unet)
    assert kw["block_out_channels"] == (64, 128, 128) and kw["motion_layers_per_block"] == 1
    assert kw["motion_norm_num_groups"] == 16 and kw["motion_max_seq_length"] >= 32
    # diffusers' MotionAdapter does not zero its output projections; AnimateDiff does, and so do we
    assert any(m.proj_out.weight.abs().sum() > 0 for m in motion_transformers(MotionAdapter(**kw)))
    adapter = build_motion_adapter(stack_unet)
    assert all(float(m.proj_out.weight.detach().abs().sum() + m.proj_out.bias.detach().abs().sum()) == 0 for m in motion_transformers(adapter))

    model = build_motion_unet(stack_unet, adapter).eval()
    assert isinstance(model, UNetMotionModel)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [id(p) for p in trainable] == [id(p) for p in motion_parameters(model)]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in adapter.parameters())

    x, t, text = _inputs()
    b, c, f = x.shape[:3]
    with torch.no_grad():
        video = video_unet_output(model, x, t, text)
        frames = stack_unet(x.permute(0, 2, 1, 3, 4).flatten(0, 1), t.repeat_interleave(f),
                            encoder_hidden_states=text.repeat_interleave(f, dim=0)).sample
    frames = frames.reshape(b, f, c, 16, 16).permute(0, 2, 1, 3, 4)
    assert video.shape == x.shape
    torch.testing.assert_close(video, frames, atol=2e-5, rtol=1e-4)


def test_frames_attend_to_each_other_once_the_adapter_is_not_zero(stack_unet):
    from fourdistill.teachers.video.model import build_motion_adapter, build_motion_unet, video_unet_output

    x, t, text = _inputs()
    y = x.clone()
    y[:, :, 0] += 1.0  # change frame 0 of each clip
    for trained in (False, True):
        adapter = build_motion_adapter(stack_unet)
        if trained:
            _randomise_outputs(adapter)
        model = build_motion_unet(stack_unet, adapter).eval()
        with torch.no_grad():
            a, b = video_unet_output(model, x, t, text), video_unet_output(model, y, t, text)
        others = (a[:, :, 1:] - b[:, :, 1:]).abs().amax(dim=(1, 3, 4))  # (B, F - 1)
        assert float((a[:, :, 0] - b[:, :, 0]).abs().max()) > 1e-2
        if trained:
            assert bool((others > 1e-4).all()), others  # every other frame of each clip sees frame 0
        else:
            assert float(others.max()) < 1e-5  # the frames are denoised independently


def test_extract_adapter_round_trips_the_motion_weights(stack_unet):
    from fourdistill.teachers.video.model import build_motion_adapter, build_motion_unet, extract_adapter

    adapter = build_motion_adapter(stack_unet, seed=3)
    _randomise_outputs(adapter, seed=4)
    model = build_motion_unet(stack_unet, adapter)
    back = extract_adapter(model, torch.float16)
    def public(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert back.dtype == torch.float16 and public(back.config) == public(adapter.config)
    for k, v in adapter.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v.half())


# ------------------------------------------------------------------------------------ AnimateDiff


def test_adapter_folder_loads_through_animatediff_pipeline_and_samples_a_clip(adapter_folder, tmp_path, monkeypatch):
    from diffusers import AnimateDiffPipeline, DPMSolverMultistepScheduler, MotionAdapter, UNetMotionModel
    from PIL import Image

    from fourdistill.teachers.video import load as video_load
    from fourdistill.teachers.video.sample import sample_clips, write_clips

    calls = []
    real = AnimateDiffPipeline.from_pretrained

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(video_load.AnimateDiffPipeline, "from_pretrained", spy)
    teacher = video_load.load_video_teacher(str(adapter_folder))
    assert len(calls) == 1 and calls[0][0][0] == str(SHIPPED_STACK)
    assert isinstance(calls[0][1]["motion_adapter"], MotionAdapter)
    assert teacher.kind == "animatediff" and isinstance(teacher.unet, UNetMotionModel)
    assert isinstance(teacher.scheduler, DPMSolverMultistepScheduler) and teacher.scheduler.config.prediction_type == "v_prediction"
    assert teacher.max_frames == 32 and teacher.num_frames == 16  # no trained length recorded: AnimateDiff's
    assert teacher.unet.dtype == torch.float32
    saved = MotionAdapter.from_pretrained(str(adapter_folder)).state_dict()
    loaded = teacher.unet.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(loaded[k], v.float())

    caption = ["a red cube spinning"]
    clips = sample_clips(teacher, caption, num_frames=8, steps=3, guidance=5.0, guidance_rescale=0.0, seed=0)
    assert clips.shape == (1, 8, 64, 64, 3) and 0 <= float(clips.min()) and float(clips.max()) <= 1
    # the same clip from diffusers' own AnimateDiff sampling loop, from the same initial noise
    pipe = AnimateDiffPipeline(vae=teacher.vae, text_encoder=teacher.text_encoder, tokenizer=teacher.tokenizer,
                               unet=teacher.unet, motion_adapter=None, scheduler=teacher.scheduler)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 8, 4, 16, 16), generator=torch.Generator().manual_seed(0)).permute(0, 2, 1, 3, 4)
    theirs = pipe(caption, num_frames=8, height=64, width=64, num_inference_steps=3, guidance_scale=5.0,
                  latents=noise, output_type="np").frames
    np.testing.assert_allclose(np.asarray(theirs), clips.numpy(), atol=1e-4)
    # the frames differ (the clip moves: random motion modules mix noise differently per frame)
    assert float((clips[0, 0] - clips[0, -1]).abs().max()) > 1e-3

    gif = write_clips(tmp_path / "clip.gif", torch.cat([clips, clips]))
    mp4 = write_clips(tmp_path / "clip.mp4", clips)
    with Image.open(gif) as im:
        assert im.n_frames == 8 and im.size == (2 * 64 + 3 * 2, 64 + 2 * 2)
    assert mp4.stat().st_size > 0


def test_trained_length_is_read_from_the_adapter_folder(adapter_folder, tmp_path):
    from fourdistill.teachers.video.load import VIDEO_INFO_NAME, VideoLoadError, load_video_teacher

    folder = tmp_path / "adapter"
    shutil.copytree(adapter_folder, folder)
    (folder / VIDEO_INFO_NAME).write_text(json.dumps({"num_frames": 8}))
    assert load_video_teacher(str(folder)).num_frames == 8
    (folder / VIDEO_INFO_NAME).write_text(json.dumps({"num_frames": "eight"}))
    with pytest.raises(VideoLoadError, match=rf"{VIDEO_INFO_NAME}: num_frames must be a positive integer"):
        load_video_teacher(str(folder))


# ------------------------------------------------------------------------------------ Zeroscope


def _zeroscope_folder(root):
    """A tiny UNet3DConditionModel with the embedded stack's tokenizer, text encoder and VAE, in
    the layout of cerspense/zeroscope_v2_576w (TextToVideoSDPipeline's model_index.json, a
    DDIM epsilon scheduler)."""
    from diffusers import DDIMScheduler, UNet3DConditionModel

    from fourdistill.diffusion.schedule import noise_schedule

    folder = root / "zeroscope"
    folder.mkdir()
    for part in ("vae", "text_encoder", "tokenizer"):
        shutil.copytree(SHIPPED_STACK / part, folder / part)
    torch.manual_seed(0)
    unet = UNet3DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=128, attention_head_dim=8, norm_num_groups=8,
    )
    unet.save_pretrained(folder / "unet")
    DDIMScheduler(**noise_schedule(), clip_sample=False).save_pretrained(folder / "scheduler")
    index = {"_class_name": "TextToVideoSDPipeline", "_diffusers_version": "0.42.1",
             "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet3DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_zeroscope_folder_loads_part_by_part_and_predicts(tmp_path):
    from diffusers import DPMSolverMultistepScheduler, UNet3DConditionModel

    from fourdistill.teachers.video.load import load_video_teacher, predict
    from fourdistill.teachers.video.sample import sample_clips

    folder = _zeroscope_folder(tmp_path)
    teacher = load_video_teacher(str(folder))
    assert teacher.kind == "zeroscope" and isinstance(teacher.unet, UNet3DConditionModel)
    assert isinstance(teacher.scheduler, DPMSolverMultistepScheduler) and teacher.scheduler.config.prediction_type == "epsilon"
    assert teacher.num_frames == 24 and teacher.max_frames is None
    saved = UNet3DConditionModel.from_pretrained(str(folder), subfolder="unet").state_dict()
    for k, v in teacher.unet.state_dict().items():
        torch.testing.assert_close(v, saved[k])

    x, t, text = _inputs(frames=5)
    with torch.no_grad():
        out = predict(teacher, x, t, text)
        # the clip's frames see each other through UNet3D's temporal layers
        y = x.clone()
        y[:, :, 0] += 1.0
        other = predict(teacher, y, t, text)
    assert out.shape == x.shape
    assert float((out[:, :, 1:] - other[:, :, 1:]).abs().max()) > 1e-4

    # the sampling loop against diffusers' (deprecated) TextToVideoSDPipeline on the same parts
    from diffusers import TextToVideoSDPipeline

    clips = sample_clips(teacher, ["a blue sphere bouncing"], num_frames=4, steps=2, guidance=5.0, seed=0)
    pipe = TextToVideoSDPipeline(vae=teacher.vae, text_encoder=teacher.text_encoder, tokenizer=teacher.tokenizer,
                                 unet=teacher.unet, scheduler=teacher.scheduler)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 4, 4, 16, 16), generator=torch.Generator().manual_seed(0)).permute(0, 2, 1, 3, 4)
    theirs = pipe(["a blue sphere bouncing"], num_frames=4, height=64, width=64, num_inference_steps=2,
                  guidance_scale=5.0, latents=noise, output_type="np").frames
    np.testing.assert_allclose(np.asarray(theirs), clips.numpy(), atol=1e-4)


# ------------------------------------------------------------------------------------ bad input


def test_a_clip_longer_than_the_frame_positions_is_refused(adapter_folder):
    from fourdistill.teachers.video.load import load_video_teacher, predict
    from fourdistill.teachers.video.model import ClipLengthError
    from fourdistill.teachers.video.sample import sample_clips

    teacher = load_video_teacher(str(adapter_folder))
    x, t, text = _inputs(frames=33)
    with pytest.raises(ClipLengthError, match=r"^latents: a clip of 33 frames is longer than the motion adapter's motion_max_seq_length 32"):
        predict(teacher, x, t, text)
    with pytest.raises(ClipLengthError, match=r"^num_frames: a clip of 40 frames"):
        sample_clips(teacher, ["a red cube"], num_frames=40, steps=1)
    with pytest.raises(ClipLengthError, match=r"^num_frames: a clip needs at least 1 frame"):
        sample_clips(teacher, ["a red cube"], num_frames=0, steps=1)
    with pytest.raises(ValueError, match=r"^latents: expected \(B, C, F, H, W\)"):
        predict(teacher, x[:, :, 0], t, text)
    with pytest.raises(ValueError, match=r"^text_states: expected \(2, L, D\)"):
        predict(teacher, x[:, :, :8], t, text[:1])


def test_folders_of_no_known_layout_are_named(tmp_path, adapter_folder, stack_unet):
    from fourdistill.teachers.video.load import VideoLoadError, load_video_teacher
    from fourdistill.teachers.video.model import build_motion_adapter, MotionConfig

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoLoadError, match=rf"^{empty}: no config.json or model_index.json \(expected an AnimateDiff motion adapter"):
        load_video_teacher(str(empty))
    with pytest.raises(VideoLoadError, match=r"its unet is a UNet2DConditionModel \(an image stack: pass it as base="):
        load_video_teacher(str(SHIPPED_STACK))
    with pytest.raises(VideoLoadError, match=r"config.json is a UNet2DConditionModel, not a video teacher"):
        load_video_teacher(str(SHIPPED_STACK / "unet"))
    with pytest.raises(VideoLoadError, match=r"no such folder"):
        load_video_teacher(str(tmp_path / "missing" / "adapter"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"^{broken / 'config.json'}: damaged model config: not valid JSON"):
        load_video_teacher(str(broken))
    weightless = tmp_path / "weightless"
    shutil.copytree(adapter_folder, weightless)
    (weightless / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(VideoLoadError, match=r"diffusion_pytorch_model.safetensors: missing weight file \(the motion adapter's\)"):
        load_video_teacher(str(weightless))
    # an adapter built for another U-Net does not fit the embedded stack
    other = tmp_path / "other"
    build_motion_adapter({"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 8},
                         MotionConfig()).save_pretrained(other)
    with pytest.raises(VideoLoadError, match=rf"^{other}: does not fit the image stack"):
        load_video_teacher(str(other))
    with pytest.raises(VideoLoadError, match=r"do not pass base"):
        load_video_teacher(str(_zeroscope_folder(tmp_path)), base="embedded")


def test_unreachable_hub_ids_say_no_network(adapter_folder):
    from fourdistill.teachers.video.load import load_video_teacher

    with pytest.raises(StackLoadError, match=NO_NETWORK):
        load_video_teacher("fourdistill-nonexistent/motion-adapter-that-is-not-cached")
    with pytest.raises(StackLoadError, match=NO_NETWORK):  # a hub base for a local adapter
        load_video_teacher(str(adapter_folder), base="fourdistill-nonexistent/stack-that-is-not-cached")


# ------------------------------------------------------------------------------------ training


def test_video_training_command_runs_resumes_exactly_and_writes_a_loadable_adapter(tmp_path, capsys):
    import yaml
    from safetensors.torch import load_file

    from fourdistill.cli import main
    from fourdistill.teachers.load import load_teacher
    from fourdistill.teachers.video.load import VIDEO_INFO_NAME

    shipped = yaml.safe_load(open("configs/teachers/video.yaml"))
    assert shipped["kind"] == "video" and shipped["n_frames"] == 8
    config = tmp_path / "video.yaml"
    config.write_text(yaml.safe_dump({**shipped, "data": {"n_scenes": 3, "views_per_scene": 1}, "n_frames": 4,
                                      "batch": 2, "warmup_steps": 1, "cooldown_steps": 0, "checkpoint_every": 1,
                                      "eval_scenes": 0}))

    def train(out, steps, *extra):
        assert main(["teachers", "train", "--config", str(config), "--out", str(out), "--steps", str(steps), "--no-progress", *extra]) == 0

    train(tmp_path / "straight", 3)
    train(tmp_path / "split", 2)
    train(tmp_path / "split", 3, "--resume")
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "trainable.safetensors"))
    assert set(a) == set(b) and a and all(".motion_modules." in k for k in a)  # only the motion modules train
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(r)["loss"] for r in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in ("straight", "split")]
    assert len(losses[0]) == 3 and losses[0] == losses[1]

    folder = tmp_path / "split" / "teacher"
    info = json.loads((folder / VIDEO_INFO_NAME).read_text())
    assert info["num_frames"] == 4 and info["base"] == "embedded" and info["adapter_dtype"] == "float16"
    teacher = load_teacher("video", folder)
    assert teacher.kind == "animatediff" and teacher.num_frames == 4
    # the output projections moved off zero, and the saved adapter is the trained one (float16)
    weights = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values())
    proj = [k for k in weights if k.endswith("proj_out.weight")]
    assert proj and any(float(weights[k].float().abs().max()) > 0 for k in proj)
    assert set(b) <= set(weights)  # and the frame-position tables (buffers)
    for k, v in weights.items():
        assert torch.equal(teacher.unet.state_dict()[k], v.float())
    for k in b:
        assert torch.equal(weights[k], b[k].half())
    assert "3 steps" in (folder / "README.md").read_text()
    capsys.readouterr()


def test_video_training_refuses_a_clip_longer_than_the_adapter_takes(tmp_path):
    from fourdistill.engine.config import config_from_dict
    from fourdistill.teachers.finetune import FinetuneConfig, finetune
    from fourdistill.teachers.video.model import ClipLengthError

    cfg = config_from_dict(FinetuneConfig, {"kind": "video", "data": {"n_scenes": 1, "views_per_scene": 1}, "n_frames": 33,
                                            "batch": 1, "steps": 1, "eval_scenes": 0}, "test")
    with pytest.raises(ClipLengthError, match=r"^n_frames: a clip of 33 frames is longer than the motion adapter's motion_max_seq_length 32"):
        finetune(tmp_path / "run", cfg, progress=False)


def test_sample_command_writes_a_clip_video(adapter_folder, tmp_path, capsys):
    from PIL import Image

    from fourdistill.cli import main

    out = tmp_path / "clips.gif"
    assert main(["teachers", "sample", "--kind", "video", "--model", str(adapter_folder), "--caption", "a red cube spinning",
                 "--caption", "a blue ball growing", "--steps", "2", "--threads", "1", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.n_frames == 16 and im.size == (2 * 64 + 3 * 2, 64 + 2 * 2)  # AnimateDiff's 16 frames, 2 clips side by side
    assert "wrote" in capsys.readouterr().out
    assert main(["teachers", "sample", "--kind", "video", "--model", str(adapter_folder), "--out", str(tmp_path / "clips.png")]) != 0
    assert f"--out {tmp_path / 'clips.png'}: a video teacher writes a video" in capsys.readouterr().err
