"""The training engine: atomic checkpoints, clear errors, the --resume rule, configs, exact resume."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from fourdistill.engine import checkpoint as ckpt_mod
from fourdistill.engine.cards import card_text, write_card
from fourdistill.engine.checkpoint import CheckpointError, capture_rng, has_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from fourdistill.engine.config import (
    ConfigError,
    RunFolderError,
    add_common_flags,
    config_from_args,
    config_to_dict,
    load_config,
    start_run,
)
from fourdistill.engine.loop import Loop, NonFiniteLossError, RunLog, step_generators
from fourdistill.engine.schedules import constant, exponential_decay, warmup_cooldown


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}


def _save(folder, seed=0, step=1):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    return save_checkpoint(folder, step=step, wall_s=1.5, model=_state(seed), optimizer=opt.state_dict(), rng=capture_rng(),
                           extra={"note": "x"}, meta={"kind": "test"})


# ----------------------------------------------------------------------------- atomic writes
def test_a_failure_before_the_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint"
    _save(folder, seed=0, step=1)
    real_replace = os.replace

    def failing(src, dst):
        if ".tmp-" in str(src):  # moving the new checkpoint into place
            raise OSError("disk full (injected)")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", failing)
    with pytest.raises(OSError, match="injected"):
        _save(folder, seed=1, step=2)
    monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)
    loaded = load_checkpoint(folder)
    assert loaded.step == 1 and loaded.wall_s == 1.5 and loaded.meta["kind"] == "test" and loaded.extra == {"note": "x"}
    assert all(torch.equal(loaded.model[k], v) for k, v in _state(0).items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # nothing left behind


def test_a_failure_while_writing_leaves_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder, seed=0, step=1)

    def crash(tmp):
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        save_checkpoint(folder, step=2, model=_state(1), write=crash)
    assert load_checkpoint(folder).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_stale_folders_of_an_interrupted_write_are_cleaned_or_recovered(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder, seed=0, step=1)
    # a process killed mid-write leaves its temporary folder ...
    (tmp_path / ".checkpoint.tmp-dead").mkdir()
    (tmp_path / ".checkpoint.tmp-dead" / "model.safetensors").write_bytes(b"half")
    _save(folder, seed=1, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    # ... and one killed between its two renames leaves the previous checkpoint aside
    os.replace(folder, tmp_path / ".checkpoint.old-dead")
    (tmp_path / ".checkpoint.tmp-new").mkdir()
    assert has_checkpoint(folder)
    loaded = load_checkpoint(folder)
    assert loaded.step == 2 and all(torch.equal(loaded.model[k], v) for k, v in _state(1).items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "train_state.pt", "checkpoint.json"])
def test_a_damaged_file_is_named(tmp_path, name):
    folder = _save(tmp_path / "checkpoint")
    path = folder / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert isinstance(err.value, ValueError) and str(err.value).startswith(str(path)) and "damaged" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_training_state_is_named(tmp_path):
    folder = _save(tmp_path / "checkpoint")
    (folder / "train_state.pt").unlink()
    with pytest.raises(CheckpointError, match="train_state.pt: training state is missing"):
        load_checkpoint(folder)
    assert load_checkpoint(folder, training=False).model is not None  # inference does not need it


def test_a_truncated_field_checkpoint_is_one_line_from_the_cli(tmp_path, capsys):
    from fourdistill.cli import main
    from fourdistill.field.checkpoint import field_metadata
    from fourdistill.field.checkpoint import save_checkpoint as save_field
    from fourdistill.field.field import Field4D
    from fourdistill.field.render import OccupancyConfig, OccupancyGrid, RenderConfig

    from test_field import small_config

    field_ = Field4D(small_config())
    grid = OccupancyGrid(OccupancyConfig(resolution=8, time_bins=2), 1.0, 0.05)
    folder = save_field(tmp_path / "run" / "checkpoint", field_, grid, field_metadata(field_.config, RenderConfig(), grid.config, orbit=None))
    weights = folder / "field.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["inspect", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "field.safetensors" in err and "truncated" in err


# ----------------------------------------------------------------------------- random state
def test_rng_states_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng({"g": g})
    torch.save(state, tmp_path / "s.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9), g.manual_seed(9)
    restore_rng(torch.load(tmp_path / "s.pt", weights_only=True), {"g": g})
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == first


def test_step_generators_depend_on_seed_step_and_process_only():
    a = step_generators(0, 5, 0)
    b = step_generators(0, 5, 0)
    assert a[0].random() == b[0].random() and torch.equal(torch.rand(3, generator=a[1]), torch.rand(3, generator=b[1]))
    others = [step_generators(1, 5, 0), step_generators(0, 6, 0), step_generators(0, 5, 1)]
    x = step_generators(0, 5, 0)[0].random()
    assert all(o[0].random() != x for o in others)


# ----------------------------------------------------------------------------- configs
@dataclass
class Inner:
    width: int = 4
    scale: float = 1.0


@dataclass
class TinyConfig:
    steps: int = 8
    seed: int = 0
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    name: str | None = None
    save_every: int = 4
    inner: Inner = field(default_factory=Inner)
    out: str = "runs/tiny"

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError("lr must be positive")


def test_yaml_and_json_configs_load_alike(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"lr": 0.5, "betas": [0.8, 0.9], "inner": {"width": 8}, "name": "x"}))
    (tmp_path / "a.yaml").write_text("lr: 0.5\nbetas: [0.8, 0.9]\ninner:\n  width: 8\nname: x\n")
    a, b = load_config(TinyConfig, tmp_path / "a.json"), load_config(TinyConfig, tmp_path / "a.yaml")
    assert a == b == TinyConfig(lr=0.5, betas=(0.8, 0.9), inner=Inner(width=8), name="x")
    assert isinstance(a.betas, tuple) and isinstance(a.inner, Inner)


def test_an_unknown_key_or_a_wrong_type_is_named_with_its_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lr": 0.5, "learning_rate": 1.0}))
    with pytest.raises(ConfigError, match=r"bad.json: unknown key 'learning_rate'"):
        load_config(TinyConfig, bad)
    bad.write_text(json.dumps({"inner": {"widht": 3}}))
    with pytest.raises(ConfigError, match=r"bad.json: unknown key 'inner.widht'"):
        load_config(TinyConfig, bad)
    bad.write_text(json.dumps({"steps": "ten"}))
    with pytest.raises(ConfigError, match=r"bad.json: steps: expected int, got 'ten'"):
        load_config(TinyConfig, bad)
    bad.write_text(json.dumps({"steps": 2.5}))
    with pytest.raises(ConfigError, match="steps: expected int"):
        load_config(TinyConfig, bad)
    bad.write_text(json.dumps({"betas": [0.9]}))
    with pytest.raises(ConfigError, match="betas: expected 2 values"):
        load_config(TinyConfig, bad)
    bad.write_text(json.dumps({"lr": -1}))
    with pytest.raises(ConfigError, match="bad.json: .*lr must be positive"):
        load_config(TinyConfig, bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_config(TinyConfig, bad)


def test_flags_given_override_the_file(tmp_path):
    import argparse

    (tmp_path / "c.json").write_text(json.dumps({"steps": 20, "seed": 3, "lr": 0.5}))
    parser = argparse.ArgumentParser()
    add_common_flags(parser, TinyConfig())
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args(["--config", str(tmp_path / "c.json"), "--seed", "7"])
    cfg = config_from_args(TinyConfig, args, {"lr": args.lr, "inner.scale": 2.0})
    assert (cfg.steps, cfg.seed, cfg.lr, cfg.inner.scale, cfg.out) == (20, 7, 0.5, 2.0, "runs/tiny")
    assert not args.resume
    assert config_from_args(TinyConfig, parser.parse_args(["--steps", "3"])) == TinyConfig(steps=3)


# ----------------------------------------------------------------------------- the --resume rule
def test_a_fresh_run_refuses_a_folder_holding_a_run(tmp_path):
    out = start_run(tmp_path / "run", TinyConfig(), resume=False, command="x")
    assert json.loads((out / "config.json").read_text()) == {"config": config_to_dict(TinyConfig()), "command": "x"}
    with pytest.raises(RunFolderError) as err:
        start_run(tmp_path / "run", TinyConfig(), resume=False)
    assert str(tmp_path / "run") in str(err.value) and "--resume" in str(err.value) and "another --out" in str(err.value)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint").mkdir()  # a run from before config.json existed
    with pytest.raises(RunFolderError, match="--resume"):
        start_run(tmp_path / "old", TinyConfig(), resume=False)


def test_a_resumed_run_refuses_a_changed_setting_and_names_it(tmp_path):
    start_run(tmp_path / "run", TinyConfig(), resume=False)
    start_run(tmp_path / "run", TinyConfig(steps=20, save_every=2, out="elsewhere"), resume=True)  # may change
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["steps"] == 20
    with pytest.raises(RunFolderError, match=r"cannot resume: lr was 0.1, now 0.2"):
        start_run(tmp_path / "run", TinyConfig(lr=0.2), resume=True)
    with pytest.raises(RunFolderError, match=r"cannot resume: inner.width was 4, now 5"):
        start_run(tmp_path / "run", TinyConfig(inner=Inner(width=5)), resume=True)
    with pytest.raises(RunFolderError, match=r"cannot resume: betas was \[0.9, 0.99\], now \[0.9, 0.98\]"):
        start_run(tmp_path / "run", TinyConfig(betas=(0.9, 0.98)), resume=True)


# ----------------------------------------------------------------------------- exact resume
def _train(out, steps, stop_at=None, resume=False, cfg=None):
    """A small model trained with every source of randomness a trainer uses: per-step
    generators, the global torch / numpy / python generators and dropout."""
    cfg = cfg or TinyConfig(steps=steps)
    start_run(out, cfg, resume)
    torch.manual_seed(cfg.seed), np.random.seed(cfg.seed), random.seed(cfg.seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched = warmup_cooldown(2, cfg.steps, 2)
    start, wall = 0, 0.0
    if resume and has_checkpoint(out / "checkpoint"):
        c = load_checkpoint(out / "checkpoint")
        model.load_state_dict(c.model), opt.load_state_dict(c.optimizer), restore_rng(c.rng)
        start, wall = c.step, c.wall_s
    log = RunLog(out, main="loss", tensorboard=False)
    log.truncate(start)

    def save(done):
        save_checkpoint(out / "checkpoint", step=done, wall_s=loop.wall_s, model=model.state_dict(), optimizer=opt.state_dict(), rng=capture_rng())

    loop = Loop(cfg.steps, start_step=start, wall_s=wall, progress=False, log=log, save=save, save_every=cfg.save_every, stop_at=stop_at)
    losses = []
    for step in loop:
        np_rng, gen = step_generators(cfg.seed, step)
        x = torch.randn(8, 4, generator=gen) + float(np_rng.normal()) + float(np.random.rand()) + random.random()
        for group in opt.param_groups:
            group["lr"] = cfg.lr * sched(step)
        loss = ((model(x) - x.sum(-1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        loop.log(step + 1, loss=losses[-1])
    return model, losses, loop


def test_a_tiny_loop_resumes_bit_for_bit(tmp_path):
    straight, losses, loop = _train(tmp_path / "a", 8)
    assert loop.step == 8 and not loop.stopped
    _, first, stopped = _train(tmp_path / "b", 8, stop_at=3)  # stops between two save_every=4 checkpoints
    assert stopped.stopped and load_checkpoint(tmp_path / "b" / "checkpoint").step == 3
    with pytest.raises(RunFolderError, match="--resume"):
        _train(tmp_path / "b", 8)
    resumed, rest, _ = _train(tmp_path / "b", 8, resume=True)
    assert first + rest == losses
    for (name, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(p, q), name
    rows = RunLog(tmp_path / "b", main="loss").rows()
    assert [r["step"] for r in rows] == list(range(1, 9)) and [r["loss"] for r in rows] == losses
    assert all(set(r) == {"step", "wall_s", "loss"} for r in rows)
    assert rows[-1]["wall_s"] >= rows[0]["wall_s"] > 0


def test_a_non_finite_loss_stops_the_loop_naming_the_step(tmp_path):
    loop = Loop(5, progress=False)
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 3"):
        for step in loop:
            loop.log(step + 1, loss=float("nan") if step == 2 else 1.0)


def test_the_log_has_one_schema_and_mirrors_tensorboard(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    log = RunLog(tmp_path, main="loss")
    log.write(1, 0.5, loss=2.0)
    log.write(1, 0.6, "validation", psnr=20.0)
    log.close()
    assert log.rows() == [{"step": 1, "wall_s": 0.5, "loss": 2.0}]
    assert log.rows("validation") == [{"step": 1, "wall_s": 0.6, "psnr": 20.0}]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "validation/psnr"}


# ----------------------------------------------------------------------------- schedules, cards
def test_schedules_match_hand_computations():
    assert constant(123) == 1.0
    assert exponential_decay(0, 100, 0.01) == 1.0
    assert exponential_decay(50, 100, 0.01) == pytest.approx(0.1)
    assert exponential_decay(100, 100, 0.01) == pytest.approx(0.01) == exponential_decay(200, 100, 0.01)
    f = warmup_cooldown(4, 10, 2)
    assert [f(s) for s in range(10)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1.0, 0.5])


def test_a_card_says_how_the_run_was_made(tmp_path):
    text = card_text("Tiny", "A model.", command="fourdistill x --steps 3", training=["seed 0"], steps=3, wall_s=90.0,
                     device="cpu", numbers={"psnr": 20.123456}, sections={"Notes": "hello"}, config={"lr": 0.1})
    path = write_card(tmp_path, text)
    read = path.read_text()
    assert read.startswith("# Tiny\n") and "`fourdistill x --steps 3`" in read and "- steps: 3" in read
    assert "wall time: 1.5 min on cpu" in read and "- psnr: 20.12" in read and "## Notes" in read and '"lr": 0.1' in read


def test_the_library_does_not_call_back_into_the_cli_and_sources_do_not_import_the_field():
    root = Path(__file__).resolve().parents[1] / "src" / "fourdistill"
    for path in root.rglob("*.py"):
        if path.name != "cli.py":
            text = path.read_text()
            assert "from .cli import" not in text and "from ..cli import" not in text, path
    from fourdistill.field.source import FieldSource
    from fourdistill.sources import SOURCE_PLUGINS, registered_kinds

    for name in SOURCE_PLUGINS:  # every plugin named imports and registers
        assert __import__(name, fromlist=["_"])
    kinds = {k.kind: k for k in registered_kinds()}
    assert kinds["field"].reader() is FieldSource
    code = "import sys, fourdistill.sources as s; print(any(m.startswith('fourdistill.field') for m in sys.modules), 'torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(root.parent)}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split() == ["False", "False"]


def test_derived_fields_are_not_settings():
    @dataclass
    class Derived:
        width: int = 2
        area: int = field(init=False, default=0)

        def __post_init__(self):
            self.area = self.width**2

    from fourdistill.engine.config import override

    assert config_to_dict(Derived(3)) == {"width": 3}
    assert override(Derived(3), {"width": 5}).area == 25
