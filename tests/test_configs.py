"""The files in configs/ are the settings of what shipped: each loads into its dataclass and
equals the configuration its shipped card recorded, so the files cannot drift from the weights."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fourdistill.distill import DistillConfig
from fourdistill.engine.config import config_from_dict, load_config
from fourdistill.evaluate.judge import SHIPPED_JUDGE, JudgeTrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED_MAPPERS = Path(__file__).resolve().parent.parent / "src" / "fourdistill" / "assets" / "mappers" / "mappers.json"


def test_the_judge_config_is_the_shipped_judges():
    (path,) = [p for p in CONFIGS.glob("judge.*") if p.suffix in (".yaml", ".yml", ".json")]
    shipped = json.loads((SHIPPED_JUDGE / "config.json").read_text())["training"]
    assert load_config(JudgeTrainConfig, path) == config_from_dict(JudgeTrainConfig, shipped["config"], "shipped judge")
    assert shipped["step"] == load_config(JudgeTrainConfig, path).steps


@pytest.mark.parametrize("path", sorted((CONFIGS / "distill").glob("*.yaml")), ids=lambda p: p.name)
def test_every_distill_config_loads(path):
    assert isinstance(load_config(DistillConfig, path), DistillConfig)


def test_the_mappers_config_is_the_shipped_mappers():
    recorded = json.loads(SHIPPED_MAPPERS.read_text())["distill_config"]
    shipped = config_from_dict(DistillConfig, recorded, "shipped mappers")
    cfg = load_config(DistillConfig, CONFIGS / "distill" / "mappers.yaml")
    # the stack and the run folder are the user's paths: `model: null` is the embedded stack,
    # which is the stack the mappers were distilled against (recorded as its run folder)
    assert cfg.model is None and recorded["model"].endswith("stack")
    assert replace(cfg, model=shipped.model, out=shipped.out) == shipped


@pytest.mark.parametrize("kind, info_file", [("multiview", "multiview.json"), ("video", "fourdistill_video.json")])
def test_the_teacher_configs_are_the_shipped_teachers(kind, info_file):
    from fourdistill.teachers.finetune import FinetuneConfig

    folder = Path(__file__).resolve().parent.parent / "src" / "fourdistill" / "assets" / kind
    recorded = json.loads((folder / info_file).read_text())["training"]
    shipped = config_from_dict(FinetuneConfig, recorded["config"], f"shipped {kind} teacher")
    assert load_config(FinetuneConfig, CONFIGS / "teachers" / f"{kind}.yaml") == shipped
    assert recorded["steps"] == shipped.steps


def test_the_embedded_text_to_4d_preset_is_the_default_and_the_paper_preset_loads():
    from fourdistill.sds.text_to_4d import TextTo4DConfig

    assert load_config(TextTo4DConfig, CONFIGS / "text_to_4d" / "embedded.yaml") == TextTo4DConfig()
    paper = load_config(TextTo4DConfig, CONFIGS / "text_to_4d" / "fourdfy-paper.yaml")
    assert [s.steps for s in paper.stages] == [10000, 25000, 100000]
    assert (paper.multiview.guidance_scale, paper.image.guidance_scale, paper.video.guidance_scale) == (50.0, 7.5, 100.0)
