"""View control by a reward on the sampler's own output (ReFL/DRaFT-style): the View Mapper's tokens
drive an 8-step DDIM sampler from noise (CFG 5, backprop through all steps); the reader reads the
azimuth of the decoded image, and the loss is 1 - cos(read - (ref + asked)). Plus the plain
denoising loss. Judged by the direction test (+a vs -a) and PSNR to the true target on held-out pairs."""
import argparse, json, math, os, time
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(1)
from fourdistill.distill import DistillConfig, Distiller
from fourdistill.engine.loop import step_generators
from fourdistill.evaluate.control import held_out_pairs, read_against_asked
from fourdistill.evaluate.reader import load_reader
from fourdistill.generate import ControlledPipeline, ViewChange
from fourdistill.io import image_grid, save_image
from fourdistill.mappers.neti import FourierEncoding

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, default=200)
p.add_argument("--batch", type=int, default=4)
p.add_argument("--reward", type=float, default=0.5)
p.add_argument("--sigma_view", type=float, default=20.0)
p.add_argument("--k", type=int, default=8)
p.add_argument("--eval_every", type=int, default=100)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--adapter", type=int, default=0, help="LoRA rank of a U-Net-side control adapter (embedding + LoRA); 0: none")
p.add_argument("--lr_adapter", type=float, default=1e-3)
args = p.parse_args()
os.makedirs(args.out, exist_ok=True)

cfg = DistillConfig(mode="view", steps=args.steps, batch_size=args.batch, grad_accum=1, ip_adapter_scale=1.0, p_same=0.0,
                    seed=0, out=args.out, view_alpha=0.2, lr=args.lr)
dist = Distiller(cfg)
pipe, unet, vae = dist.pipe, dist.pipe.unet, dist.pipe.vae
for m in dist.mapper_module.modules():
    if isinstance(m, FourierEncoding):
        m.weight[2:] *= args.sigma_view / 0.5  # condition rows: sigma 0.5 -> sigma_view
sched = dist.noise_scheduler
abar = sched.alphas_cumprod
pred_type = sched.config.prediction_type
import sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
adapter_opt = None
if args.adapter:
    from adapter import AdapterConfig, attach_adapter, adapter_parameters, set_controls, enable_adapter
    attach_adapter(unet, AdapterConfig(rank=args.adapter, embedding=True))
    adapter_opt = torch.optim.AdamW(adapter_parameters(unet), lr=args.lr_adapter, weight_decay=0.01)
    print("adapter params", sum(q.numel() for q in adapter_parameters(unet)), flush=True)
def controls(sph):
    if args.adapter:
        set_controls(unet, spherical_delta=torch.as_tensor(np.asarray(sph), dtype=torch.float32))
reader = load_reader(); reader.requires_grad_(False); reader.eval()
pipe.set_progress_bar_config(disable=True)
with torch.no_grad():
    tok = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    empty = pipe.text_encoder(tok).last_hidden_state  # (1, 77, C)
n_layers = len(dist.layers)
steps_t = [int(round(1000 - i * 1000 / args.k)) - 1 for i in range(args.k)]

def to_x0_eps(x, t, out):
    a = abar[t]
    if pred_type == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * out, (1 - a).sqrt() * x + a.sqrt() * out
    return (x - (1 - a).sqrt() * out) / a.sqrt().clamp(min=1e-4), out

def sample_with_grad(batch, gen, guidance=5.0, rescale=0.7):
    b = len(batch)
    with torch.no_grad():
        embeds = dist.image_embeds(batch.reference)[0]
    embeds2 = [torch.cat([embeds, embeds])]
    neg = empty.expand(b, -1, -1)[None].expand(n_layers, -1, -1, -1)
    x = torch.randn((b, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size), generator=gen)
    for i, t in enumerate(steps_t):
        tv = torch.full((b,), t)
        conds = dist.conditions(batch, tv)
        allc = torch.cat([neg, conds], dim=1)
        out = unet(torch.cat([x, x]), torch.cat([tv, tv]), encoder_hidden_states=allc[0], added_cond_kwargs={"image_embeds": embeds2},
                   cross_attention_kwargs={"layer_conditions": allc}).sample
        un, co = out.chunk(2)
        g = un + guidance * (co - un)
        if rescale > 0:
            std_c = co.std(dim=(1, 2, 3), keepdim=True); std_g = g.std(dim=(1, 2, 3), keepdim=True)
            g = rescale * g * (std_c / std_g) + (1 - rescale) * g
        x0, eps = to_x0_eps(x, t, g)
        if i + 1 < len(steps_t):
            ap = abar[steps_t[i + 1]]
            x = ap.sqrt() * x0 + (1 - ap).sqrt() * eps
    img = (vae.decode(x0 / vae.config.scaling_factor).sample + 1) / 2
    return img.clamp(0, 1)

def reward_loss(batch, img):
    with torch.no_grad():
        ref_az = reader.read_pose((batch.reference + 1) / 2)["azimuth_deg"]
    raw = reader.pose_outputs(reader.encode(reader.prepare(img)))
    u = raw[:, :2] / raw[:, :2].norm(dim=1, keepdim=True).clamp(min=1e-6)
    tau = torch.deg2rad(ref_az + batch.spherical_delta[:, 0].float())
    return (1 - (u[:, 0] * torch.sin(tau) + u[:, 1] * torch.cos(tau))).mean()

vpairs = held_out_pairs("view", 16, 200, 64, seed=0)
def generate(cp, pairs, view):
    out = []
    for i in range(0, len(pairs.captions), 8):
        sl = slice(i, i + 8)
        controls([v.spherical for v in view[sl]])
        out.append(cp(pairs.captions[sl], pairs.reference[sl], view=view[sl], num_inference_steps=20, guidance_scale=5.0, seed=i, ip_adapter_scale=1.0))
    return np.concatenate(out)

def evaluate(step):
    dist.mapper_module.eval()
    cp = ControlledPipeline(pipe, conditioner=dist.mapper_module)
    res = {"step": step}
    with torch.no_grad():
        a = np.abs(vpairs.spherical_delta[:, 0]).clip(30, 90)
        gp = generate(cp, vpairs, [ViewChange(float(x), 0.0, 0.0) for x in a])
        gm = generate(cp, vpairs, [ViewChange(float(-x), 0.0, 0.0) for x in a])
        ref = torch.tensor(vpairs.reference).permute(0, 3, 1, 2)
        rp = reader.read_pair(ref, torch.tensor(gp).permute(0, 3, 1, 2))["relative_azimuth_deg"].numpy()
        rm = reader.read_pair(ref, torch.tensor(gm).permute(0, 3, 1, 2))["relative_azimuth_deg"].numpy()
        res["view_diff_grey"] = float(np.abs(gp - gm).mean() * 255)
        res["view_read_plus"] = float(np.median(rp)); res["view_read_minus"] = float(np.median(rm))
        asked = np.concatenate([a, -a]); read = np.concatenate([rp, rm])
        res["view_slope"] = float((read * asked).sum() / (asked ** 2).sum())
        res["view_med_err"] = float(np.median(np.abs((read - asked + 180) % 360 - 180)))
        gv = generate(cp, vpairs, [ViewChange(*map(float, s)) for s in vpairs.spherical_delta])
        rr = read_against_asked(reader, vpairs, gv)["azimuth"]
        res["view_pairs_slope"] = rr["slope"]; res["view_pairs_med_err"] = rr["median_error"]
        res["view_psnr"] = float(np.mean(10 * np.log10(1 / ((gv - vpairs.target) ** 2).mean(axis=(1, 2, 3)))))
        if args.adapter: enable_adapter(unet, False)
        gn = np.concatenate([cp(vpairs.captions[i:i+8], vpairs.reference[i:i+8], view=[ViewChange()] * 8, num_inference_steps=20, guidance_scale=5.0,
                                seed=i, ip_adapter_scale=1.0, mapped=False) for i in (0, 8)])
        if args.adapter: enable_adapter(unet, True)
        res["ip_only_psnr"] = float(np.mean(10 * np.log10(1 / ((gn - vpairs.target) ** 2).mean(axis=(1, 2, 3)))))
        save_image(f"{args.out}/eval_{step:05d}.png", image_grid(np.concatenate([vpairs.reference[:8], gm[:8], gp[:8], gv[:8], vpairs.target[:8]]), rows=5))
    dist.mapper_module.train()
    print(json.dumps(res), flush=True)
    with open(f"{args.out}/eval.jsonl", "a") as f: f.write(json.dumps(res) + "\n")

t0 = time.time(); hist = []
for step in range(1, args.steps + 1):
    np_rng, gen = step_generators(0, step, 0)
    torch.manual_seed(int(np_rng.integers(2**62)))
    batch = dist.sampler.batch(args.batch, rng=np_rng)
    controls(batch.spherical_delta)
    plain = dist.loss(batch, gen)
    loss = plain
    if args.reward > 0:
        img = sample_with_grad(batch, gen)
        r = reward_loss(batch, img)
        loss = loss + args.reward * r
    else:
        r = torch.tensor(0.0)
    dist.optimizer.zero_grad(set_to_none=True)
    if adapter_opt: adapter_opt.zero_grad(set_to_none=True)
    loss.backward()
    dist.optimizer.step()
    if adapter_opt: adapter_opt.step()
    hist.append((float(plain), float(r)))
    if step % 10 == 0:
        h = np.array(hist[-10:]).mean(0)
        print(f"step {step} plain {h[0]:.4f} reward {h[1]:.4f} {time.time()-t0:.0f}s", flush=True)
    if step % args.eval_every == 0 or step == args.steps:
        evaluate(step)
        torch.save({"mappers": dist.mapper_module.state_dict(), "unet_trainable": {n: q.detach() for n, q in unet.named_parameters() if q.requires_grad}}, f"{args.out}/state.pt")
