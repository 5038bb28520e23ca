import json

import numpy as np
import pytest
import torch

from fourdistill.distill import DistillConfig, Distiller, run
from fourdistill.mappers.checkpoint import load_mappers
from fourdistill.teachers.image.load import load_stack

from tiny_models import tiny_stack_folder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stack_folder(tmp_path_factory):
    return tiny_stack_folder(tmp_path_factory.mktemp("distill"))


def _cfg(tmp_path, stack_folder, **kw):
    base = dict(model=str(stack_folder), out=str(tmp_path / "run"), steps=4, batch_size=2, grad_accum=2, world_seeds=(0, 50), save_every=2)
    base.update(kw)
    return DistillConfig(**base)


def test_only_the_mappers_train_and_the_step_is_the_documented_loss(tmp_path, stack_folder):
    d = Distiller(_cfg(tmp_path, stack_folder, mode="joint"))
    frozen = {n: p.detach().clone() for n, p in d.pipe.unet.named_parameters()}
    before = {k: v.clone() for k, v in d.mapper_module.state_dict().items()}
    d.train_step()
    assert all(torch.equal(frozen[n], p) for n, p in d.pipe.unet.named_parameters())
    after = d.mapper_module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert {k.split(".")[0] for k in after} == {"time_mapper", "view_mapper"}
    assert d.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # no hidden multiplier


def test_a_v_prediction_teacher_is_distilled_against_v(tmp_path):
    """SD 2.x 768-v predicts v, not the noise: the mapper loss follows the teacher's scheduler."""
    from fourdistill.diffusion.schedule import NoiseConfig
    from fourdistill.teachers.image.stack import build_stack, save_stack
    from fourdistill.teachers.image.tokenizer import build_tokenizer

    from tiny_models import tiny_stack_config

    cfg = tiny_stack_config()
    cfg.noise = NoiseConfig("v_prediction", zero_terminal_snr=True)
    folder = save_stack(build_stack(cfg, build_tokenizer(tmp_path / "tok"), seed=0), tmp_path / "stack_v")
    d = Distiller(_cfg(tmp_path, folder, mode="joint"))
    assert d.noise_scheduler.config.prediction_type == "v_prediction"
    seen = {}
    add_noise = d.noise_scheduler.add_noise

    def recording(latents, noise, t):
        seen.update(latents=latents, noise=noise, t=t)
        return add_noise(latents, noise, t)

    d.noise_scheduler.add_noise = recording
    d.pipe.unet.register_forward_hook(lambda module, args, out: seen.update(pred=out.sample.detach()))
    from fourdistill.engine.loop import step_generators

    np_rng, gen = step_generators(0, 0, 0)
    with torch.no_grad():
        loss = float(d.loss(d.sampler.batch(2, rng=np_rng), gen))
    v = d.noise_scheduler.get_velocity(seen["latents"], seen["noise"], seen["t"])
    assert loss == pytest.approx(float(torch.nn.functional.mse_loss(seen["pred"], v)), rel=1e-5)
    assert loss != pytest.approx(float(torch.nn.functional.mse_loss(seen["pred"], seen["noise"])), rel=1e-3)


@pytest.mark.parametrize("mode", ["time", "view", "joint"])
def test_short_runs_lower_the_loss_on_a_fixed_batch(tmp_path, stack_folder, mode):
    d = Distiller(_cfg(tmp_path, stack_folder, mode=mode, batch_size=4, grad_accum=1, lr=1e-2))
    start = d.eval_loss(n_batches=2, seed=123)
    for _ in range(25):
        d.train_step()
    end = d.eval_loss(n_batches=2, seed=123)
    assert end < start, f"{mode}: fixed-batch loss {start:.5f} -> {end:.5f}"


def test_resume_reproduces_the_uninterrupted_run(tmp_path, stack_folder):
    straight = run(_cfg(tmp_path / "a", stack_folder, steps=4), progress=False)
    run(_cfg(tmp_path / "b", stack_folder, steps=2), progress=False)
    with pytest.raises(ValueError, match="--resume"):
        run(_cfg(tmp_path / "b", stack_folder, steps=4), progress=False)
    resumed = run(_cfg(tmp_path / "b", stack_folder, steps=4), resume=True, progress=False)
    np.testing.assert_allclose(straight["losses"][2:], resumed["losses"], rtol=1e-5)
    curve = [json.loads(x)["loss"] for x in (tmp_path / "b" / "run" / "loss.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(curve, straight["losses"], rtol=1e-5)
    with pytest.raises(ValueError, match="cannot resume: mode"):
        Distiller(_cfg(tmp_path / "c", stack_folder, mode="view")).resume(tmp_path / "b" / "run" / "checkpoint")
    with pytest.raises(ValueError, match="cannot resume: mode"):
        run(_cfg(tmp_path / "b", stack_folder, mode="view", steps=6), resume=True, progress=False)


def test_checkpoint_attaches_to_a_fresh_pipeline(tmp_path, stack_folder):
    summary = run(_cfg(tmp_path, stack_folder, steps=2, mode="joint"), progress=False)
    pipe = load_stack(str(stack_folder))
    cond = load_mappers(pipe, summary["checkpoint"]).conditioner
    assert cond.time_mapper is not None and cond.view_mapper is not None
    assert "<time>" in pipe.tokenizer.get_vocab()


def test_validation_grids_are_written_on_schedule(tmp_path, stack_folder):
    cfg = _cfg(tmp_path, stack_folder, mode="joint", steps=4, validate_every=2)
    run(cfg, progress=False)
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step_000002.png", "step_000004.png"]
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["psnr"]) and r["fixed_batch_loss"] > 0 for r in rows)
    assert (out / "curves.png").stat().st_size > 1000


def test_the_final_checkpoint_has_a_model_card(tmp_path, stack_folder):
    run(_cfg(tmp_path, stack_folder, mode="time", steps=2, validate_every=0), progress=False, command="fourdistill distill --steps 2")
    card = (tmp_path / "run" / "checkpoint" / "README.md").read_text()
    assert "fourdistill distill --steps 2" in card and "2 steps" in card and "wall time" in card and "training loss" in card
    assert json.loads((tmp_path / "run" / "checkpoint" / "mappers.json").read_text())["wall_s"] > 0
