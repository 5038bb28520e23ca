"""Score-distillation guidance (fourdistill.sds): each gradient against a hand computation on the
embedded stack (and a tiny random video U-Net of diffusers' real class), the normalisations,
the timestep ranges, optimisation that moves renders toward the teachers, bad input."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from fourdistill.diffusion.schedule import NoiseConfig, TimestepAnnealing, training_scheduler
from fourdistill.sds.core import GuidanceInputError, draw_timesteps, sds_loss
from fourdistill.sds.image import ImageSDS, ImageSDSConfig, ImageVSD, VSDConfig
from fourdistill.sds.multiview import MultiViewSDS, MultiViewSDSConfig
from fourdistill.sds.video import MOTION_NEGATIVE_PROMPT, VideoSDS, VideoSDSConfig
from fourdistill.teachers.multiview.load import MultiViewTeacher
from fourdistill.teachers.multiview.model import camera_input, multiview_unet

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTION = "a red cube next to a blue ball"


@pytest.fixture(scope="module")
def parts():
    from fourdistill.teachers.parts import load_base_parts

    return load_base_parts("embedded").eval()


@pytest.fixture(scope="module")
def prompts(parts):
    return ImageSDS(parts).prompts([CAPTION])


def with_scheduler(parts, kind: str):
    """The embedded parts under an epsilon (SD 1.x / 2.1 base) or a v-prediction zero-SNR schedule."""
    out = copy.copy(parts)
    out.scheduler = training_scheduler(NoiseConfig(kind, zero_terminal_snr=kind == "v_prediction"))
    return out


def cameras(n: int, offset_deg: float = 20.0, elevation_deg: float = 15.0):
    """n camera-to-world matrices 90 degrees apart in azimuth (4D-fy's multi-view batches)."""
    from fourdistill.cameras import orbit_pose

    return torch.stack([torch.as_tensor(orbit_pose(offset_deg + 90.0 * k, elevation_deg, 3.0), dtype=torch.float32) for k in range(n)])


def assert_near(actual, expected, rel: float = 1e-4):
    """Equal up to rel of the expected tensor's largest entry (batched and separate U-Net calls
    differ in the last float32 bits, and guidance scales multiply that)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * expected.abs().max().item())


def eps_by_hand(kind, pred, noisy, a):
    return pred if kind == "epsilon" else a.sqrt() * pred + (1 - a).sqrt() * noisy


def x0_by_hand(kind, pred, noisy, a):
    return (noisy - (1 - a).sqrt() * pred) / a.sqrt() if kind == "epsilon" else a.sqrt() * noisy - (1 - a).sqrt() * pred


# ------------------------------------------------------------------------------ image SDS / VSD


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("normalisation", ["mean", "sum"])
def test_sds_gradient_at_the_latents_is_w_times_guided_noise_minus_noise(parts, prompts, kind, normalisation):
    p = with_scheduler(parts, kind)
    s = 7.5
    guidance = ImageSDS(p, ImageSDSConfig(guidance_scale=s, normalisation=normalisation))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 16, 16, generator=gen).requires_grad_(True)
    noise, t = torch.randn(z.shape, generator=gen), torch.tensor([120, 760])
    out = guidance.latent_loss(z, prompts, t=t, noise=noise)
    out["loss"].backward()

    a = p.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    with torch.no_grad():
        cond = p.unet(noisy, t, encoder_hidden_states=prompts.cond.expand(2, -1, -1)).sample
        uncond = p.unet(noisy, t, encoder_hidden_states=prompts.uncond.expand(2, -1, -1)).sample
    eps = eps_by_hand(kind, uncond + s * (cond - uncond), noisy, a)
    grad = (1 - a) * (eps - noise)
    n = z.numel() if normalisation == "mean" else 2
    assert_near(z.grad, grad / n)
    torch.testing.assert_close(out["loss"], 0.5 * (grad ** 2).sum() / n, rtol=1e-4, atol=0)
    torch.testing.assert_close(out["w"], (1 - a).view(-1))
    assert out["t"].tolist() == [120, 760]
    torch.testing.assert_close(out["grad_norm"], grad.norm(), rtol=1e-4, atol=0)


def test_sds_gradient_is_clipped_and_freed_of_nans(parts, prompts):
    guidance = ImageSDS(parts, ImageSDSConfig(guidance_scale=100.0, grad_clip=0.01))
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    guidance.latent_loss(z, prompts, t=torch.tensor([500]), generator=torch.Generator().manual_seed(2))["loss"].backward()
    assert z.grad.abs().max() * z.numel() == pytest.approx(0.01, rel=1e-4)  # the clamp is reached
    grad = torch.tensor([float("nan"), float("inf"), 1.0])
    x = torch.zeros(3, requires_grad=True)
    sds_loss(x, torch.nan_to_num(grad).clamp(-2, 2), "sum", batch=1).backward()
    assert torch.isfinite(x.grad).all()


def test_vsd_gradient_is_w_times_guided_noise_minus_the_camera_loras(parts, prompts):
    vsd = ImageVSD(parts, VSDConfig(guidance_scale=7.5))
    with torch.no_grad():  # a LoRA and camera embedding that have trained a little
        for q in vsd.lora_parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=torch.Generator().manual_seed(q.numel())))
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 16, 16, generator=gen).requires_grad_(True)
    noise, t, cams = torch.randn(z.shape, generator=gen), torch.tensor([300, 600]), cameras(2)
    out = vsd.latent_loss(z, prompts, cams, t=t, noise=noise)
    out["loss"].backward()

    sched = vsd.scheduler  # v-prediction (the embedded stack)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    text, empty = prompts.cond.expand(2, -1, -1), prompts.uncond.expand(2, -1, -1)
    with torch.no_grad():
        cond, uncond = (parts.unet(noisy, t, encoder_hidden_states=e).sample for e in (text, empty))
        lora = vsd.lora_unet(noisy, t, encoder_hidden_states=text, class_labels=camera_input(cams)).sample
    grad = (1 - a) * (eps_by_hand("v", uncond + 7.5 * (cond - uncond), noisy, a) - eps_by_hand("v", lora, noisy, a))
    assert_near(z.grad, grad / z.numel())
    # the LoRA copy differs from the pretrained U-Net (else VSD would be SDS with eps_lora = eps)
    assert (lora - cond).abs().max() > 1e-3


def test_vsd_lora_loss_trains_only_the_lora_and_the_camera_embedding(parts, prompts):
    vsd = ImageVSD(parts, VSDConfig(lora_rank=4))
    names = {n for n, q in vsd.lora_unet.named_parameters() if q.requires_grad}
    assert names and all("lora_" in n or n.startswith("class_embedding.") for n in names)
    assert any(n.startswith("class_embedding.") for n in names)
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    cams = cameras(2)

    def loss_at(seed):
        return vsd.lora_loss(z, prompts, cams, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        before = sum(loss_at(100 + k).item() for k in range(4))
    opt = torch.optim.AdamW(vsd.lora_parameters(), lr=3e-3)
    for step in range(8):
        opt.zero_grad()
        loss = loss_at(100 + step % 4)
        loss.backward()
        if step == 0:
            assert all(q.grad is None for q in parts.unet.parameters())
            assert all((q.grad is not None) == q.requires_grad for q in vsd.lora_unet.parameters())
            assert vsd.lora_unet.class_embedding.linear_2.weight.grad.abs().sum() > 0
        opt.step()
    with torch.no_grad():
        after = sum(loss_at(100 + k).item() for k in range(4))
    assert after < 0.95 * before, (before, after)


# --------------------------------------------------------------------------- multi-view (MVDream)


@pytest.fixture(scope="module")
def mv_teacher(parts):
    mv = copy.copy(parts)
    mv.unet = multiview_unet(parts.unet, 4).eval()
    with torch.no_grad():  # a camera embedding that says something
        torch.nn.init.normal_(mv.unet.class_embedding.linear_2.weight, std=0.02, generator=torch.Generator().manual_seed(5))
    return MultiViewTeacher(mv, 4)


def test_multiview_x0_loss_matches_hand_computation_with_per_group_std_rescale(mv_teacher, prompts):
    s, r = 50.0, 0.5
    guidance = MultiViewSDS(mv_teacher, MultiViewSDSConfig(guidance_scale=s, rescale=r))
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(2, 4, 4, 16, 16, generator=gen).requires_grad_(True)
    noise, t = torch.randn(z.shape, generator=gen), torch.tensor([200, 800])
    cams = torch.stack([cameras(4), cameras(4, offset_deg=65.0, elevation_deg=30.0)])
    out = guidance.latent_loss(z, prompts, cams, t=t, noise=noise)
    out["loss"].backward()

    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    noisy = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    flat = noisy.reshape(8, 4, 16, 16)
    tt = t.repeat_interleave(4)
    labels = camera_input(cams).reshape(8, 16)
    with torch.no_grad():
        cond, uncond = (mv_teacher.unet(flat, tt, encoder_hidden_states=e.expand(8, -1, -1), class_labels=labels).sample.reshape(z.shape)
                        for e in (prompts.cond, prompts.uncond))
    x0 = x0_by_hand("v", uncond + s * (cond - uncond), noisy, a)
    x0_cond = x0_by_hand("v", cond, noisy, a)
    factor = x0_cond.reshape(2, -1).std(dim=1) / x0.reshape(2, -1).std(dim=1)  # one per group of 4 views
    assert abs(factor[0] - factor[1]) > 1e-3  # per group, not over the batch
    target = r * x0 * factor.view(2, 1, 1, 1, 1) + (1 - r) * x0
    assert_near(z.grad, (z.detach() - target) / z.numel())
    torch.testing.assert_close(out["loss"], 0.5 * ((z.detach() - target) ** 2).sum() / z.numel(), rtol=1e-4, atol=0)
    # one t per sample, shared by its views; "sum" divides by the images (4D-fy / threestudio)
    summed = MultiViewSDS(mv_teacher, MultiViewSDSConfig(guidance_scale=s, normalisation="sum"))
    loss_sum = summed.latent_loss(z.detach(), prompts, cams, t=t, noise=noise)["loss"]
    torch.testing.assert_close(loss_sum, out["loss"] * z.numel() / 8, rtol=1e-4, atol=0)


# ------------------------------------------------------------------------------------ video


@pytest.fixture(scope="module")
def video_parts(parts):
    """The embedded VAE and text encoder around a tiny random UNet3DConditionModel (Zeroscope's
    class; its attention_head_dim is the number of heads)."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(7)
    unet = UNet3DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=parts.text_encoder.config.hidden_size, attention_head_dim=4, norm_num_groups=8,
    ).eval().requires_grad_(False)
    out = copy.copy(parts)
    out.unet = unet
    return out


def test_video_sds_is_4dfys_guidance_with_motion_amplification(video_parts, prompts):
    s, k = 100.0, 3.0
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(1, 4, 4, 16, 16, generator=gen)
    noise, t = torch.randn(z.shape, generator=gen), torch.tensor([400])

    def grad_of(config):
        zz = z.clone().requires_grad_(True)
        VideoSDS(video_parts, config=config).latent_loss(zz, prompts, t=t, noise=noise)["loss"].backward()
        return zz.grad * z.numel()

    a = video_parts.training_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    noisy = a.sqrt() * z + (1 - a).sqrt() * noise
    with torch.no_grad():
        text, un = (video_parts.unet(noisy, t, encoder_hidden_states=e).sample for e in (prompts.cond, prompts.uncond))
    score = eps_by_hand("v", text + s * (text - un), noisy, a) - noise
    amplified = score.mean(dim=2, keepdim=True) + k * (score - score.mean(dim=2, keepdim=True))
    plain = grad_of(VideoSDSConfig(guidance_scale=s))
    assert_near(plain, (1 - a) * score)
    assert_near(grad_of(VideoSDSConfig(guidance_scale=s, motion_amplification=k)), (1 - a) * amplified)
    torch.testing.assert_close(grad_of(VideoSDSConfig(guidance_scale=s, motion_amplification=1.0)), plain, rtol=0, atol=0)
    assert (amplified - score).abs().max() > 1e-2  # k = 3 does change it


def test_video_normalisation_per_element_keeps_the_step_when_frames_double(video_parts, prompts):
    """Same content in every frame (and the same noise): with "mean" the loss and the gradient a
    parameter shared by all frames receives do not change from 4 to 8 frames; "sum" doubles them."""
    gen = torch.Generator().manual_seed(9)
    frame, noise1, t = torch.randn(1, 4, 1, 16, 16, generator=gen), torch.randn(1, 4, 1, 16, 16, generator=gen), torch.tensor([500])
    results = {}
    for normalisation in ("mean", "sum"):
        for frames in (4, 8):
            p = frame.clone().requires_grad_(True)
            out = VideoSDS(video_parts, config=VideoSDSConfig(normalisation=normalisation)).latent_loss(
                p.expand(-1, -1, frames, -1, -1), prompts, t=t, noise=noise1.expand(-1, -1, frames, -1, -1))
            out["loss"].backward()
            results[normalisation, frames] = out["loss"].item(), p.grad.clone()
    for frames in (4, 8):  # the tiny U-Net gives the same output on every frame of a constant clip
        assert results["mean", frames][0] > 0
    assert results["mean", 8][0] == pytest.approx(results["mean", 4][0], rel=1e-4)
    assert_near(results["mean", 8][1], results["mean", 4][1], rel=1e-3)
    assert results["sum", 8][0] == pytest.approx(2 * results["sum", 4][0], rel=1e-4)
    assert_near(results["sum", 8][1], 2 * results["sum", 4][1], rel=1e-3)


def test_video_frames_back_propagate_through_the_vae_as_a_subset(video_parts, prompts):
    frames = torch.rand(2, 4, 64, 64, 3, generator=torch.Generator().manual_seed(10)).requires_grad_(True)
    guidance = VideoSDS(video_parts, config=VideoSDSConfig(vae_grad_frames=1))
    out = guidance(frames, prompts, generator=torch.Generator().manual_seed(11))
    out["loss"].backward()
    carries = frames.grad.flatten(2).abs().sum(-1) > 0  # (clips, frames)
    assert carries.sum(dim=1).tolist() == [1, 1]
    z = guidance.encode(frames.detach(), generator=torch.Generator().manual_seed(12))
    assert z.shape == (2, 4, 4, 16, 16)  # (B, C, F, h, w)


def test_video_negative_prompt_is_the_unconditional_text(video_parts):
    guidance = VideoSDS(video_parts, config=VideoSDSConfig(negative_prompt=MOTION_NEGATIVE_PROMPT))
    states = guidance.prompts([CAPTION, "a green cone"])
    torch.testing.assert_close(states.uncond, video_parts.encode_text([MOTION_NEGATIVE_PROMPT] * 2))
    torch.testing.assert_close(VideoSDS(video_parts).prompts([CAPTION]).uncond, video_parts.encode_text([""]))


# ------------------------------------------------------------------- optimisation, timesteps


def _guidances(request, name):
    """(guidance, extra arguments, latent shape) of each teacher, moderate guidance scales."""
    ann = TimestepAnnealing(t_min=(0.2, 0.2), t_max=(0.8, 0.8))
    if name == "image":
        return ImageSDS(request.getfixturevalue("parts"), ImageSDSConfig(guidance_scale=7.5, timesteps=ann)), (), (1, 4, 16, 16)
    if name == "multiview":
        guidance = MultiViewSDS(request.getfixturevalue("mv_teacher"), MultiViewSDSConfig(guidance_scale=7.5, timesteps=ann))
        return guidance, (cameras(4)[None],), (1, 4, 4, 16, 16)
    return VideoSDS(request.getfixturevalue("video_parts"), config=VideoSDSConfig(guidance_scale=100.0, timesteps=ann)), (), (1, 4, 4, 16, 16)


@pytest.mark.parametrize("name,steps", [("image", 8), ("multiview", 8), ("video", 6)])
def test_a_few_steps_on_free_latents_lower_each_teachers_loss(request, prompts, name, steps):
    """Adam on free latents along the guidance; the loss at fixed (t, noise) draws, which a
    gradient of the wrong sign or scale would raise, falls."""
    guidance, extra, shape = _guidances(request, name)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(13)).mul(0.5).requires_grad_(True)
    draws = [(torch.tensor([200 + 200 * k]), torch.randn(shape, generator=torch.Generator().manual_seed(500 + k))) for k in range(3)]

    def held_loss():
        with torch.no_grad():
            return sum(guidance.latent_loss(z, prompts, *extra, t=t, noise=n)["loss"].item() for t, n in draws)

    before = held_loss()
    opt = torch.optim.Adam([z], lr=0.05)
    for step in range(steps):
        opt.zero_grad()
        guidance.latent_loss(z, prompts, *extra, step=step, generator=torch.Generator().manual_seed(step))["loss"].backward()
        opt.step()
    after = held_loss()
    assert after < 0.97 * before, (name, before, after)


def test_timesteps_stay_in_the_annealed_range_and_decrease_with_dreamtime(parts, prompts):
    ann = TimestepAnnealing(t_min=(0.5, 0.02), t_max=(0.98, 0.5), steps=100)
    sched = ImageSDS(parts).scheduler
    for step, (lo, hi) in {0: (500, 980), 50: (260, 740), 100: (20, 500), 400: (20, 500)}.items():
        t = draw_timesteps(ann, step, 2000, sched, torch.Generator().manual_seed(step))
        assert t.min() >= lo and t.max() <= hi and t.max() - t.min() > 0.9 * (hi - lo), (step, t.min(), t.max())
    guidance = ImageSDS(parts, ImageSDSConfig(timesteps=ann))
    z = torch.zeros(4, 4, 16, 16)
    t = guidance.latent_loss(z, prompts, step=100, generator=torch.Generator().manual_seed(14))["t"]
    assert t.min() >= 20 and t.max() <= 500
    dreamtime = ImageSDS(parts, ImageSDSConfig(timesteps=replace(ann, decreasing=True)))
    ts = [dreamtime.latent_loss(z[:1], prompts, step=s)["t"].item() for s in (0, 50, 100)]
    assert ts == [980, 500, 20]


# ------------------------------------------------------------------------------------ bad input


def test_bad_input_is_a_clear_error_naming_the_argument(parts, prompts, mv_teacher, video_parts):
    image = ImageSDS(parts)
    with pytest.raises(GuidanceInputError, match="captions: the list is empty"):
        image.prompts([])
    with pytest.raises(GuidanceInputError, match=r"captions\[1\]: expected a non-empty caption"):
        image.prompts([CAPTION, "  "])
    with pytest.raises(GuidanceInputError, match=r"images: expected shape \(B, H, W, 3\)"):
        image(torch.rand(64, 64, 3), prompts)
    with pytest.raises(GuidanceInputError, match="images: expected a torch tensor"):
        image([[0.0]], prompts)
    with pytest.raises(GuidanceInputError, match="latents: expected 4 latent channels"):
        image.latent_loss(torch.zeros(1, 3, 16, 16), prompts)
    with pytest.raises(GuidanceInputError, match="prompts: 2 captions for a batch of 3"):
        image.latent_loss(torch.zeros(3, 4, 16, 16), image.prompts([CAPTION, "a green cone"]))
    with pytest.raises(GuidanceInputError, match=r"cameras: expected \(2, 4, 4\)"):
        ImageVSD(parts).latent_loss(torch.zeros(2, 4, 16, 16), prompts, cameras(3))
    mv = MultiViewSDS(mv_teacher)
    with pytest.raises(GuidanceInputError, match=r"latents: expected latents \(B, V, C, h, w\)"):
        mv.latent_loss(torch.zeros(4, 4, 16, 16), prompts, cameras(4)[None])
    with pytest.raises(GuidanceInputError, match=r"cameras: expected \(1, 4, 4, 4\)"):
        mv.latent_loss(torch.zeros(1, 4, 4, 16, 16), prompts, cameras(4))
    with pytest.raises(GuidanceInputError, match=r"frames: expected shape \(B, F, H, W, 3\)"):
        VideoSDS(video_parts)(torch.rand(4, 64, 64, 3), prompts)
    with pytest.raises(GuidanceInputError, match="normalisation must be one of"):
        sds_loss(torch.zeros(2), torch.zeros(2), "per-frame")
    with pytest.raises(GuidanceInputError, match="rescale must lie in"):
        MultiViewSDSConfig(rescale=1.5)
    assert issubclass(GuidanceInputError, ValueError)


# ------------------------------------------------------------------------------ image-space loss


def _deaf_to_channel(vae, channel: int):
    """A copy of `vae` whose decoder ignores one latent channel (its post_quant_conv column zeroed),
    as a VAE trained with little KL ends up with channels collapsed to the prior."""
    vae = copy.deepcopy(vae)
    with torch.no_grad():
        vae.post_quant_conv.weight[:, channel] = 0
    return vae


def test_image_space_loss_is_the_pixel_distance_to_the_decoded_target():
    from fourdistill.sds.core import image_space_loss, vae_decode
    from tiny_models import tiny_vae

    vae = tiny_vae()
    gen = torch.Generator().manual_seed(11)
    images = torch.rand(2, 8, 8, 3, generator=gen).requires_grad_(True)
    target = torch.randn(2, 4, 8, 8, generator=gen)
    loss = image_space_loss(vae, images, target, resolution=16)
    loss.backward()
    with torch.no_grad():
        up = torch.nn.functional.interpolate(images.detach().permute(0, 3, 1, 2), (16, 16), mode="bilinear", align_corners=False)
        decoded = ((vae.decode(target / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(vae_decode(vae, target), decoded)
    torch.testing.assert_close(loss, 0.5 * ((up - decoded) ** 2).sum() / up.numel(), rtol=1e-5, atol=0)
    # the gradient reaches the renders through the resize only, never the encoder
    x = images.detach().requires_grad_(True)
    up = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), (16, 16), mode="bilinear", align_corners=False)
    (0.5 * ((up - decoded) ** 2).sum() / up.numel()).backward()
    torch.testing.assert_close(images.grad, x.grad)


def test_a_latent_channel_the_decoder_ignores_moves_no_colour_in_image_space():
    """The colour cast of the embedded text-to-4D runs: through the encoder, the target of a latent
    channel the decoder never reads still moves the renders' colours; decoded first, it cannot."""
    from fourdistill.sds.core import distillation_loss, image_space_loss, vae_encode
    from tiny_models import tiny_vae

    vae = _deaf_to_channel(tiny_vae(), 3)
    gen = torch.Generator().manual_seed(12)
    images = torch.rand(2, 16, 16, 3, generator=gen)
    with torch.no_grad():
        target = vae.encode(torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1).latent_dist.mean
    moved = target.clone()
    moved[:, 3] += 1.0  # a target that differs only where the decoder does not look

    def pixel_grad(loss_of):
        x = images.clone().requires_grad_(True)
        loss_of(x).backward()
        return x.grad

    def latent(tgt):
        return lambda x: distillation_loss(vae_encode(vae, x, generator=torch.Generator().manual_seed(0)), tgt)

    def image(tgt):
        return lambda x: image_space_loss(vae, x, tgt)

    through_encoder = pixel_grad(latent(moved)) - pixel_grad(latent(target))
    assert through_encoder.abs().max() > 1e-4  # the latent path does move colours for it
    torch.testing.assert_close(pixel_grad(image(moved)), pixel_grad(image(target)), rtol=0, atol=0)


@pytest.mark.parametrize("teacher", ["image", "multiview", "video"])
def test_loss_space_image_takes_each_teachers_target_in_pixels(parts, prompts, mv_teacher, video_parts, teacher):
    from fourdistill.sds.core import image_space_loss

    gen = torch.Generator().manual_seed(13)
    if teacher == "image":
        g = ImageSDS(parts, ImageSDSConfig(guidance_scale=10.0, loss_space="image"))
        renders, args, flat = torch.rand(2, 32, 32, 3, generator=gen), (), lambda r: r
        vae = parts.vae
    elif teacher == "multiview":
        g = MultiViewSDS(mv_teacher, MultiViewSDSConfig(guidance_scale=10.0, loss_space="image"))
        renders, args, flat = torch.rand(1, 4, 32, 32, 3, generator=gen), (cameras(4)[None],), lambda r: r.flatten(0, 1)
        vae = mv_teacher.parts.vae
    else:
        g = VideoSDS(video_parts, None, VideoSDSConfig(guidance_scale=10.0, loss_space="image"))
        renders, args, flat = torch.rand(1, 4, 32, 32, 3, generator=gen), (), lambda r: r.flatten(0, 1)
        vae = video_parts.vae
    x = renders.clone().requires_grad_(True)
    out = g(x, g.prompts([CAPTION]) if teacher == "video" else prompts, *args, step=0, generator=torch.Generator().manual_seed(1))
    out["loss"].backward()
    target = out["target"].transpose(1, 2).flatten(0, 1) if teacher == "video" else flat(out["target"])
    y = renders.clone().requires_grad_(True)
    batch = None if teacher == "image" else (4 if teacher == "multiview" else 1)
    image_space_loss(vae, flat(y), target, g.resolution, "mean", batch).backward()
    torch.testing.assert_close(x.grad, y.grad)
    assert out["loss"].item() > 0


def test_loss_space_is_checked():
    with pytest.raises(GuidanceInputError, match="loss_space"):
        ImageSDSConfig(loss_space="pixels")
    with pytest.raises(GuidanceInputError, match="loss_space"):
        MultiViewSDSConfig(loss_space="")
    with pytest.raises(GuidanceInputError, match="loss_space"):
        VideoSDSConfig(loss_space="rgb")
