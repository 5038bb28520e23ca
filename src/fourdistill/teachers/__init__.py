"""The teachers: frozen diffusion models the mappers learn against, one subpackage per kind.

- `image/`: the tiny Stable-Diffusion-layout text-to-image stack with IP-Adapter-Plus (the
  embedded teacher, src/fourdistill/assets/stack); `image.load.load_stack` also loads real
  SD 1.x / 2.x folders and hub ids.
- `data.py`: the world renders every teacher trains on (single images, K-view sets, clips).

`load_stack` is re-exported here, imported on first use so that `import fourdistill.teachers`
stays cheap.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "load_stack":
        from .image.load import load_stack

        return load_stack
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
