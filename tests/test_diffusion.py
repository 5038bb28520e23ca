"""The diffusion math (fourdistill.diffusion) against hand computations: schedules, prediction
conversions, classifier-free guidance and its rescale, timestep sampling and annealing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fourdistill.diffusion.guidance import default_guidance_rescale, guide, predict, rescale_guidance, resolve_guidance_rescale
from fourdistill.diffusion.schedule import (
    TimestepAnnealing,
    alphas_at,
    annealed_timesteps,
    predicted_clean_latents,
    predicted_noise,
    prediction_target,
    sample_timesteps,
    timestep_range,
    training_scheduler,
)


def _hand_alphas_bar() -> np.ndarray:
    """SD's scaled_linear schedule by hand: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2,
    abar_t = prod_{s <= t} (1 - beta_s), in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    return np.cumprod(1.0 - betas)


def _scheduler(kind: str):
    sched = training_scheduler()
    sched.register_to_config(prediction_type=kind)
    return sched


# ---------------------------------------------------------------------------------- schedule


def test_v_prediction_targets_and_the_zero_snr_schedule():
    from fourdistill.diffusion.schedule import NoiseConfig, noise_schedule, prediction_target, training_scheduler

    with pytest.raises(ValueError, match="v_prediction"):
        NoiseConfig(prediction_type="epsilon", zero_terminal_snr=True)
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseConfig(prediction_type="x0")
    assert noise_schedule()["prediction_type"] == "epsilon"  # SD 1.x by default
    sched = training_scheduler(NoiseConfig("v_prediction", zero_terminal_snr=True))
    ab = sched.alphas_cumprod
    assert float(ab[-1]) < 1e-6 and float(ab[0]) > 0.99  # the last step is pure noise
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0, 500, 999])
    v = prediction_target(sched, x0, eps, t)
    a = ab[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
    torch.testing.assert_close(v[2], -x0[2], atol=1e-3, rtol=0)  # at zero SNR, v is minus the image
    assert prediction_target(training_scheduler(), x0, eps, t) is eps


def _training_scheduler_for(kind: str):
    """SD's training schedule predicting `kind` ("sample" is set after building: NoiseConfig
    offers only the two targets a stack trains with)."""
    from fourdistill.diffusion.schedule import NoiseConfig, training_scheduler

    sched = training_scheduler(NoiseConfig(prediction_type="epsilon" if kind == "sample" else kind))
    sched.register_to_config(prediction_type=kind)
    return sched


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_target_for_clean_denoises_any_input_to_the_given_latents(kind):
    from fourdistill.diffusion.schedule import predicted_clean_latents, prediction_target, target_for_clean

    sched = _training_scheduler_for(kind)
    x0, eps, other = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([10, 500, 990])
    made = sched.add_noise(x0, eps, t)
    # for an input add_noise made from these latents it is the ordinary target
    torch.testing.assert_close(target_for_clean(sched, made, x0, t), prediction_target(sched, x0, eps, t), atol=1e-4, rtol=1e-4)
    # for an input made from other latents it still denoises to the given ones
    foreign = sched.add_noise(other, eps, t)
    torch.testing.assert_close(predicted_clean_latents(sched, foreign, target_for_clean(sched, foreign, x0, t), t), x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_clean_error_weight_turns_an_output_error_into_the_clean_latent_error(kind):
    from fourdistill.diffusion.schedule import clean_error_weight, predicted_clean_latents

    sched = _training_scheduler_for(kind)
    noisy, out, err = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0, 400, 990])
    clean_err = predicted_clean_latents(sched, noisy, out + err, t) - predicted_clean_latents(sched, noisy, out, t)
    w = clean_error_weight(sched, t, err)
    torch.testing.assert_close((w * err**2).sum(dim=(1, 2, 3)), (clean_err**2).sum(dim=(1, 2, 3)), atol=1e-4, rtol=1e-4)
    if kind != "sample":
        assert w[0].item() < 1e-2 < w[2].item()  # near t = 0 the target's error is worth far more than the clean one


def test_alphas_at_reads_the_hand_computed_schedule():
    sched = training_scheduler()
    t = torch.tensor([0, 10, 500, 999])
    like = torch.zeros(4, 3, 2, 2)
    a = alphas_at(sched, t, like)
    assert a.shape == (4, 1, 1, 1) and a.dtype == like.dtype
    np.testing.assert_allclose(a.flatten().numpy(), _hand_alphas_bar()[t.numpy()], rtol=1e-5)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_x0_and_eps_from_any_prediction_match_the_analytic_formulas(kind):
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and v = sqrt(abar) eps - sqrt(1 - abar) x0 by hand;
    whichever of eps, v, x0 the U-Net outputs, x0 and eps come back, and the training target is
    that output."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64), torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 500, 990])
    a = torch.from_numpy(_hand_alphas_bar()[t.numpy()]).view(-1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    pred = {"epsilon": eps, "v_prediction": v, "sample": x0}[kind]
    sched = _scheduler(kind)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    torch.testing.assert_close(predicted_clean_latents(sched, noisy, pred, t), x0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(predicted_noise(sched, noisy, pred, t), eps, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(prediction_target(sched, x0, eps, t), pred, atol=1e-6, rtol=1e-6)
    # and the scheduler's own noising is the hand formula
    torch.testing.assert_close(sched.add_noise(x0, eps, t), noisy, atol=1e-6, rtol=1e-6)


def test_v_and_eps_conversions_round_trip_at_zero_terminal_snr():
    """At the pure-noise end of a zero-SNR schedule v is -x0 and eps is x_t itself."""
    from fourdistill.diffusion.schedule import NoiseConfig

    sched = training_scheduler(NoiseConfig("v_prediction", zero_terminal_snr=True))
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    t = torch.tensor([999, 400])
    noisy = sched.add_noise(x0, eps, t)
    v = prediction_target(sched, x0, eps, t)
    torch.testing.assert_close(predicted_noise(sched, noisy, v, t), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(predicted_clean_latents(sched, noisy, v, t), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(predicted_noise(sched, noisy, v, t)[0], noisy[0], atol=1e-5, rtol=1e-5)


def test_unknown_prediction_types_are_refused():
    sched = _scheduler("x0")
    x = torch.zeros(1, 4, 2, 2)
    t = torch.tensor([5])
    for fn in (lambda: prediction_target(sched, x, x, t), lambda: predicted_clean_latents(sched, x, x, t), lambda: predicted_noise(sched, x, x, t)):
        with pytest.raises(ValueError, match="epsilon, v_prediction or sample"):
            fn()


def test_sample_timesteps_moves_the_high_noise_share_to_the_noisiest_range():
    plain = sample_timesteps(64, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(0)))
    t = sample_timesteps(64, 1000, torch.Generator().manual_seed(0), high_noise_fraction=0.25, high_noise_start=900)
    assert t.dtype == torch.int64 and (t[:16] >= 900).all() and (t < 1000).all() and (t[16:] < 900).any()
    assert torch.equal(t[16:], plain[16:])  # the rest is the plain draw


# --------------------------------------------------------------------------- timestep annealing


def test_the_annealed_range_at_start_middle_and_end():
    a = TimestepAnnealing(t_min=(0.02, 0.02), t_max=(0.98, 0.5), steps=100)
    assert timestep_range(a, 0) == pytest.approx((0.02, 0.98))
    assert timestep_range(a, 50) == pytest.approx((0.02, 0.74))  # 0.98 + (0.5 - 0.98) / 2
    assert timestep_range(a, 100) == pytest.approx((0.02, 0.5))
    assert timestep_range(a, 250) == pytest.approx((0.02, 0.5))  # held after the end
    g = torch.Generator().manual_seed(0)
    start, end = annealed_timesteps(a, 0, 4096, 1000, g), annealed_timesteps(a, 100, 4096, 1000, g)
    assert int(start.min()) == 20 and int(start.max()) == 980  # threestudio: [int(1000 * 0.02), int(1000 * 0.98)], both ends drawn
    assert int(end.min()) == 20 and int(end.max()) == 500
    # the default is DreamFusion's U(0.02, 0.98), whatever the step
    assert timestep_range(TimestepAnnealing(), 0) == timestep_range(TimestepAnnealing(), 10**6) == pytest.approx((0.02, 0.98))


def test_dreamtime_decreasing_t_falls_linearly_from_the_top_to_the_bottom():
    a = TimestepAnnealing(t_min=(0.25, 0.25), t_max=(0.75, 0.75), steps=8, decreasing=True)
    at = lambda step: annealed_timesteps(a, step, 3, 1000)  # noqa: E731
    assert torch.equal(at(0), torch.full((3,), 750))
    assert torch.equal(at(4), torch.full((3,), 500))  # the middle: 0.75 - 0.5 * 0.5
    assert torch.equal(at(8), torch.full((3,), 250))
    assert torch.equal(at(20), torch.full((3,), 250))
    steps = [int(at(s)[0]) for s in range(9)]
    assert steps == sorted(steps, reverse=True) and len(set(steps)) == 9  # strictly falling
    top = TimestepAnnealing(t_min=(0.0, 0.0), t_max=(1.0, 1.0), steps=4, decreasing=True)
    assert int(annealed_timesteps(top, 0, 1, 1000)[0]) == 999  # capped at the last training step


def test_timestep_annealing_checks_its_ranges():
    with pytest.raises(ValueError, match="t_min <= t_max"):
        TimestepAnnealing(t_min=(0.5, 0.5), t_max=(0.4, 0.9))
    with pytest.raises(ValueError, match="t_min <= t_max"):
        TimestepAnnealing(t_max=(0.98, 1.2))
    with pytest.raises(ValueError, match="steps"):
        TimestepAnnealing(steps=0)


# ----------------------------------------------------------------------------------- guidance


def test_guide_at_scale_one_is_the_conditional_prediction_and_zero_the_unconditional():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    torch.testing.assert_close(guide(cond, uncond, 1.0), cond)
    torch.testing.assert_close(guide(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(guide(cond, uncond, 5.0), 5.0 * cond - 4.0 * uncond)


def test_guidance_rescale_against_the_hand_formula():
    """Lin et al. 2024: x = guided * std(cond) / std(guided) per sample, then r x + (1 - r) guided."""
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    guided = guide(cond, uncond, 5.0)
    c, x = cond.numpy().reshape(2, -1), guided.numpy().reshape(2, -1)
    ratio = (c.std(axis=1, ddof=1) / x.std(axis=1, ddof=1))[:, None]
    for r in (0.0, 0.7, 1.0):
        hand = r * (x * ratio) + (1 - r) * x
        np.testing.assert_allclose(rescale_guidance(guided, cond, r).numpy().reshape(2, -1), hand, rtol=1e-12)
    full = rescale_guidance(guided, cond, 1.0).reshape(2, -1)
    torch.testing.assert_close(full.std(dim=1), cond.reshape(2, -1).std(dim=1))  # the conditional spread, per sample
    assert rescale_guidance(guided, cond, 0.0) is guided
    # the same as what diffusers' pipelines do with guidance_rescale
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    torch.testing.assert_close(rescale_guidance(guided, cond, 0.7), rescale_noise_cfg(guided, cond, guidance_rescale=0.7))


def test_default_and_resolved_guidance_rescale():
    assert default_guidance_rescale({"rescale_betas_zero_snr": True}) == 0.7  # Lin et al.'s 0.7 for a zero-SNR schedule
    assert default_guidance_rescale({}) == 0.0
    assert default_guidance_rescale(SimpleNamespace(config={"rescale_betas_zero_snr": False})) == 0.0
    assert resolve_guidance_rescale({"rescale_betas_zero_snr": True}, None) == 0.7
    assert resolve_guidance_rescale({"rescale_betas_zero_snr": True}, 0.0) == 0.0
    with pytest.raises(ValueError, match="guidance_rescale"):
        resolve_guidance_rescale({}, 1.5)


def test_predict_guides_one_batched_call_of_both_halves():
    calls = []

    def unet(x, t, encoder_hidden_states, added_cond_kwargs=None):
        calls.append((len(x), added_cond_kwargs))
        scale = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=x * scale + t.view(-1, 1, 1, 1).float())

    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 3, 3, generator=g), torch.tensor([10, 700])
    text, empty = torch.randn(2, 5, 8, generator=g) + 1.0, torch.randn(2, 5, 8, generator=g)
    tokens = torch.randn(2, 6, 8, generator=g)
    cond, uncond = unet(x, t, text).sample, unet(x, t, empty).sample
    calls.clear()
    torch.testing.assert_close(predict(unet, x, t, text, tokens), cond)
    assert calls[-1][0] == 2 and calls[-1][1]["image_embeds"][0].shape == (2, 1, 6, 8)
    torch.testing.assert_close(predict(unet, x, t, text, tokens, 5.0, empty), uncond + 5.0 * (cond - uncond))
    assert calls[-1][0] == 4 and calls[-1][1]["image_embeds"][0].shape == (4, 1, 6, 8)  # both halves, one call
    torch.testing.assert_close(predict(unet, x, t, text, None, 5.0, empty, guidance_rescale=0.7),
                               rescale_guidance(guide(cond, uncond, 5.0), cond, 0.7))
    assert calls[-1][1] is None  # no image tokens: a plain U-Net call
    with pytest.raises(ValueError, match="uncond_states"):
        predict(unet, x, t, text, tokens, 5.0)
