"""The training engine every fourdistill trainer is built on.

One loop, one checkpoint layout, one log schema, one configuration mechanism and one meaning
of `--resume`, so that a reconstruction, a mapper distillation, a teacher phase or the judge
read alike and resume alike. The modules, from the bottom up:

    run.py         invoked_command(), set_threads(): what a command records about itself
    checkpoint.py  atomic checkpoint folders (weights, optimizer, RNG, step, wall_s, metadata)
    schedules.py   learning-rate factors as plain functions of the step
    flags.py       argparse types that check a numeric flag where it is parsed, naming it
    config.py      typed dataclass configs from --config FILE and flags; the --resume rule
    loop.py        per-step randomness, the step loop (bar, wall clock, checkpoints, stop),
                   the JSONL + TensorBoard log, non-finite loss detection
    cards.py       README.md model cards generated from the run

A trainer written on the engine looks like this (nanoGPT-sized; see field/reconstruct.py and
distill.py for the two real ones):

    cfg = config_from_args(MyConfig, args, {"lr": args.lr})        # file, then flags
    start_run(out, cfg, resume=args.resume)                       # refuse / compare / record
    ckpt = load_checkpoint(out / "checkpoint") if resume and has_checkpoint(out / "checkpoint") else None
    model.load_state_dict(ckpt.model); optimizer.load_state_dict(ckpt.optimizer); restore_rng(ckpt.rng)
    log = RunLog(out, main="loss"); log.truncate(start)
    loop = Loop(cfg.steps, start_step=start, wall_s=ckpt.wall_s, save=save, save_every=cfg.save_every, log=log)
    for step in loop:
        loss = ...; loop.log(step + 1, loss=float(loss))
    write_card(out / "checkpoint", card_text(title=..., steps=loop.step, wall_s=loop.wall_s, ...))

Importing this package is cheap. Two of its modules stay light because light code imports
them: config.py (the command parsers call `add_common_flags`; PyYAML and the JSON writer load
when a file is read or written) and checkpoint.py (the fitted field's source detection runs
`clean_stale` on every folder opened as a source; torch and safetensors load when a checkpoint
is written or read). loop.py, cards.py and run.py import torch at their top.
"""
