"""`fourdistill teachers train|info|sample`: the diffusion stacks."""

from __future__ import annotations

import argparse

from ..diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS


def register(sub) -> None:
    parser = sub.add_parser("teachers", help="the diffusion stacks: train the embedded one, inspect or sample any")
    tsub = parser.add_subparsers(dest="teachers_command", metavar="ACTION")
    parser.set_defaults(handler=lambda args: parser.print_help() or 0)

    train = tsub.add_parser(
        "train",
        help="train the tiny stack on world renders (VAE, then U-Net + text encoder + IP-Adapter)",
        description="Train the tiny Stable-Diffusion-layout stack with IP-Adapter on world renders. "
        "Seeded; checkpoints every few hundred steps into OUT/checkpoint; --resume continues. "
        "The finished stack is OUT/stack (the layout `load_stack` and StableDiffusionPipeline read).",
    )
    train.add_argument("--out", required=True, help="run folder (renders, checkpoints, samples, tensorboard)")
    train.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    train.add_argument("--config", default=None, help="JSON file overriding TrainConfig fields (e.g. a smaller stack); flags override it")
    train.add_argument("--seed", type=int, default=None, help="seed of everything (default 0)")
    train.add_argument("--scenes", type=int, default=None, help="training scenes (seeds 0..N-1; default 2000)")
    train.add_argument("--views", type=int, default=None, help="renders per scene (default 4)")
    train.add_argument("--objects", type=object_range, default=None, metavar="LO[-HI]", help="objects per scene, e.g. 1 (the easier world) or 1-2 (default: the world's own range)")
    train.add_argument("--vae-steps", type=int, default=None, help="VAE steps (default 3000)")
    train.add_argument(
        "--decoder-steps", type=int, default=None, metavar="N",
        help="with --init: first train that stack's VAE decoder for N steps, its encoder frozen, so the latents and the U-Net stay valid "
        "(as Stable Diffusion's ft-MSE decoder; --unet-steps 0 for the decoder alone)",
    )
    train.add_argument(
        "--vae-object-weight", type=float, default=None, metavar="W",
        help="the VAE phases weigh an object pixel's error 1 + W against 1 for sky and ground (default 0): objects are under a tenth of the pixels but all the captions name",
    )
    train.add_argument(
        "--vae-finetune-steps", type=int, default=None, metavar="N",
        help="with --init: first train that stack's whole VAE for N steps and measure its scaling factor again; the latents move, so give the U-Net steps to follow",
    )
    train.add_argument("--unet-steps", type=int, default=None, help="U-Net steps (default 1300); with --resume, extends the run to this many")
    train.add_argument(
        "--cooldown", type=int, default=None,
        help="end with this many U-Net steps of linear learning-rate decay to zero (default 0: constant); with --resume, may be added to a run whose decay has not begun",
    )
    train.add_argument(
        "--vae-from", default=None, metavar="STACK",
        help="a fresh run takes this stack's trained VAE ('embedded' or a folder) instead of training one, and builds everything else at the config's sizes (e.g. a wider U-Net through --config)",
    )
    train.add_argument("--init", default=None, metavar="STACK", help="start the U-Net phase from this stack ('embedded' or a folder trained by this command): its sizes, VAE, tokenizer and (unless --prediction is given) prediction target; no VAE phase (but see --decoder-steps)")
    train.add_argument("--ip-tokens", type=int, default=None, metavar="N", help="with --init: resize the IP-Adapter's Resampler to N image tokens (its learned queries repeated)")
    train.add_argument(
        "--prediction", choices=("epsilon", "v_prediction"), default=None,
        help="what the U-Net predicts (default epsilon, as SD 1.x; v_prediction as SD 2.x), saved in the scheduler config",
    )
    train.add_argument("--zero-terminal-snr", action="store_true", default=None, help="rescale the noise schedule so its last step is pure noise (needs --prediction v_prediction)")
    train.add_argument(
        "--high-noise-fraction", type=float, default=None, metavar="F",
        help="fraction of each batch trained at the noisiest timesteps, [--high-noise-start, 1000) (default 0: all uniform)",
    )
    train.add_argument("--high-noise-start", type=int, default=None, metavar="T", help="first timestep of that range (default 700)")
    train.add_argument(
        "--self-input-fraction", type=float, default=None, metavar="F",
        help="fraction of each batch trained on what the sampler feeds the middle steps: the U-Net's own first-step estimate, noised to a timestep in [--self-input-start, --self-input-end), with the true image as target (default 0)",
    )
    train.add_argument("--self-input-start", type=int, default=None, metavar="T", help="first timestep of that range (default 200)")
    train.add_argument("--self-input-end", type=int, default=None, metavar="T", help="end of that range, exclusive (default 800)")
    train.add_argument(
        "--self-input-clean-loss", action="store_true", default=None,
        help="score the self-input samples on the clean latents their output implies, not on the prediction target (whose weight on that error passes 1000 near t = 0)",
    )
    train.add_argument("--self-input-jumps", type=int, default=None, metavar="J", help="DDIM steps from pure noise to that timestep, each from the U-Net's own estimate (default 1)")
    train.add_argument(
        "--self-input-keep-image", action="store_true", default=None,
        help="never drop the image prompt of a self-input sample: only an image prompt pins the layout that those samples teach the U-Net to keep; "
        "from text alone the first step is a blur, and teaching the later steps to turn that blur into one true image teaches them to blur",
    )
    train.add_argument(
        "--image-path-only", action="store_true", default=None,
        help="train only the image prompt's path (image encoder, Resampler, decoupled key/value weights) on a frozen U-Net and text encoder, "
        "as IP-Adapter is trained: text-to-image stays exactly what it was",
    )
    train.add_argument(
        "--preserve-text-fraction", type=float, default=None, metavar="F",
        help="with --init: add this fraction of a batch of text-alone samples (no image prompt), on the input the --init stack's own sampler gives "
        "(--self-input-jumps DDIM steps from pure noise), scored against that stack's output: the image prompt can learn to hold its layout "
        "while text alone keeps drawing what it drew (default 0)",
    )
    train.add_argument("--preserve-text-weight", type=float, default=None, metavar="W", help="weight of that term next to the diffusion loss (default 1)")
    train.add_argument(
        "--preserve-text-guidance", type=float, default=None, metavar="G",
        help="hold what classifier-free guidance at scale G makes of text alone (the guided and the unconditional predictions, "
        "on the --init stack's guided sampler input) rather than the caption's prediction alone; guidance multiplies drift in "
        "their difference by G (default 0: the caption's prediction alone)",
    )
    train.add_argument("--batch", type=int, default=None, help="U-Net batch size (default 32)")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    train.add_argument("--sample-every", type=int, default=None, help="steps between sample grids (default 250)")
    train.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 100)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    info = tsub.add_parser("info", help="what a stack holds: parts, sizes, cross-attention layers")
    info.add_argument("model", nargs="?", default=None, help="'embedded' (default), a folder, or a hub id")
    info.set_defaults(handler=_info)

    sample = tsub.add_parser("sample", help="generate images from captions (and held-out reference renders)")
    sample.add_argument("--model", default=None, help="'embedded' (default), a folder, or a hub id")
    sample.add_argument("--caption", action="append", default=None, help="a caption (repeatable); default: held-out world captions")
    sample.add_argument("--n", type=int, default=8, help="held-out scenes when no caption is given (default 8)")
    sample.add_argument("--no-image-prompt", action="store_true", help="text only (IP-Adapter scale 0)")
    sample.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"DPM-Solver steps (default {DEFAULT_STEPS})")
    sample.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help=f"guidance scale (default {DEFAULT_GUIDANCE})")
    sample.add_argument("--guidance-rescale", type=float, default=None, metavar="R",
                        help="rescale the guided prediction towards the conditional one's spread (diffusers' guidance_rescale, Lin et al.); "
                        "default: 0.7 for a zero-terminal-SNR stack, else 0")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--evaluate", action="store_true", help="also print text-to-image judge accuracy and image-prompt PSNR on the held-out scenes")
    sample.add_argument("--objects", type=object_range, default=None, metavar="LO[-HI]", help="draw the held-out scenes with this many objects, as a stack trained with `train --objects` saw (default: the world's own range)")
    sample.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own; 1 keeps a shared CPU responsive)")
    sample.add_argument("--out", required=True, help="PNG grid to write")
    sample.set_defaults(handler=_sample)


def _train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..evaluate.stack import write_sample_grid
    from ..teachers.image.train import TrainConfig, train

    cfg = TrainConfig()
    if args.config:
        if args.resume:
            raise ValueError(f"--config cannot change a run being resumed (its config is in {args.out}/train_config.json)")
        path = Path(args.config)
        try:
            cfg = TrainConfig.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such training config file") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{path}: not a training config ({exc})") from None
    for name, value in (
        ("seed", args.seed),
        ("vae_steps", args.vae_steps),
        ("decoder_steps", args.decoder_steps),
        ("vae_finetune_steps", args.vae_finetune_steps),
        ("vae_object_weight", args.vae_object_weight),
        ("unet_steps", None if args.resume else args.unet_steps),
        ("cooldown_steps", None if args.resume else args.cooldown),
        ("batch", args.batch),
        ("high_noise_fraction", args.high_noise_fraction),
        ("high_noise_start", args.high_noise_start),
        ("self_input_fraction", args.self_input_fraction),
        ("self_input_start", args.self_input_start),
        ("self_input_end", args.self_input_end),
        ("self_input_jumps", args.self_input_jumps),
        ("self_input_clean_loss", args.self_input_clean_loss),
        ("self_input_keep_image", args.self_input_keep_image),
        ("image_path_only", args.image_path_only),
        ("preserve_text_fraction", args.preserve_text_fraction),
        ("preserve_text_weight", args.preserve_text_weight),
        ("preserve_text_guidance", args.preserve_text_guidance),
        ("threads", args.threads),
        ("sample_every", args.sample_every),
        ("checkpoint_every", args.checkpoint_every),
    ):
        if value is not None:
            if args.resume:
                raise ValueError(f"--{name.replace('_', '-')} cannot change a run being resumed (its config is in {args.out}/train_config.json)")
            setattr(cfg, name, value)
    if args.init is not None:
        cfg.init_from = args.init
    if args.vae_from is not None:
        if args.resume:
            raise ValueError(f"--vae-from cannot change a run being resumed (its config is in {args.out}/train_config.json)")
        cfg.vae_from = args.vae_from
    if args.ip_tokens is not None:
        if args.init is None:
            raise ValueError("--ip-tokens resizes the stack given by --init; without --init set the size in --config (stack.ip_adapter.num_tokens)")
        if args.ip_tokens < 1:
            raise ValueError(f"--ip-tokens {args.ip_tokens}: needs at least one image token")
        cfg.init_ip_tokens = args.ip_tokens
    if args.prediction is not None:
        cfg.stack.noise.prediction_type = args.prediction
    if args.zero_terminal_snr:
        cfg.stack.noise.zero_terminal_snr = True
    if args.resume and (args.init is not None or args.prediction is not None or args.zero_terminal_snr):
        raise ValueError(f"--init/--ip-tokens/--prediction/--zero-terminal-snr cannot change a run being resumed (its config is in {args.out}/train_config.json)")
    if args.scenes is not None:
        cfg.data.n_scenes = args.scenes
    if args.views is not None:
        cfg.data.views_per_scene = args.views
    if args.objects is not None:
        cfg.data.n_objects = args.objects
    if args.resume and (args.scenes is not None or args.views is not None or args.objects is not None):
        raise ValueError(f"--scenes/--views/--objects cannot change a run being resumed (its config is in {args.out}/train_config.json)")
    if not args.resume:
        cfg = TrainConfig.from_dict(cfg.to_dict())  # checks the values the flags set
    train(args.out, None if args.resume else cfg, resume=args.resume, progress=not args.no_progress, extend_unet_steps=args.unet_steps if args.resume else None,
          cooldown_steps=args.cooldown if args.resume else None, sample_grid=write_sample_grid)
    return 0


def object_range(text: str) -> tuple[int, int]:
    """'1' -> (1, 1), '1-2' -> (1, 2): an inclusive range of objects per scene (argparse type)."""
    from ..world import WorldConfig

    lo, sep, hi = text.partition("-")
    try:
        rng = (int(lo), int(hi if sep else lo))
        WorldConfig(n_objects=rng)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LO or LO-HI with 1 <= LO <= HI <= 4 ({e})") from None
    return rng


def _info(args: argparse.Namespace) -> int:
    from ..teachers.image.load import describe_stack, load_stack

    pipe = load_stack(args.model)
    for line in describe_stack(pipe):
        print(line)
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import image_grid, save_image
    from ..world import WorldConfig
    from ..evaluate.stack import evaluate_stack, generate, held_out_references
    from ..teachers.image.load import load_stack

    world = None if args.objects is None else WorldConfig(n_objects=args.objects)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    pipe = load_stack(args.model)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if args.caption:
        captions, refs = args.caption, None
    else:
        ref = held_out_references(args.n, size, args.seed, world)
        captions, refs = ref.captions, (None if args.no_image_prompt else ref.rgb)
    images = generate(pipe, captions, refs, 0.0 if args.no_image_prompt else 1.0, args.steps, args.guidance, args.seed, guidance_rescale=args.guidance_rescale)
    rows = images if refs is None else np.concatenate([refs, images])
    save_image(args.out, image_grid(rows, rows=1 if refs is None else 2))
    for i, c in enumerate(captions):
        print(f"{i}: {c}")
    print(f"wrote {args.out}")
    if args.evaluate:
        q = evaluate_stack(pipe, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance, world=world, guidance_rescale=args.guidance_rescale)
        for k, v in q.to_dict().items():
            print(f"{k}: {v}")
    return 0
