"""Text-to-4D (the 4D-fy recipe): stages, teacher draws, freezing, exact resume, the field it leaves."""

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from fourdistill.engine.config import ConfigError, config_from_dict
from fourdistill.sds.recipe import StageConfig, draw_teacher, field_optimizer, set_stage, stage_at
from fourdistill.sds.text_to_4d import TextTo4DConfig, check_caption, generate_4d


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A multi-view and a video teacher in their real layouts on the embedded stack, untrained
    but not zero (so their scores move the field)."""
    from fourdistill.teachers.multiview.load import save_multiview_teacher
    from fourdistill.teachers.multiview.model import multiview_unet
    from fourdistill.teachers.parts import load_base_parts
    from fourdistill.teachers.video.model import build_motion_adapter

    root = tmp_path_factory.mktemp("teachers")
    parts = load_base_parts()
    mv = save_multiview_teacher(multiview_unet(parts.unet, 4), root / "multiview", "embedded", 4, float16=False)
    adapter = build_motion_adapter(parts.unet)
    adapter.save_pretrained(root / "video")
    return str(mv), str(root / "video")


def tiny(teachers, **changes):
    mv, video = teachers
    data = {
        "caption": "a red cube spinning next to a blue ball",
        "multiview_teacher": mv, "video_teacher": video,
        "stages": [
            {"name": "static", "steps": 2, "p_multiview": 1.0, "p_image": 0.0, "p_video": 0.0},
            {"name": "static_hybrid", "steps": 2, "p_multiview": 0.5, "p_image": 0.5, "p_video": 0.0},
            {"name": "dynamic", "steps": 4, "p_multiview": 0.25, "p_image": 0.25, "p_video": 0.5, "dynamic": True},
        ],
        "render_resolution": 16, "n_frames": 4, "render": {"n_samples": 16}, "checkpoint_every": 1, "preview_every": 0,
        "orbit_times": [0.0, 1.0], "threads": 1,
    }
    data.update(changes)
    return config_from_dict(TextTo4DConfig, data, "test")


def test_stages_count_their_own_steps_and_draw_teachers_by_their_probabilities():
    stages = [StageConfig("a", 3, 1, 0, 0), StageConfig("b", 2, 0.5, 0.5, 0), StageConfig("c", 5, 0.5, 0.25, 0.25, dynamic=True)]
    assert [stage_at(stages, s) for s in (0, 2, 3, 4, 5, 9)] == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 0), (2, 4)]
    rng = np.random.default_rng(0)
    draws = [draw_teacher(stages[2], rng) for _ in range(4000)]
    assert abs(draws.count("multiview") / 4000 - 0.5) < 0.03 and abs(draws.count("video") / 4000 - 0.25) < 0.03
    assert {draw_teacher(stages[0], rng) for _ in range(50)} == {"multiview"}


@pytest.mark.parametrize("stage, message", [
    (dict(name="s", steps=1, p_multiview=0.5, p_image=0.4, p_video=0.0), "not 1"),
    (dict(name="s", steps=1, p_multiview=0.5, p_image=0.0, p_video=0.5), "need dynamic"),
    (dict(name="s", steps=1, p_multiview=1.5, p_image=-0.5, p_video=0.0), "lie in"),
])
def test_bad_stages_are_named(stage, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(TextTo4DConfig, {"stages": [stage]}, "preset.yaml")


def test_unknown_preset_keys_and_bad_captions_are_named():
    with pytest.raises(ConfigError, match="unknown key 'stages\\[0\\].speed'|unknown key 'speed'"):
        config_from_dict(TextTo4DConfig, {"stages": [{"name": "s", "steps": 1, "p_multiview": 1, "p_image": 0, "p_video": 0, "speed": 2}]}, "p.yaml")
    with pytest.raises(ValueError, match="caption: empty"):
        check_caption("  ")
    from fourdistill.teachers.parts import load_base_parts

    with pytest.warns(UserWarning, match="'zeppelin'"):
        check_caption("a red zeppelin spinning", load_base_parts().tokenizer)


def test_the_dynamic_grid_trains_only_in_video_steps_of_a_dynamic_stage():
    from fourdistill.field.field import Field4D
    from fourdistill.sds.text_to_4d import _field

    field = Field4D(_field())
    opt = field_optimizer(field)
    static, dynamic = StageConfig("s", 1, 1, 0, 0), StageConfig("d", 1, 0.5, 0, 0.5, dynamic=True, lr_static_grid=1e-4)
    for stage, teacher, trains in [(static, "multiview", False), (dynamic, "multiview", False), (dynamic, "video", True)]:
        set_stage(field, opt, stage, teacher)
        assert all(p.requires_grad == trains for p in field.dynamic_grid.parameters())
        assert all(p.requires_grad for p in field.static_grid.parameters())
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"static_grid": 1e-4, "dynamic_grid": 1e-2, "mlp": 1e-3}


def test_a_run_resumes_inside_the_dynamic_stage_bit_for_bit_and_leaves_a_field_source(tmp_path, teachers):
    straight = generate_4d(tmp_path / "straight", tiny(teachers), progress=False)
    split = tmp_path / "split"
    cfg = tiny(teachers)
    # stop inside stage 3 (the dynamic one starts at step 4): the loop's stop_at, as an interruption
    from fourdistill.engine import loop as engine_loop

    original = engine_loop.Loop.__init__

    def stopping(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.stop_at = 6

    engine_loop.Loop.__init__ = stopping
    try:
        generate_4d(split, cfg, progress=False)
    finally:
        engine_loop.Loop.__init__ = original
    meta = json.loads((split / "checkpoint" / "field.json").read_text())
    assert meta["step"] == 6
    generate_4d(split, cfg, resume=True, progress=False)
    a, b = load_file(str(straight / "field.safetensors")), load_file(str(split / "checkpoint" / "field.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert {r["teacher"] for r in rows if r["stage"] == 0} == {"multiview"}
    # the field is a 4D source: inspect reads it, distillation pairs can be drawn from it
    from fourdistill.sources import open_source

    src = open_source(str(split))
    assert src.caption == "a red cube spinning next to a blue ball"
    assert len(src) > 0 and not src.problems()
    assert src.frame(0).rgb.shape[-1] == 3
    from fourdistill.pairs import PairSampler

    pair = PairSampler([src], seed=0).sample()  # distillation's pairs (time, view, joint) come from it
    assert pair is not None
    assert (split / "grid.png").is_file() and (split / "orbit.mp4").is_file()


def test_the_command_runs_a_preset_and_refuses_a_caption_in_it(tmp_path, teachers, capsys):
    from fourdistill.cli import main
    from fourdistill.engine.config import config_to_dict

    preset = config_to_dict(tiny(teachers))
    preset.pop("caption")
    for stage in preset["stages"]:
        stage["steps"] = 1
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    assert main(["text-to-4d", "a blue cone growing", "--config", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "fourdistill inspect" in capsys.readouterr().out
    path.write_text(yaml.safe_dump({**preset, "caption": "x"}))
    assert main(["text-to-4d", "a blue cone", "--config", str(path), "--out", str(tmp_path / "other")]) == 2
    assert "give the caption on the command line" in capsys.readouterr().err


def test_ablations_move_the_removed_teachers_steps_to_the_image_teacher(teachers):
    from fourdistill.evaluate.text_to_4d import variant_config

    cfg = tiny(teachers)
    for variant, want in [("no-multiview", (0.0, 0.5, 0.5)), ("no-video", (0.25, 0.75, 0.0)), ("image-only", (0.0, 1.0, 0.0))]:
        s = variant_config(cfg, variant).stages[2]
        assert (s.p_multiview, s.p_image, s.p_video) == want
    assert cfg.stages[2].p_video == 0.5  # the preset itself is unchanged


def test_evaluate_text_to_4d_runs_scores_and_reuses_finished_runs(tmp_path, teachers):
    from fourdistill.evaluate.text_to_4d import evaluate_text_to_4d

    cfg = tiny(teachers, stages=[{"name": "static", "steps": 1, "p_multiview": 1.0, "p_image": 0.0, "p_video": 0.0},
                                 {"name": "dynamic", "steps": 1, "p_multiview": 0.0, "p_image": 0.5, "p_video": 0.5, "dynamic": True}])
    report = evaluate_text_to_4d(tmp_path, cfg, n_captions=1, variants=("full", "image-only"), pool_size=5, progress=False)
    assert set(report["variants"]) == {"full", "image-only"}
    assert report["truth"]["object_accuracy"] > 0.5
    for row in report["variants"].values():
        assert 0.0 <= row["object_accuracy"] <= 1.0 and len(row["per_caption"]) == 1
    assert "| full |" in (tmp_path / "report.md").read_text()
    stamp = (tmp_path / "runs" / "full" / "00" / "grid.png").stat().st_mtime
    evaluate_text_to_4d(tmp_path, cfg, n_captions=1, variants=("full",), pool_size=5, progress=False)
    assert (tmp_path / "runs" / "full" / "00" / "grid.png").stat().st_mtime == stamp
