"""Fitting a field: PSNR rises, checkpoints reload and resume exactly, bad input, FieldSource."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from fourdistill.cameras import Camera, orbit_camera
from fourdistill.field.field import Field4D
from fourdistill.field.hash_grid import HashGridConfig
from fourdistill.field.checkpoint import field_metadata, load_checkpoint, save_checkpoint
from fourdistill.field.reconstruct import ReconstructConfig, load_views, open_for_reconstruction, reconstruct
from fourdistill.field.render import OccupancyConfig, OccupancyGrid, RenderConfig, render_image
from fourdistill.field.source import FieldSource
from fourdistill.sources.base import Frame, FrameInfo, Source, SourceError
from fourdistill.world import EVAL_SEEDS, export_dnerf, make_scene

from test_field import small_config

RES = 20


def tiny_config(**overrides) -> ReconstructConfig:
    """Small grids and batches so that a few steps run in seconds."""
    grid = dict(n_levels=4, n_features_per_level=2, log2_hashmap_size=14, per_level_scale=2.0)
    field = dataclasses.replace(
        ReconstructConfig().field,
        static_grid=HashGridConfig(n_input_dims=3, base_resolution=8, **grid),
        dynamic_grid=HashGridConfig(n_input_dims=4, base_resolution=4, **grid),
        hidden_dim=32,
    )
    base = dict(
        steps=40,
        samples_per_step=8192,
        max_rays_per_step=1024,
        field=field,
        render=RenderConfig(n_samples=48),
        occupancy=OccupancyConfig(resolution=16, time_bins=4, warmup_steps=16, update_every=8),
        eval_every=0,
        checkpoint_every=0,
        video_frames=4,
        lr_mlp=1e-2,
        lr_final_ratio=0.1,  # the default 1/100 suits 1000 steps; over 40 it leaves the fit half its steps
        static_steps=10,
    )
    base.update(overrides)
    return ReconstructConfig(**base)


@pytest.fixture(scope="module")
def dnerf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene") / "dnerf"
    export_dnerf(make_scene(EVAL_SEEDS[3]), folder, resolution=RES, n_train=16, n_val=2, n_test=4)
    return folder


@pytest.fixture(scope="module")
def fitted(dnerf, tmp_path_factory):
    """A run folder fitted for 40 steps, and its metrics."""
    out = tmp_path_factory.mktemp("fit") / "run"
    train, ti, test, tei = open_for_reconstruction(dnerf)
    metrics = reconstruct(train, out, tiny_config(eval_every=20), ti, test, tei, progress=False, log=lambda *_: None)
    return out, metrics


def test_fitting_raises_psnr(fitted):
    out, metrics = fitted
    history = metrics["history"]
    assert [h["step"] for h in history] == [20, 40]
    assert all(set(h) == {"step", "wall_s", "train_psnr", "test_psnr"} for h in history)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40] and all(r["wall_s"] > 0 and np.isfinite(r["loss"]) for r in rows)
    first, last = history[0]["test_psnr"], metrics["test"]["mean"]["psnr"]
    card = (out / "checkpoint" / "README.md").read_text()
    assert "40 steps" in card and "wall time" in card and f"PSNR {last:.2f} dB" in card
    assert last > first + 0.5, history
    assert (out / "video.mp4").stat().st_size > 0 and (out / "test_views.png").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["mean"]["psnr"] == pytest.approx(last)
    assert len(saved["test"]["psnr"]) == 4 and "masked_psnr" in saved["test"]


def test_untrained_field_scores_lower(dnerf, fitted):
    out, metrics = fitted
    field, grid, meta = load_checkpoint(out)
    untrained = Field4D(field.config)
    train, _, test, tei = open_for_reconstruction(dnerf)
    views = load_views(test, tei)
    from fourdistill.field.reconstruct import evaluate

    before = evaluate(untrained, None, views, meta["render_config"])["mean"]["psnr"]
    after = evaluate(field, grid, views, meta["render_config"])["mean"]["psnr"]
    assert after > before + 2.0
    assert after == pytest.approx(metrics["test"]["mean"]["psnr"], abs=1e-4)


def test_checkpoint_reloads_and_renders_the_same_image(tmp_path):
    field = Field4D(small_config(background="solid", background_color=(0.1, 0.2, 0.3)))
    opt = torch.optim.Adam(field.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(4096, 3, generator=g) * 2 - 1, torch.rand(4096, generator=g)
    for _ in range(5):  # move the weights away from their initial values
        sigma, rgb = field(x, t)
        loss = ((sigma - 20 * (x.norm(dim=-1) < 0.5).float()) ** 2).mean() + ((rgb - x.abs()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    render = RenderConfig(n_samples=64)
    grid = OccupancyGrid(OccupancyConfig(resolution=16, time_bins=4), 1.0, 0.05)
    grid.refresh(field, 0)
    save_checkpoint(tmp_path / "ckpt", field, grid, field_metadata(field.config, render, grid.config, orbit=None))
    loaded, loaded_grid, meta = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(loaded_grid.occupied, grid.occupied)
    cam = orbit_camera(40.0, 25.0, 3.2, 40.0, 24, 24)
    a = render_image(field, cam, 0.4, render, grid)
    b = render_image(loaded, cam, 0.4, meta["render_config"], loaded_grid)
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["opacity"], b["opacity"])
    assert not torch.allclose(a["rgb"], render_image(Field4D(field.config), cam, 0.4, render)["rgb"], atol=1e-3)
    source = FieldSource(tmp_path / "ckpt")
    frame = source.render(cam, 0.4)
    assert np.array_equal(frame.rgb, a["rgb"].clamp(0, 1).numpy())


def test_resume_continues_exactly(dnerf, tmp_path):
    train, ti, test, tei = open_for_reconstruction(dnerf)
    quiet = dict(progress=False, write_video=False, log=lambda *_: None)
    straight = tmp_path / "straight"
    reconstruct(train, straight, tiny_config(steps=12), ti, **quiet)
    split = tmp_path / "split"
    stopped = reconstruct(train, split, tiny_config(steps=12), ti, stop_at=6, **quiet)
    assert stopped["stopped"] and load_checkpoint(split)[2]["step"] == 6
    with pytest.raises(ValueError, match="--resume"):
        reconstruct(train, split, tiny_config(steps=12), ti, **quiet)
    reconstruct(train, split, tiny_config(steps=12), ti, resume=True, **quiet)
    a, ga, ma = load_checkpoint(straight)
    b, gb, mb = load_checkpoint(split)
    assert ma["step"] == mb["step"] == 12
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name
    assert torch.equal(ga.opacity_ema, gb.opacity_ema)
    with pytest.raises(ValueError, match="settings differ"):
        reconstruct(train, split, tiny_config(steps=14, render=RenderConfig(n_samples=32)), ti, resume=True, **quiet)


def test_a_run_written_before_the_engine_still_loads_and_resumes(dnerf, tmp_path):
    """Runs of the layout before the engine: optimizer and generator inside train_state.pt,
    "elapsed_s", no optimizer.pt, no config.json."""
    train, ti, _, _ = open_for_reconstruction(dnerf)
    quiet = dict(progress=False, write_video=False, log=lambda *_: None, tensorboard=False)
    reconstruct(train, tmp_path / "straight", tiny_config(steps=12), ti, **quiet)
    old = tmp_path / "old"
    reconstruct(train, old, tiny_config(steps=12), ti, stop_at=6, **quiet)
    ckpt = old / "checkpoint"
    state = torch.load(ckpt / "train_state.pt", weights_only=True)
    legacy = {
        "step": 6,
        "optimizer": torch.load(ckpt / "optimizer.pt", weights_only=True),
        "generator": state["rng"]["generators"]["train"],
        "history": [],
        "elapsed_s": 2.0,
        "rays_per_step": state["extra"]["rays_per_step"],
        "config": json.dumps(tiny_config(steps=12).to_dict()),
    }
    torch.save(legacy, ckpt / "train_state.pt")
    (ckpt / "optimizer.pt").unlink()
    (old / "config.json").unlink()
    meta = json.loads((ckpt / "field.json").read_text())
    del meta["wall_s"]
    (ckpt / "field.json").write_text(json.dumps(meta))
    assert load_checkpoint(old)[2]["step"] == 6 and FieldSource(old).step == 6
    with pytest.raises(ValueError, match="--resume"):
        reconstruct(train, old, tiny_config(steps=12), ti, **quiet)
    with pytest.raises(ValueError, match="cannot resume: lr_grid"):
        reconstruct(train, old, tiny_config(steps=12, lr_grid=1e-3), ti, resume=True, **quiet)
    reconstruct(train, old, tiny_config(steps=12), ti, resume=True, **quiet)
    a, b = load_checkpoint(tmp_path / "straight")[0], load_checkpoint(old)[0]
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name


def test_all_equal_times_fit_a_static_field(dnerf, tmp_path):
    folder = tmp_path / "static"
    export_dnerf(make_scene(EVAL_SEEDS[3]), folder, resolution=RES, n_train=8, n_val=1, n_test=2)
    for split in ("train", "test", "val"):
        path = folder / f"transforms_{split}.json"
        meta = json.loads(path.read_text())
        for fr in meta["frames"]:
            fr["time"] = 0.25
        path.write_text(json.dumps(meta))
    messages = []
    train, ti, test, tei = open_for_reconstruction(folder)
    metrics = reconstruct(train, tmp_path / "run", tiny_config(steps=4), ti, test, tei, progress=False, write_video=False, log=messages.append)
    assert metrics["static"] and "static field" in metrics["static_reason"]
    assert any("static field" in m for m in messages)
    field, grid, meta = load_checkpoint(tmp_path / "run")
    assert field.dynamic_grid is None and grid.occupied.shape[0] == 1
    assert "0.25" in meta["static_reason"]


def test_camera_that_misses_the_box_is_named(dnerf, tmp_path):
    import shutil

    folder = tmp_path / "away"
    shutil.copytree(dnerf, folder)
    path = folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    c2w = np.array(meta["frames"][3]["transform_matrix"])
    c2w[:3, 3] *= 30.0  # far away ...
    c2w[:3, 2] *= -1.0  # ... and looking away
    c2w[:3, 0] *= -1.0
    meta["frames"][3]["transform_matrix"] = c2w.tolist()
    path.write_text(json.dumps(meta))
    train, ti, _, _ = open_for_reconstruction(folder)
    with pytest.raises(SourceError) as err:
        reconstruct(train, tmp_path / "run", tiny_config(steps=2), ti, progress=False, write_video=False)
    assert "r_003" in str(err.value) and "transform_matrix" in str(err.value) and "scene box" in str(err.value)


class ArraySource(Source):
    """Frames held in memory (the smallest possible posed source)."""

    kind = "arrays"

    def __init__(self, images, cameras, times):
        self.images, self.cameras, self.times = images, cameras, times
        self.name = "arrays"

    def infos(self):
        return [FrameInfo(i, t, c, file=f"frame_{i}.png") for i, (c, t) in enumerate(zip(self.cameras, self.times))]

    def frame(self, index):
        return Frame(self.images[index], self.times[index], self.cameras[index])


def test_zero_size_and_unposed_images_are_refused(tmp_path):
    cam = orbit_camera(0.0, 20.0, 3.2, 40.0, 8, 8)
    empty = ArraySource([np.zeros((0, 8, 3), np.float32)], [cam], [0.0])
    with pytest.raises(SourceError, match="frame_0.png.*non-empty"):
        load_views(empty, [0])
    unposed = ArraySource([np.zeros((8, 8, 3), np.float32)], [None], [0.0])
    with pytest.raises(SourceError, match="no camera pose"):
        load_views(unposed, [0])
    wrong = ArraySource([np.zeros((6, 8, 3), np.float32)], [cam], [0.0])
    with pytest.raises(SourceError, match="6 but its camera is 8x8|8x6 but its camera is 8x8"):
        load_views(wrong, [0])


def test_fitted_field_is_a_source_for_pair_sampling(fitted):
    from fourdistill.pairs import PairConfig, PairSampler
    from fourdistill.sources import open_source

    out, _ = fitted
    source = open_source(out)
    assert isinstance(source, FieldSource) and source.renders_any_view
    assert source.caption == make_scene(EVAL_SEEDS[3]).caption
    assert source.orbit.radius[0] >= 2.9 and source.orbit.radius[1] <= 3.5
    summary = source.summary()
    assert summary.kind == "field" and summary.frames == 8 * 16 and summary.resolution == (RES, RES)
    frame = source.frame(5)
    assert frame.rgb.shape == (RES, RES, 3) and frame.mask.shape == (RES, RES) and frame.depth.shape == (RES, RES)
    sampler = PairSampler([source], PairConfig(mode="joint", resolution=16), seed=0)
    batch = sampler.batch(3)
    assert batch.target.shape == (3, 3, 16, 16) and batch.reference.shape == (3, 3, 16, 16)
    assert bool(batch.pose_known.all())
    assert float(batch.target.std()) > 0.05  # a rendered scene, not a blank
    # the same pair twice gives the same images: rendering is deterministic
    again = PairSampler([source], PairConfig(mode="joint", resolution=16), seed=0).batch(3)
    assert torch.equal(batch.target, again.target)


def test_command_line(dnerf, tmp_path, capsys):
    from fourdistill.cli import main

    out = tmp_path / "cli"
    threads = torch.get_num_threads()
    try:
        assert main(["reconstruct", str(dnerf), "--out", str(out), "--steps", "3", "--samples-per-step", "4096", "--quiet", "--no-video", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "test PSNR" in text and (out / "checkpoint" / "field.safetensors").is_file()
    assert main(["reconstruct", str(dnerf), "--out", str(out), "--steps", "3", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nsamples_per_stepp: 4096\n")
    assert main(["reconstruct", str(dnerf), "--out", str(tmp_path / "y"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "samples_per_stepp" in err and not (tmp_path / "y").exists()
    assert main(["reconstruct", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main(["reconstruct", str(dnerf), "--out", str(tmp_path / "x"), "--background", "2,0,0"]) == 2
    assert main(["inspect", str(out)]) == 0
    assert "kind:        field" in capsys.readouterr().out


def test_distillation_runs_straight_from_a_fitted_field(fitted, tmp_path):
    """The seed's title: 4D-to-2D distillation from a spatiotemporal implicit representation.
    A field fitted to a training scene trains the mappers; one fitted to a held-out scene is
    refused by the library itself, before anything is written."""
    from fourdistill.distill import DistillConfig, run
    from fourdistill.sources.base import SourceError

    from tiny_models import tiny_stack_folder

    scene = tmp_path / "train_scene"
    export_dnerf(make_scene(7), scene, resolution=RES, n_train=8, n_val=1, n_test=2)
    train, ti, test, tei = open_for_reconstruction(scene)
    field = tmp_path / "train_field"
    reconstruct(train, field, tiny_config(steps=4), ti, test, tei, progress=False, log=lambda *_: None)
    stack = tiny_stack_folder(tmp_path)
    held_out, _ = fitted
    with pytest.raises(SourceError, match="held out for evaluation"):
        run(DistillConfig(source=str(held_out), model=str(stack), out=str(tmp_path / "leak")), progress=False)
    assert not (tmp_path / "leak").exists()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = DistillConfig(source=str(field), model=str(stack), mode="joint", steps=2, batch_size=2, grad_accum=1, out=str(tmp_path / "d"), validate_every=0)
        summary = run(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == 2 and all(np.isfinite(summary["losses"]))
    assert (tmp_path / "d" / "checkpoint" / "mappers.json").is_file()
