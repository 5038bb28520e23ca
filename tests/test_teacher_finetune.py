"""The multi-view / video teacher trainer: it trains, checkpoints, resumes bit for bit, refuses bad settings."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fourdistill.engine.config import ConfigError, RunFolderError, config_from_dict
from fourdistill.teachers.finetune import FinetuneConfig, finetune

TINY = {"kind": "multiview", "data": {"n_scenes": 3, "views_per_scene": 1}, "batch": 2, "steps": 2, "warmup_steps": 1,
        "cooldown_steps": 0, "checkpoint_every": 1, "eval_scenes": 0, "threads": 1}


def tiny(**changes):
    return config_from_dict(FinetuneConfig, {**TINY, **changes}, "test")


def trained(folder):
    return load_file(str(folder / "checkpoint" / "trainable.safetensors"))


def test_multiview_run_trains_resumes_exactly_and_writes_a_loadable_teacher(tmp_path):
    straight = tmp_path / "straight"
    finetune(straight, tiny(steps=4), progress=False)
    split = tmp_path / "split"
    finetune(split, tiny(steps=2), progress=False)
    teacher = finetune(split, tiny(steps=4), resume=True, progress=False)
    a, b = trained(straight), trained(split)
    assert set(a) == set(b) and any(k.startswith("class_embedding.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (split / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == [json.loads(line)["loss"] for line in (straight / "log.jsonl").read_text().splitlines()]
    from fourdistill.teachers.load import load_teacher

    loaded = load_teacher("multiview", teacher)
    assert loaded.num_views == 4
    # the camera MLP left zero: it learned something
    assert loaded.unet.class_embedding.linear_2.weight.abs().max() > 0
    card = (teacher / "README.md").read_text()
    assert "4 steps" in card and "multi-view" in card


def test_a_fresh_run_refuses_a_folder_that_holds_one_and_resume_refuses_a_changed_setting(tmp_path):
    finetune(tmp_path / "run", tiny(steps=1), progress=False)
    with pytest.raises(RunFolderError, match="already holds a run"):
        finetune(tmp_path / "run", tiny(steps=1), progress=False)
    with pytest.raises(RunFolderError, match="lr"):
        finetune(tmp_path / "run", tiny(steps=2, lr=0.5), resume=True, progress=False)


@pytest.mark.parametrize("change, message", [
    ({"kind": "audio"}, "kind must be one of"),
    ({"batch": 9}, "larger than"),
    ({"text_dropout": 1.0}, "text_dropout"),
    ({"n_views": 0}, "n_views"),
    ({"colour": 1}, "unknown key 'colour'"),
])
def test_bad_settings_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**change)


def test_the_command_trains_from_a_config_file_and_names_image_only_flags(tmp_path, capsys):
    from fourdistill.cli import main

    config = tmp_path / "mv.yaml"
    config.write_text(yaml.safe_dump({**TINY, "steps": 1}))
    assert main(["teachers", "train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "teacher" / "multiview.json").is_file()
    assert main(["teachers", "train", "--config", str(config), "--out", str(tmp_path / "other"), "--init", "embedded"]) == 2
    assert "--init: applies to the image stack" in capsys.readouterr().err
