"""FVD, LPIPS and CLIP score with randomly initialised weights: shapes and plumbing only.

The real weights cannot be shipped or downloaded here; these tests check that the code loads
weights in the published layouts, computes what it should on known relations (a set against
itself, an image against itself) and fails clearly when the weights are missing or wrong.
"""

import numpy as np
import pytest
import torch
from torch import nn

from fourdistill.evaluate.learned import (
    ALEX_CHANNELS,
    LPIPS,
    AlexFeatures,
    ClipScorer,
    frechet_distance,
    fvd,
    i3d_features,
    load_i3d,
    lpips_distance,
)

from tiny_models import tiny_tokenizer


class RandomI3D(nn.Module):
    """The detector's call signature with random weights (400 features like the real one)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 16, kernel_size=3, stride=(2, 16, 16))
        self.fc = nn.Linear(16, 400)

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3, 4)))


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    b = a + np.array([3.0, 0.0, 0.0])  # a shifted mean: distance = |shift|^2
    assert frechet_distance(a, b) == pytest.approx(9.0, rel=1e-6)
    c = a * 2.0  # covariance 4I against I: tr(I) + tr(4I) - 2 tr(2I) = 3
    assert frechet_distance(a - a.mean(0), c - c.mean(0)) == pytest.approx(3.0, rel=0.05)
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(a[:1], b)


def test_fvd_plumbing_with_a_random_detector(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.manual_seed(0)
    torch.jit.script(RandomI3D()).save(str(path))
    detector = load_i3d(path)
    rng = np.random.default_rng(0)
    real = rng.uniform(0, 1, (6, 10, 32, 32, 3)).astype(np.float32)
    feats = i3d_features(detector, real, batch=4)
    assert feats.shape == (6, 400)
    assert fvd(real, real, detector) == pytest.approx(0.0, abs=1e-6)
    assert fvd(real, np.clip(real * 0.3, 0, 1), detector) > 0.0
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        i3d_features(detector, real[0])


def test_fvd_detector_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt to a folder"):
        load_i3d(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt: not a TorchScript I3D"):
        load_i3d(bad)


def _lpips_files(tmp_path):
    torch.manual_seed(0)
    backbone = tmp_path / "alexnet.pth"
    torch.save(AlexFeatures().state_dict(), backbone)
    linear = tmp_path / "alex.pth"
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(ALEX_CHANNELS)}, linear)
    return backbone, linear


def test_lpips_plumbing_with_random_weights(tmp_path):
    model = LPIPS.from_files(*_lpips_files(tmp_path))
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (3, 48, 48, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    same = lpips_distance(model, a, a)
    assert same.shape == (3,) and np.allclose(same, 0.0, atol=1e-7)
    d = lpips_distance(model, a, b)
    assert np.all(d > 0)
    assert np.all(lpips_distance(model, a, np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)) < d)


def test_lpips_weight_errors(tmp_path):
    backbone, linear = _lpips_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="--lpips-backbone"):
        LPIPS.from_files(None, linear)
    with pytest.raises(FileNotFoundError, match="nothing.pth: LPIPS linear layers weights not found"):
        LPIPS.from_files(backbone, tmp_path / "nothing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth: not LPIPS linear weights \\(missing 'lin1.model.1.weight'\\)"):
        LPIPS.from_files(backbone, wrong)
    with pytest.raises(ValueError, match="alex.pth: not AlexNet weights"):
        LPIPS.from_files(linear, linear)


def test_clip_score_plumbing_with_a_random_model(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path / "clip"
    tok = tiny_tokenizer(tmp_path / "tok")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    scorer = ClipScorer(folder)
    images = np.random.default_rng(0).uniform(0, 1, (2, 40, 40, 3)).astype(np.float32)
    scores = scorer(images, ["a red cube", "a blue ball"])
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 100))
    with pytest.raises(ValueError, match="one caption per image"):
        scorer(images, ["a red cube"])
    with pytest.raises(FileNotFoundError, match="--clip-model"):
        ClipScorer(tmp_path / "none")
    with pytest.raises(ValueError, match="not a CLIP model folder"):
        ClipScorer(tmp_path / "tok")


def test_evaluate_reports_learned_metrics(tmp_path):
    """The evaluation wires LPIPS and FVD in (tiny stack, random weights: plumbing only)."""
    from fourdistill.distill import DistillConfig, run
    from fourdistill.evaluate.control import ControlEvalConfig, evaluate_control, markdown_report
    from fourdistill.evaluate.judge import Judge
    from fourdistill.generate import ControlledPipeline

    from tiny_models import tiny_stack_folder

    torch.set_num_threads(1)
    stack = tiny_stack_folder(tmp_path)
    run(DistillConfig(model=str(stack), out=str(tmp_path / "t"), mode="time", steps=1, batch_size=2, grad_accum=1, world_seeds=(0, 10)), progress=False)
    cp = ControlledPipeline.from_pretrained(str(stack), tmp_path / "t" / "checkpoint")
    path = tmp_path / "i3d.pt"
    torch.jit.script(RandomI3D()).save(str(path))
    learned = {"lpips": LPIPS.from_files(*_lpips_files(tmp_path)), "fvd": load_i3d(path), "fvd_videos": 3, "fvd_frames": 10}
    cfg = ControlEvalConfig(pairs=3, scenes=4, kinds=("time",), steps=1, methods=("mappers", "copy"))
    report = evaluate_control(cp, cfg, judge=Judge().eval(), progress=False, learned=learned)
    assert report["kinds"]["time"]["methods"]["mappers"]["lpips"] > 0
    assert set(report["fvd"]["methods"]) == {"mappers", "copy", "ip_adapter"}
    assert "FVD of time sweeps" in markdown_report(report) and "| lpips |" in markdown_report(report)
