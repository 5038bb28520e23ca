import json

import numpy as np
import pytest
import torch

from fourdistill.cli import main
from fourdistill.evaluate.reader import (
    ABSENT,
    SHIPPED_READER,
    Reader,
    ReaderConfig,
    ReaderScore,
    ReaderTrainConfig,
    TrainingSet,
    heldout_renders,
    load_reader,
    reader_losses,
    reader_renders,
    reversed_motion_labels,
    save_reader,
    scene_motion_labels,
    score_renders,
    train_reader,
    training_seeds,
    wrap_deg,
)
from fourdistill.world import EVAL_SEEDS, MOTIONS, SHAPES, make_scene


def _small():
    return ReaderConfig(stem_width=8, widths=(16, 16), pose_width=16, pair_width=8, clip_width=8)


def _tiny_run(**changes):
    settings = dict(
        steps=8, pairs=4, clips=2, warmup_steps=2, train_scenes=3, cameras=2, eval_scenes=2, eval_cameras=2, checkpoint_every=4, seed=2, model=_small()
    )
    return ReaderTrainConfig(**{**settings, **changes})


# ----------------------------------------------------------------------------- model and input
def test_reader_is_small_and_reads_every_head():
    reader = Reader()
    n_bytes = sum(p.numel() * p.element_size() for p in reader.parameters())
    assert n_bytes < 3_000_000
    images = torch.rand(3, 3, 64, 64)
    pose = reader.read_pose(images)
    assert set(pose) == {"azimuth_deg", "elevation_deg", "radius"} and all(v.shape == (3,) for v in pose.values())
    assert float(pose["azimuth_deg"].abs().max()) <= 180.0
    pair = reader.read_pair(images, torch.rand(3, 3, 96, 96))  # another square size is resized
    assert all(v.shape == (3,) for v in pair.values())
    clip = reader.read_clip(torch.rand(2, 12, 3, 64, 64))  # longer clips are subsampled
    assert clip["motion_labels"].shape == (2, len(SHAPES)) and clip["p_forward"].shape == (2,)
    assert all(set(m) <= set(SHAPES) and set(m.values()) <= set(MOTIONS) for m in clip["motions"])


def test_a_copy_reads_no_change_and_a_swap_flips_the_signs():
    torch.manual_seed(0)
    reader = Reader(_small())
    a, b = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    copy = reader.read_pair(a, a)
    assert torch.all(copy["relative_azimuth_deg"] == 0) and torch.all(copy["relative_elevation_deg"] == 0)
    assert torch.all(copy["abs_time_delta"] == 0) and torch.all(copy["time_delta"] == 0)
    ab, ba = reader.read_pair(a, b), reader.read_pair(b, a)
    torch.testing.assert_close(ab["abs_time_delta"], ba["abs_time_delta"])
    torch.testing.assert_close(ab["p_forward"], 1.0 - ba["p_forward"])
    torch.testing.assert_close(wrap_deg(ab["relative_azimuth_deg"] + ba["relative_azimuth_deg"] + 1.0), torch.ones(4), atol=1e-3, rtol=0)


def test_bad_input_is_refused_with_the_reason():
    reader = Reader(_small())
    with pytest.raises(ValueError, match="float images in \\[0, 1\\], got torch.uint8"):
        reader.read_pose(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="RGB images .* got 4 channels"):
        reader.read_pose(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="square images .* 64 x 48"):
        reader.read_pose(torch.rand(1, 3, 64, 48))
    with pytest.raises(ValueError, match=r"values in \[0, 1\], got \[-1"):
        reader.read_pose(torch.rand(1, 3, 64, 64) * 2 - 1)
    with pytest.raises(TypeError, match="torch tensor"):
        reader.read_pose(np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reader.read_pose(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="needs clips of at least 8 frames, got 5"):
        reader.read_clip(torch.rand(2, 5, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        reader.read_clip(torch.rand(5, 3, 64, 64))
    with pytest.raises(ValueError, match="as many reference as other"):
        reader.read_pair(torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64))


# ----------------------------------------------------------------------------- truth
def test_labels_name_each_shape_and_a_reversed_clip_swaps_grow_and_shrink():
    scene = make_scene(3)
    labels = scene_motion_labels(scene)
    assert (labels > ABSENT).sum() == len(scene.objects)
    for obj in scene.objects:
        assert labels[SHAPES.index(obj.shape)] == 1 + MOTIONS.index(obj.motion)
    every = torch.arange(1 + len(MOTIONS))
    back = reversed_motion_labels(every, ReaderConfig())
    grow, shrink = 1 + MOTIONS.index("grow"), 1 + MOTIONS.index("shrink")
    assert back[grow] == shrink and back[shrink] == grow
    assert all(back[i] == i for i in range(len(every)) if i not in (grow, shrink))


def test_renders_refuse_evaluation_seeds_and_batches_follow_the_pair_kinds():
    with pytest.raises(ValueError, match="reserved for evaluation"):
        reader_renders([3, EVAL_SEEDS[0]], 2, 8, np.random.default_rng(0))
    seeds = training_seeds(ReaderTrainConfig(train_scenes=300))
    assert len(set(seeds.tolist())) == 300 and not any(int(s) in EVAL_SEEDS for s in seeds)
    config = _tiny_run(pairs=64, train_scenes=2, p_time=0.5, p_view=0.5, p_same=0.0)
    data = reader_renders(training_seeds(config), 2, 8, np.random.default_rng(1))
    assert data.images.shape == (2, 2, 8, 64, 64, 3) and data.images.dtype == np.uint8
    assert np.all(np.diff(data.times, axis=1) > 0) and data.times.min() >= 0 and data.times.max() <= 1
    batch = TrainingSet(data, config).batch(torch.Generator().manual_seed(0))
    assert batch["frames"].shape == (2 * 64 + 2 * 8, 3, 64, 64)
    # time pairs (d != 0, same camera) and view pairs (d == 0, another camera) only
    d = batch["time_delta"]
    same_cam = torch.all(batch["pose"][:64] == batch["pose"][64:128], dim=1)
    assert torch.all((d != 0) == same_cam) and same_cam.any() and (~same_cam).any()


# ----------------------------------------------------------------------------- training
def test_a_few_steps_lower_the_loss_and_the_run_folder_loads(tmp_path):
    config = _tiny_run(steps=30, train_scenes=6, checkpoint_every=10)
    data = TrainingSet(reader_renders(training_seeds(config), 2, 8, np.random.default_rng(5)), config)
    batch = data.batch(torch.Generator().manual_seed(9))
    torch.manual_seed(config.seed)
    with torch.no_grad():
        before = reader_losses(Reader(config.model).eval(), batch, config)["loss"].item()
    reader, report = train_reader(config, out=tmp_path / "run", progress=False, command="test")
    with torch.no_grad():
        after = reader_losses(reader.eval(), batch, config)["loss"].item()
    assert after < before, (before, after)
    assert report["training"]["step"] == 30 and 0.0 <= report["heldout"]["motion"] <= 1.0
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoint").iterdir())
    assert files == ["README.md", "config.json", "optimizer.pt", "reader.safetensors", "train_state.pt"]
    card = (tmp_path / "run" / "checkpoint" / "README.md").read_text()
    assert "steps: 30" in card and "azimuth error, median" in card and "motion class right" in card
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31)) and {"loss", "pose", "time", "motion"} <= set(rows[0])
    probe = torch.rand(2, 3, 64, 64)
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoint"):
        assert torch.equal(load_reader(folder).read_pose(probe)["azimuth_deg"], reader.read_pose(probe)["azimuth_deg"])


def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import fourdistill.evaluate.reader as reader_module

    config = _tiny_run()
    whole, whole_report = train_reader(config, out=tmp_path / "whole", progress=False)
    calls = {"n": 0}
    losses = reader_module.reader_losses

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 7:  # during step 7, after the checkpoint at step 4
            raise KeyboardInterrupt
        return losses(*args)

    monkeypatch.setattr(reader_module, "reader_losses", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_reader(config, out=tmp_path / "cut", progress=False)
    monkeypatch.setattr(reader_module, "reader_losses", losses)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "config.json").read_text())["step"] == 4
    resumed, resumed_report = train_reader(config, out=tmp_path / "cut", progress=False, resume=True)
    a, b = (load_file(str(tmp_path / run / "checkpoint" / "reader.safetensors")) for run in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
    rows = [[(r["step"], r["loss"]) for r in map(json.loads, (tmp_path / run / "log.jsonl").read_text().splitlines())] for run in ("whole", "cut")]
    assert rows[0] == rows[1] and [s for s, _ in rows[0]] == list(range(1, 9))
    assert resumed_report["training"]["final_loss"] == whole_report["training"]["final_loss"]


def test_the_resume_rule_and_the_config_file(tmp_path, capsys):
    from fourdistill.engine.config import ConfigError, RunFolderError, load_config

    out = tmp_path / "run"
    train_reader(_tiny_run(steps=4), out=out, progress=False)
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_reader(_tiny_run(steps=4), out=out, progress=False)
    with pytest.raises(RunFolderError, match="cannot resume: pairs was 4, now 8"):
        train_reader(_tiny_run(steps=4, pairs=8), out=out, progress=False, resume=True)
    assert load_config(ReaderTrainConfig, "configs/reader.yaml") == ReaderTrainConfig()  # the file spells out the defaults
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 5\nmodel: {depth: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.depth'"):
        load_config(ReaderTrainConfig, bad)


def test_reader_commands(tmp_path, capsys):
    good = tmp_path / "tiny.yaml"
    good.write_text(
        "steps: 3\npairs: 2\nclips: 1\nwarmup_steps: 1\ntrain_scenes: 2\ncameras: 2\neval_scenes: 1\neval_cameras: 2\nseed: 4\n"
        "model: {stem_width: 8, widths: [16, 16], pose_width: 16, pair_width: 8, clip_width: 8}\n"
    )
    out = tmp_path / "cli_reader"
    assert main(["reader", "train", "--config", str(good), "--out", str(out), "--quiet"]) == 0
    assert "held-out" in capsys.readouterr().out
    assert "fourdistill reader train --config" in (out / "checkpoint" / "README.md").read_text()
    assert main(["reader", "eval", "--reader", str(out), "--scenes", "1", "--cameras", "2"]) == 0
    assert "azimuth" in capsys.readouterr().out
    # --write puts the new scores into the folder and regenerates its card from them
    assert main(["reader", "eval", "--reader", str(out), "--scenes", "2", "--cameras", "2", "--write"]) == 0
    recorded = json.loads((out / "checkpoint" / "config.json").read_text())
    assert recorded["heldout"]["seeds"] == f"{EVAL_SEEDS.start}..{EVAL_SEEDS.start + 1}" and recorded["training"]["step"] == 3
    card = (out / "checkpoint" / "README.md").read_text()
    assert f"seeds {EVAL_SEEDS.start}..{EVAL_SEEDS.start + 1}" in card and "by what moves" in card
    capsys.readouterr()
    assert main(["reader", "eval", "--reader", str(tmp_path / "missing")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_load_reader_names_the_bad_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_reader(tmp_path / "nothing")
    folder = save_reader(Reader(_small()), tmp_path / "r")
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data["model"]["clip_width"] = 12
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="reader.safetensors: weights do not match"):
        load_reader(folder)
    data["model"]["depth"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"\[model.depth\]: unknown field"):
        load_reader(folder)


# ----------------------------------------------------------------------------- the shipped reader
@pytest.fixture(scope="module")
def shipped():
    return load_reader()


@pytest.fixture(scope="module")
def sample():
    # 16 held-out scenes at cameras and times of another seed than the model card's
    return heldout_renders(scenes=16, cameras=3, seed=7)


@pytest.fixture(scope="module")
def sample_score(shipped, sample):
    return score_renders(shipped, sample)


def test_the_shipped_folder_is_small_and_matches_its_config_file():
    files = sorted(p.name for p in SHIPPED_READER.iterdir())
    assert files == ["README.md", "config.json", "reader.safetensors"]
    assert sum(p.stat().st_size for p in SHIPPED_READER.iterdir()) < 3_000_000
    recorded = json.loads((SHIPPED_READER / "config.json").read_text())
    from fourdistill.engine.config import config_to_dict, load_config

    assert recorded["training"]["config"] == json.loads(json.dumps(config_to_dict(load_config(ReaderTrainConfig, "configs/reader.yaml"))))


# The targets the shipped reader meets on its card's 4800 held-out images (azimuth 1.20 deg, elevation
# 0.42 deg, relative azimuth 1.62 deg); it misses |d| (0.071), motion (0.776) and direction (0.589),
# see its model card, so those have no test here.
TARGETS_MET = ("azimuth_deg", "elevation_deg", "relative_azimuth_deg")


@pytest.mark.parametrize("name", TARGETS_MET)
def test_the_shipped_reader_meets_its_held_out_targets(sample_score, name):
    op, target = ReaderScore.TARGETS[name]
    value = getattr(sample_score, name)
    assert (value <= target if op == "<=" else value >= target), (name, value, sample_score.summary())


def test_copying_the_reference_reads_no_change_slope_zero(shipped, sample):
    ref = torch.from_numpy(sample.images[:, 0, 0]).permute(0, 3, 1, 2).float() / 255.0
    other = torch.from_numpy(sample.images[:, 0, -1]).permute(0, 3, 1, 2).float() / 255.0
    asked = torch.from_numpy(sample.times[:, -1] - sample.times[:, 0]).float()
    copy = shipped.read_pair(ref, ref)
    assert torch.all(copy["abs_time_delta"] == 0) and torch.all(copy["relative_azimuth_deg"] == 0)
    assert np.polyfit(asked.numpy(), copy["abs_time_delta"].numpy(), 1)[0] == 0.0
    # true targets are read as moving: over every same-camera pair of the moving scenes the
    # read |d| follows the asked one (slope 0.54 on this sample: reads shrink toward the middle)
    ia, ib = np.array([(i, j) for i in range(8) for j in range(8) if i < j]).T
    moving = np.flatnonzero(sample.moving)

    def frames(index):
        return torch.from_numpy(sample.images[moving][:, :, index].reshape(-1, 64, 64, 3)).permute(0, 3, 1, 2).float() / 255.0

    asked = np.repeat((sample.times[moving][:, ib] - sample.times[moving][:, ia])[:, None], 3, axis=1).reshape(-1)
    read = shipped.read_pair(frames(ia), frames(ib))["abs_time_delta"].numpy()
    slope = np.polyfit(asked, read, 1)[0]
    assert slope > 0.3, slope
