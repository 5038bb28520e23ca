import json

import numpy as np
import pytest

from fourdistill.cli import main
from fourdistill.distill import DistillConfig, run
from fourdistill.evaluate.control import (
    ControlEvalConfig,
    binned,
    evaluate_control,
    held_out_pairs,
    image_scores,
    judge_agreement,
    phrased,
    read_against_asked,
    slope_through_origin,
    view_phrase,
    write_report,
)
from fourdistill.evaluate.judge import Judge
from fourdistill.generate import ControlledPipeline
from fourdistill.world import EVAL_SEEDS

from tiny_models import tiny_stack_folder


pytestmark = pytest.mark.usefixtures("one_thread")


def test_phrases_name_the_change():
    assert phrased("a red cube", 0.4, 0.0, 0.0) == "a red cube, a moment later"
    assert phrased("a red cube", -0.4, 0.0, 0.0) == "a red cube, a moment earlier"
    assert view_phrase(40.0, 0.0) == "seen from the right" and view_phrase(-40.0, -10.0) == "seen from the left, seen from below"
    assert phrased("a red cube", 0.0, 2.0, 1.0) == "a red cube"


def test_binned_means_on_known_values():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    mags = np.array([0.1, 0.2, 0.6, 1.0, 0.9])
    rows = binned(values, mags, (0.0, 0.5, 1.0))
    assert [r["n"] for r in rows] == [2, 3]
    assert rows[0]["mean"] == pytest.approx(1.5) and rows[1]["mean"] == pytest.approx(4.0)
    empty = binned(values, mags, (0.0, 0.05, 1.0))
    assert empty[0]["mean"] is None and empty[0]["n"] == 0


def test_slope_through_origin_by_hand():
    # sum(read * asked) / sum(asked^2) = (1*2 + 2*3 + 3*7) / (1 + 4 + 9) = 29 / 14
    assert slope_through_origin(np.array([2.0, 3.0, 7.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(29 / 14)
    assert slope_through_origin(np.array([-2.0, 4.0]), np.array([-1.0, 2.0])) == pytest.approx(2.0)
    assert slope_through_origin(np.zeros(3), np.array([0.3, -0.5, 1.0])) == 0.0
    assert slope_through_origin(np.array([1.0]), np.array([0.0])) is None


def test_reading_the_reference_back_reads_no_change():
    from fourdistill.evaluate.reader import load_reader

    reader = load_reader()
    for kind in ("view", "time"):
        pairs = held_out_pairs(kind, 4, scenes=10, resolution=32, seed=1)
        copy = read_against_asked(reader, pairs, pairs.reference)
        truth = read_against_asked(reader, pairs, pairs.target)
        key = "azimuth" if kind == "view" else "abs_time"
        assert abs(copy[key]["slope"]) <= 1e-6 and copy[key]["median_error"] >= 0.0
        assert sum(b["n"] for b in copy[key]["binned"]) == 4 and len(truth[key]["read"]) == 4
    assert "signed_time" in copy and copy["signed_time"]["n"] <= 4


def test_image_scores_on_known_inputs():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.8, (2, 16, 16, 3)).astype(np.float32)
    generated = target.copy()
    generated[0] += 0.1  # MSE 0.01 -> 20 dB
    generated[1, :8] += 0.1  # error only in the top half
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 8:] = True  # the bottom half
    s = image_scores(generated, target, mask)
    assert s["psnr"][0] == pytest.approx(20.0, abs=1e-3)
    assert s["psnr"][1] == pytest.approx(23.0103, abs=1e-3)  # half the pixels: MSE 0.005
    assert s["masked_psnr"][0] == pytest.approx(20.0, abs=1e-3)
    assert s["masked_psnr"][1] == 60.0  # no error inside the mask: capped
    assert s["ssim"][0] < 1.0 and s["masked_ssim"][1] == pytest.approx(1.0, abs=1e-4)


def test_held_out_pairs_are_held_out_and_of_the_kind():
    pairs = held_out_pairs("view", 6, scenes=10, resolution=32, seed=1)
    assert pairs.reference.shape == (6, 32, 32, 3) and pairs.target_mask.shape == (6, 32, 32)
    assert all(s in EVAL_SEEDS for s in pairs.seeds)
    assert np.all(pairs.time_delta == 0) and np.any(pairs.spherical_delta[:, 0] != 0)
    again = held_out_pairs("view", 6, scenes=10, resolution=32, seed=1)
    np.testing.assert_array_equal(pairs.target, again.target)
    timed = held_out_pairs("time", 6, scenes=10, resolution=32, seed=1)
    assert np.all(timed.spherical_delta == 0) and np.all(timed.time_delta != 0)


def test_judge_agreement_reads_identical_images_as_identical():
    judge = Judge().eval()
    x = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    assert judge_agreement(judge, x, x) == {"exact": 1.0, "per_shape": 1.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    stack = tiny_stack_folder(tmp)
    cfg = DistillConfig(model=str(stack), out=str(tmp / "joint"), mode="joint", steps=2, batch_size=2, grad_accum=1, world_seeds=(0, 20))
    run(cfg, progress=False)
    return stack, tmp / "joint" / "checkpoint"


def test_evaluate_control_scores_every_method_and_writes_the_report(tiny, tmp_path):
    stack, mappers = tiny
    cp = ControlledPipeline.from_pretrained(str(stack), mappers)
    cfg = ControlEvalConfig(pairs=4, scenes=8, kinds=("time", "view"), steps=2, batch=4)
    report = evaluate_control(cp, cfg, judge=Judge().eval(), extra_pipelines={"again": ControlledPipeline(cp.pipe, mappers)}, progress=False, samples_dir=tmp_path / "samples")
    assert set(report["kinds"]) == {"time", "view"}
    methods = report["kinds"]["time"]["methods"]
    assert set(methods) == {"mappers", "copy", "ip_adapter", "ip_adapter_phrase", "no_bypass", "again"}
    # the same checkpoint under another name gives the same numbers: the same pairs and noise
    assert methods["again"]["psnr"] == pytest.approx(methods["mappers"]["psnr"], abs=1e-4)
    assert methods["copy"]["monotonicity_spearman"] is None
    assert -1.0 <= methods["mappers"]["monotonicity_spearman"] <= 1.0
    assert methods["no_bypass"]["psnr"] != pytest.approx(methods["mappers"]["psnr"], abs=1e-6)
    assert sum(b["n"] for b in methods["mappers"]["binned"]["psnr"]) == 4
    assert (tmp_path / "samples" / "view_ip_adapter_phrase.png").is_file()
    folder = write_report(report, tmp_path / "report", command="fourdistill evaluate --out report")
    assert json.loads((folder / "report.json").read_text())["kinds"]["view"]["pairs"] == 4
    md = (folder / "report.md").read_text()
    assert "| mappers |" in md and "fourdistill evaluate --out report" in md and "PSNR by |d azimuth| (deg)" in md
    assert (folder / "psnr_vs_change.png").stat().st_size > 1000
    # the reader's reads against the asked change, for every method and for the true targets
    for kind, key in (("time", "abs_time"), ("view", "azimuth")):
        entry = report["kinds"][kind]
        for m in list(entry["methods"].values()) + [entry["true_target_read"]]:
            assert {"slope", "median_error", "mean_error", "binned"} <= set(m["read"][key] if "read" in m else m[key])
        assert abs(entry["methods"]["copy"]["read"][key]["slope"]) <= 1e-6
    assert "signed_time" in report["kinds"]["time"]["methods"]["mappers"]["read"]
    for method in methods:
        assert md.count(f"| {method} | ") == 6  # per kind: the main table, the PSNR bins and the read table
    assert md.count("| true target | ") == 2  # the read table of each kind
    assert "Read against asked, |d|" in md and "Read against asked, relative azimuth (deg)" in md
    assert (folder / "read_vs_asked.png").stat().st_size > 1000


def test_evaluate_command(tiny, tmp_path, capsys):
    stack, mappers = tiny
    args = ["evaluate", "--model", str(stack), "--mappers", str(mappers), "--pairs", "2", "--scenes", "4", "--kinds", "joint"]
    args += ["--methods", "mappers", "copy", "--steps", "2", "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "## joint control" in out and "Read against asked, |d|" in out and "Read against asked, relative azimuth" in out
    assert (tmp_path / "r" / "read_vs_asked.png").is_file()
    assert main(args[:-3] + ["--ablation", "broken", "--out", str(tmp_path / "r2")]) == 2
    assert "NAME=FOLDER" in capsys.readouterr().err


def test_time_pairs_come_from_scenes_that_move_and_psnr_is_capped():
    from fourdistill.evaluate.control import PSNR_CAP_DB, moving_seeds
    from fourdistill.world import make_scene

    pairs = held_out_pairs("time", 12, scenes=30, resolution=32, seed=0)
    assert all(any(o.motion != "static" for o in make_scene(s).objects) for s in pairs.seeds)
    assert set(moving_seeds(EVAL_SEEDS[:30])) < set(EVAL_SEEDS[:30])  # some held-out scenes stand still
    x = np.full((1, 16, 16, 3), 0.5, np.float32)
    assert image_scores(x, x, np.ones((1, 16, 16), bool))["psnr"][0] == PSNR_CAP_DB
