"""Scoring generated 4D scenes: the world's own renders score near the ceiling, a blank one does not."""

import numpy as np
import pytest

from fourdistill.evaluate.text_to_4d import r_precision, read_scene, summary, world_renderer
from fourdistill.world import EVAL_SEEDS, make_scene


@pytest.fixture(scope="module")
def readers():
    from fourdistill.evaluate.judge import load_judge
    from fourdistill.evaluate.reader import load_reader

    return load_judge(), load_reader()


def test_true_scenes_score_high_and_a_static_grey_box_scores_low(readers):
    judge, reader = readers
    scenes = [make_scene(s) for s in EVAL_SEEDS[:4]]
    true = [read_scene(world_renderer(s), s, judge, reader, n_views=8, times=(0.0, 1.0), motion_cameras=2) for s in scenes]
    scores = summary(true)
    assert scores["object_accuracy"] >= 0.8 and scores["consistency"] >= 0.9 and scores["motion_accuracy"] >= 0.5
    pool = [make_scene(s) for s in EVAL_SEEDS[:20]]
    assert r_precision(true, scenes, pool, judge.config, reader.config) >= 0.75

    def grey(cams, times):
        return np.full((len(cams), 64, 64, 3), 0.5, dtype=np.float32)

    blank = [read_scene(grey, s, judge, reader, n_views=8, times=(0.0, 1.0), motion_cameras=2) for s in scenes]
    low = summary(blank)
    assert low["object_accuracy"] <= 0.25 and low["consistency"] <= 0.5
    assert r_precision(blank, scenes, pool, judge.config, reader.config) <= 0.25
