"""The teachers: frozen diffusion models the mappers learn against, one subpackage per kind.

- `image/`: the tiny Stable-Diffusion-layout text-to-image stack with IP-Adapter-Plus (the
  embedded teacher, src/fourdistill/assets/stack); `image.load.load_stack` also loads real
  SD 1.x / 2.x folders and hub ids.
- `multiview/`: the MVDream-layout multi-view teacher (camera MLP, views sharing self-attention),
  its converter from MVDream's original checkpoint and its loader.
- `video/`: the video teacher (an AnimateDiff motion adapter on the image stack; Zeroscope
  folders load too).
- `parts.py`: what every teacher shares (tokenizer, text encoder, VAE, scheduler);
  `sampling.py`: sampling sets of views or frames; `finetune.py`: the trainer of the
  multi-view and video teachers; `load.py`: `load_teacher(kind, model)` for every kind.
- `data.py`: the world renders every teacher trains on (single images, K-view sets, clips).

`load_stack` and `load_teacher` are re-exported here, imported on first use so that
`import fourdistill.teachers` stays cheap.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "load_stack":
        from .image.load import load_stack

        return load_stack
    if name == "load_teacher":
        from .load import load_teacher

        return load_teacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
