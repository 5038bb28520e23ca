"""Short continued training of the shipped video teacher with one change; then the direction test.
usage: probe.py VARIANT STEPS OUT LATENTS (LATENTS: the latents.safetensors of a video teacher run, `fourdistill teachers train --config configs/teachers/video.yaml`)"""
import sys, time, json, numpy as np, torch
torch.set_num_threads(1)
from safetensors.torch import load_file
from fourdistill.teachers import load_teacher
from fourdistill.teachers.video.model import motion_parameters, video_unet_output
from fourdistill.world import make_scene, DEFAULT_ORBIT
from fourdistill.world.render import render_views
from fourdistill.diffusion.schedule import prediction_target, sample_timesteps
variant, steps, out, latents_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
T = load_teacher("video"); sch = T.training_scheduler
model = T.unet
for p in model.parameters(): p.requires_grad_(False)
params = motion_parameters(model)
for p in params: p.requires_grad_(True)
data = load_file(latents_file)
lat, scene, text = data["latents"], data["scene"], data["text"]  # (N, F, C, h, w)
directional = torch.tensor([any(o.motion in ("grow", "shrink", "orbit", "slide") for o in make_scene(s).objects) for s in range(1500)])
opt = torch.optim.AdamW(params, lr=3e-4)
def vloss(x0, t, noise, txt, reduce=True):
    b, f = x0.shape[:2]
    ft = t.repeat_interleave(f)
    noisy = sch.add_noise(x0.flatten(0, 1), noise.flatten(0, 1), ft).reshape(x0.shape)
    tgt = prediction_target(sch, x0.flatten(0, 1), noise.flatten(0, 1), ft).reshape(x0.shape)
    pred = video_unet_output(model, noisy.transpose(1, 2), t, txt).transpose(1, 2)
    return (pred - tgt) ** 2
start = time.time(); hist = []
model.train()
for step in range(steps):
    g = torch.Generator().manual_seed(step)
    idx = torch.randperm(len(lat), generator=g)[:4]
    x0 = lat[idx]; b = 4
    noise = torch.randn(x0.shape, generator=g)
    if variant == "hinoise":
        t = sample_timesteps(b, 1000, g, 0.75, 600)
    else:
        t = torch.randint(0, 1000, (b,), generator=g)
    drop = torch.rand(b, generator=g) < 0.1
    cap = torch.where(drop, torch.full_like(scene[idx], len(text) - 1), scene[idx])
    txt = text[cap]
    se = vloss(x0, t, noise, txt)
    if variant == "motionw":
        d = (x0 - x0.mean(1, keepdim=True)).abs().mean(2, keepdim=True)  # (B, F, 1, h, w)
        w = 1 + 3 * d / (d.mean() + 1e-6)
        loss = (se * w).mean() / w.mean()
    else:
        loss = se.mean()
    if variant == "contrast":
        keep = directional[scene[idx]] & ~drop
        if keep.any():
            k = keep.nonzero()[:, 0]
            fwd = se[k].mean(dim=(1, 2, 3, 4))
            rev = vloss(x0[k].flip(1), t[k], noise[k], txt[k]).mean(dim=(1, 2, 3, 4))
            loss = loss + 1.0 * torch.relu(0.02 * fwd.detach() + fwd - rev).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    hist.append(loss.item())
    if step % 50 == 0: print(step, np.mean(hist[-50:]), f"{time.time()-start:.0f}s", flush=True)
model.eval()
# direction test on held-out clips
rng = np.random.default_rng(0); res = T.resolution
clips, caps = [], []; s = 1_000_000
while len(clips) < 24:
    sc = make_scene(s); s += 1
    if not any(o.motion in ("grow", "shrink", "orbit", "slide") for o in sc.objects): continue
    cam = DEFAULT_ORBIT.sample(rng, res, res)
    tt = np.arange(8) / 8 + rng.uniform(0, 1 / 8)
    clips.append(render_views(sc, [cam] * 8, tt)["rgb"]); caps.append(sc.caption)
x = torch.from_numpy(np.stack(clips)).float()
res_ = {}
with torch.no_grad():
    z = T.vae.encode(x.flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean * T.vae.config.scaling_factor
    z = z.reshape(len(x), 8, *z.shape[1:])
    txt = T.encode_text(caps)
    for tv in (300, 600, 800, 950):
        g = torch.Generator().manual_seed(tv); noise = torch.randn(z.shape, generator=g)
        t = torch.full((len(z),), tv)
        lf = vloss(z, t, noise, txt).mean(dim=(1, 2, 3, 4)); lr_ = vloss(z.flip(1), t, noise, txt).mean(dim=(1, 2, 3, 4))
        res_[tv] = dict(fwd=lf.mean().item(), gap=(lr_ - lf).mean().item(), fwd_better=(lr_ > lf).float().mean().item())
        print(f"t={tv}: fwd {lf.mean():.4f} rev-fwd {(lr_-lf).mean():+.5f} fwd better {(lr_>lf).float().mean():.2f}", flush=True)
json.dump(dict(variant=variant, steps=steps, wall_s=time.time() - start, loss_last50=float(np.mean(hist[-50:])), test=res_), open(out + ".json", "w"), indent=1)
torch.save({n: p.detach() for n, p in model.named_parameters() if p.requires_grad}, out + ".pt")
