"""Noise schedules, prediction targets and timesteps.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"): abar_t is the cumulative
product of the schedule's alphas at timestep t, and a noisy input is
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. A U-Net predicts one of

    epsilon       eps                                      (SD 1.x)
    v_prediction  v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0   (Salimans & Ho 2022, SD 2.x 768-v)
    sample        x0

and each converts to the others given x_t and abar_t. Every function takes a diffusers scheduler
(its `config.prediction_type` and `alphas_cumprod`) and tensors; latents are (N, C, h, w),
timesteps (N,) integer indices into the training schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

# Stable Diffusion's training noise schedule: DDPM, 1000 steps, scaled_linear betas
# 0.00085..0.012, epsilon prediction (the SD 1.x scheduler config). NoiseConfig can change the
# prediction target and the end of the schedule (see noise_schedule).
NOISE_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    steps_offset=1,
)

PREDICTION_TYPES = ("epsilon", "v_prediction")  # what NoiseConfig may train
_CONVERTIBLE = ("epsilon", "v_prediction", "sample")  # what the conversions below read


@dataclass
class NoiseConfig:
    """What the U-Net predicts and where the noise schedule ends; saved in the scheduler config,
    so StableDiffusionPipeline samples the stack correctly with no extra argument.

    prediction_type: "epsilon" (SD 1.x) or "v_prediction" (SD 2.x 768-v: v = sqrt(abar) eps -
    sqrt(1 - abar) x0). The epsilon loss weighs the error of the implied clean image by the
    signal-to-noise ratio, about 0.005 at the noisiest step, so the steps that set an image's
    layout barely count; v weighs it by SNR + 1, at least 1 everywhere.
    zero_terminal_snr: rescale the betas so the last training step is pure noise (Lin et al.
    2024, "Common diffusion noise schedules and sample steps are flawed"), as sampling starts from
    pure noise; sampling then uses "trailing" timesteps, so it starts at that last step. Needs
    v_prediction (epsilon is undefined where no signal is left).
    """

    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"NoiseConfig.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ValueError("NoiseConfig.zero_terminal_snr needs prediction_type 'v_prediction'")


def noise_schedule(noise: NoiseConfig | None = None) -> dict:
    """Scheduler keyword arguments: SD's schedule with `noise`'s prediction target and ending."""
    noise = noise or NoiseConfig()
    out = dict(NOISE_SCHEDULE, prediction_type=noise.prediction_type)
    if noise.zero_terminal_snr:
        out.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return out


def training_scheduler(noise: NoiseConfig | None = None):
    """DDPM with Stable Diffusion's noise schedule (what a stack is trained with)."""
    return DDPMScheduler(**noise_schedule(noise), clip_sample=False)


def inference_scheduler(noise: NoiseConfig | None = None):
    """DPM-Solver multistep over the training schedule, the sampler a stack ships with (run for
    fourdistill.diffusion.DEFAULT_STEPS steps)."""
    return DPMSolverMultistepScheduler(**noise_schedule(noise))


# ------------------------------------------------------------------------ prediction conversions


def _prediction_kind(noise_scheduler) -> str:
    kind = noise_scheduler.config.prediction_type
    if kind not in _CONVERTIBLE:
        raise ValueError(f"scheduler prediction_type {kind!r} is not supported (epsilon, v_prediction or sample)")
    return kind


def alphas_at(noise_scheduler, timesteps, like):
    """abar at `timesteps` (N,), shaped (N, 1, ..., 1) to broadcast over `like` (N, ...), in
    `like`'s dtype and device."""
    return noise_scheduler.alphas_cumprod.to(like)[timesteps].view(-1, *([1] * (like.ndim - 1)))


def prediction_target(noise_scheduler, latents, noise, timesteps):
    """What the U-Net is trained to output under `noise_scheduler`'s prediction type, for the
    input add_noise makes of (latents, noise, timesteps): the noise (epsilon), the velocity
    sqrt(abar) eps - sqrt(1 - abar) x0 (v_prediction) or the clean latents (sample)."""
    kind = _prediction_kind(noise_scheduler)
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    return latents


def predicted_clean_latents(noise_scheduler, noisy, pred, timesteps):
    """x0 implied by a U-Net output `pred` on `noisy` at `timesteps` (the inverse of
    prediction_target): (x_t - sqrt(1 - abar) eps) / sqrt(abar) from epsilon,
    sqrt(abar) x_t - sqrt(1 - abar) v from v, the output itself from sample."""
    kind = _prediction_kind(noise_scheduler)
    if kind == "sample":
        return pred
    a = alphas_at(noise_scheduler, timesteps, noisy)
    if kind == "epsilon":
        return (noisy - (1 - a).sqrt() * pred) / a.sqrt()
    return a.sqrt() * noisy - (1 - a).sqrt() * pred


def predicted_noise(noise_scheduler, noisy, pred, timesteps):
    """eps implied by a U-Net output `pred` on `noisy` at `timesteps`: the output itself from
    epsilon, sqrt(abar) v + sqrt(1 - abar) x_t from v, (x_t - sqrt(abar) x0) / sqrt(1 - abar)
    from sample. Score distillation's gradient is this minus the noise that was added."""
    kind = _prediction_kind(noise_scheduler)
    if kind == "epsilon":
        return pred
    a = alphas_at(noise_scheduler, timesteps, noisy)
    if kind == "v_prediction":
        return a.sqrt() * pred + (1 - a).sqrt() * noisy
    return (noisy - a.sqrt() * pred) / (1 - a).sqrt()


def target_for_clean(noise_scheduler, noisy, latents, timesteps):
    """The U-Net output under which `noisy` at `timesteps` denoises to `latents`: prediction_target
    for an input that add_noise did not make from these latents (predicted_clean_latents of it
    gives `latents` back)."""
    kind = _prediction_kind(noise_scheduler)
    if kind == "sample":
        return latents
    a = alphas_at(noise_scheduler, timesteps, noisy)
    if kind == "epsilon":
        return (noisy - a.sqrt() * latents) / (1 - a).sqrt()
    return (a.sqrt() * noisy - latents) / (1 - a).sqrt()


def clean_error_weight(noise_scheduler, timesteps, like):
    """Per-sample factor w with w * |output error|^2 = |implied clean-latent error|^2 at
    `timesteps`, shaped like alphas_at: 1 - abar for v, (1 - abar) / abar for epsilon, 1 for
    sample. Weighting a prediction loss by it turns it into a loss on the clean latents."""
    kind = _prediction_kind(noise_scheduler)
    a = alphas_at(noise_scheduler, timesteps, like)
    if kind == "sample":
        return a.new_ones(a.shape)
    return (1 - a) if kind == "v_prediction" else (1 - a) / a


# ----------------------------------------------------------------------------------- timesteps


def sample_timesteps(n: int, n_train: int, gen=None, high_noise_fraction: float = 0.0, high_noise_start: int = 0):
    """n training timesteps (N,) int64: uniform over [0, n_train), except that the first
    round(high_noise_fraction * n) of them are uniform over [high_noise_start, n_train), the
    noisiest steps, where only the condition can say where things are. `gen`: a torch.Generator."""
    t = torch.randint(0, n_train, (n,), generator=gen)
    k = int(round(high_noise_fraction * n))
    if k > 0:
        t[:k] = torch.randint(high_noise_start, n_train, (k,), generator=gen)
    return t


@dataclass(frozen=True)
class TimestepAnnealing:
    """Where score distillation draws its timestep at optimisation step s, as data.

    t_min, t_max: (at step 0, at step `steps`) fractions of the training schedule's timesteps;
    the range [t_min, t_max] moves linearly between them and stays at the end values after
    `steps` (threestudio's [start_step, start_value, end_value, end_step] schedules of
    min/max_step_percent). The defaults are DreamFusion (Poole et al. 2022)'s t ~ U(0.02, 0.98),
    not annealed.
    decreasing: t is not drawn but falls linearly from the range's top at step 0 to its bottom at
    `steps`: DreamTime (Huang et al. 2023, "DreamTime: An Improved Optimization Strategy for
    Diffusion-Guided 3D Generation")'s monotonically non-increasing t, with its prior W(t) uniform.
    """

    t_min: tuple[float, float] = (0.02, 0.02)  # DreamFusion: 0.02
    t_max: tuple[float, float] = (0.98, 0.98)  # DreamFusion: 0.98
    steps: int = 1
    decreasing: bool = False

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"TimestepAnnealing.steps must be >= 1, got {self.steps}")
        for lo, hi in zip(self.t_min, self.t_max):
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"TimestepAnnealing: need 0 <= t_min <= t_max <= 1 at both ends, got t_min {self.t_min}, t_max {self.t_max}")


def _progress(annealing: TimestepAnnealing, step: int) -> float:
    return min(max(step / annealing.steps, 0.0), 1.0)


def timestep_range(annealing: TimestepAnnealing, step: int) -> tuple[float, float]:
    """[t_min, t_max] at optimisation `step`, fractions of the training schedule."""
    f = _progress(annealing, step)
    (lo0, lo1), (hi0, hi1) = annealing.t_min, annealing.t_max
    return lo0 + (lo1 - lo0) * f, hi0 + (hi1 - hi0) * f


def annealed_timesteps(annealing: TimestepAnnealing, step: int, n: int, n_train: int, gen=None):
    """n timesteps (N,) int64 at optimisation `step`: uniform over the integers
    [int(n_train t_min), int(n_train t_max)] (threestudio's rounding), or with `decreasing` all
    int(n_train t) for the step's t, capped at n_train - 1. `gen`: a torch.Generator."""
    lo, hi = timestep_range(annealing, step)
    if annealing.decreasing:
        t = hi - (hi - lo) * _progress(annealing, step)
        return torch.full((n,), min(int(n_train * t), n_train - 1), dtype=torch.int64)
    first, last = int(n_train * lo), min(int(n_train * hi), n_train - 1)
    return torch.randint(first, last + 1, (n,), generator=gen)
