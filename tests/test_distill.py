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


def test_the_control_adapter_trains_with_the_mappers_and_resumes_exactly(tmp_path, stack_folder):
    from fourdistill.engine.checkpoint import load_weights

    kw = dict(mode="joint", adapter_rank=2, adapter_embedding=True, adapter_lr=1e-2, high_noise_share=0.5)
    d = Distiller(_cfg(tmp_path / "x", stack_folder, **kw))
    frozen = {n: p.detach().clone() for n, p in d.pipe.unet.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in d.pipe.unet.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("class_embedding.") or ".lora_" in n for n in trainable)
    d.train_step()
    now = dict(d.pipe.unet.named_parameters())
    assert all(torch.equal(frozen[n], now[n]) for n in frozen)  # the U-Net's own weights stay frozen
    assert any(not torch.equal(trainable[n], now[n]) for n in trainable)
    assert [g["lr"] for g in d.optimizer.param_groups] == [pytest.approx(1e-3), pytest.approx(1e-2)]

    straight = run(_cfg(tmp_path / "a", stack_folder, steps=4, **kw), progress=False)
    run(_cfg(tmp_path / "b", stack_folder, steps=2, **kw), progress=False)
    resumed = run(_cfg(tmp_path / "b", stack_folder, steps=4, **kw), resume=True, progress=False)
    np.testing.assert_allclose(straight["losses"][2:], resumed["losses"], rtol=1e-5)
    a, b = (load_weights(tmp_path / x / "run" / "checkpoint" / "mappers.safetensors") for x in ("a", "b"))
    assert any(k.startswith("adapter.lora.") for k in a) and any(k.startswith("adapter.class_embedding.") for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    meta = json.loads((tmp_path / "a" / "run" / "checkpoint" / "mappers.json").read_text())
    assert meta["adapter"] == {"rank": 2, "embedding": True}
    with pytest.raises(ValueError, match="cannot resume: adapter_rank"):
        run(_cfg(tmp_path / "b", stack_folder, steps=6, **{**kw, "adapter_rank": 4}), resume=True, progress=False)


def test_high_noise_share_draws_the_layout_steps(tmp_path, stack_folder):
    from fourdistill.engine.loop import step_generators

    d = Distiller(_cfg(tmp_path, stack_folder, mode="view", high_noise_share=1.0, high_noise_from=900, batch_size=8))
    seen = []
    add_noise = d.noise_scheduler.add_noise
    d.noise_scheduler.add_noise = lambda z, n, t: seen.append(t) or add_noise(z, n, t)
    np_rng, gen = step_generators(0, 0, 0)
    with torch.no_grad():
        d.loss(d.sampler.batch(8, rng=np_rng), gen)
    assert seen and bool(torch.all(seen[0] >= 900))
    with pytest.raises(ValueError, match="high_noise_from must lie in"):
        Distiller(_cfg(tmp_path, stack_folder, high_noise_share=0.5, high_noise_from=1000))


def test_a_checkpoint_with_an_adapter_generates_with_it_and_without_it(tmp_path, stack_folder):
    from fourdistill.generate import ControlledPipeline, ViewChange
    from fourdistill.mappers.adapter import adapter_config_of
    from fourdistill.mappers.checkpoint import save_mappers

    kw = dict(mode="joint", adapter_rank=2, adapter_embedding=True, adapter_lr=5e-2, steps=3, validate_every=0)
    summary = run(_cfg(tmp_path, stack_folder, **kw), progress=False)
    pipe = load_stack(str(stack_folder), ip_adapter=True)
    loaded = load_mappers(pipe, summary["checkpoint"])
    assert loaded.adapter is not None and adapter_config_of(pipe.unet) == loaded.adapter
    cp = ControlledPipeline(pipe, loaded)
    ref = np.full((*cp.size, 3), 0.5, np.float32)
    args = dict(time=[0.5, -0.5], view=[ViewChange(60.0), ViewChange(-60.0)], num_inference_steps=3, seed=0)
    on, off = cp(["a red cube"] * 2, ref, **args), cp(["a red cube"] * 2, ref, adapter=False, **args)
    assert np.abs(on - off).mean() > 1e-4
    # off is the frozen U-Net: the same mappers saved alone, on a pipeline that never had an adapter
    save_mappers(tmp_path / "alone", loaded.conditioner, loaded.layers, "tiny")
    plain = load_stack(str(stack_folder), ip_adapter=True)
    alone = ControlledPipeline(plain, tmp_path / "alone")
    np.testing.assert_allclose(alone(["a red cube"] * 2, ref, **args), off, atol=1e-5)
    # mappers without an adapter on the shared pipeline switch its adapter off; the adapter's own come back
    shared = ControlledPipeline(pipe, tmp_path / "alone")
    np.testing.assert_allclose(shared(["a red cube"] * 2, ref, **args), off, atol=1e-5)
    np.testing.assert_allclose(cp(["a red cube"] * 2, ref, **args), on, atol=1e-5)
