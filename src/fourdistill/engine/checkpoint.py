"""Checkpoints: one folder per checkpoint, written as one unit, read back with clear errors.

A checkpoint folder holds

    <weights_name>    model state (safetensors; trainers name it: field.safetensors, mappers.safetensors)
    <meta_name>       JSON metadata, with "step" and "wall_s" (field.json, mappers.json, checkpoint.json)
    optimizer.pt      the optimizer's state dict (torch)
    train_state.pt    step, wall_s, RNG states (python, numpy, torch and named generators) and
                      the trainer's own training state ("extra"), torch-saved with plain types

The weights and the JSON are what inference needs (and what a model ships with); optimizer.pt
and train_state.pt are what exact resume needs. Any file may be left out by a trainer that has
none of it.

Atomicity: the new checkpoint is written into a temporary sibling folder `.<name>.tmp-*`;
then the previous checkpoint is renamed aside to `.<name>.old-*`, the new one renamed into
place, and only then the old one deleted, so at every moment one complete checkpoint exists
under one of those names. The next save or load of the same folder cleans up what an
interrupted write left: temporary folders are deleted, and an `.old-*` folder whose checkpoint
is missing (interrupted between the two renames) is renamed back.

Errors: a missing or damaged file (truncated safetensors, a torch file that does not unpickle,
JSON that does not parse) raises CheckpointError, a ValueError whose message starts with the
file's path, which the CLI prints as one line.

This module stays light (torch and safetensors load inside the functions that use them):
fourdistill.field's source detection calls `clean_stale` on every folder opened as a source.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WEIGHTS_NAME = "model.safetensors"
META_NAME = "checkpoint.json"
OPTIMIZER_NAME = "optimizer.pt"
STATE_NAME = "train_state.pt"

# errno values of a write the file system refuses (reported as CheckpointError, not a bug).
WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR)


class CheckpointError(ValueError):
    """A checkpoint file is missing or damaged; `path` names the file."""

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Checkpoint:
    """What load_checkpoint read. model: tensor name -> tensor; optimizer: a state dict;
    rng: as capture_rng returns it; extra: the trainer's training state; meta: the JSON."""

    folder: Path
    step: int
    wall_s: float
    meta: dict
    model: dict | None = None
    optimizer: dict | None = None
    rng: dict | None = None
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- atomic folders
def _stale(folder: Path, kind: str) -> list[Path]:
    parent = folder.parent
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.glob(f".{folder.name}.{kind}-*") if p.is_dir())


def clean_stale(folder) -> None:
    """Remove what an interrupted write of `folder` left next to it (see the module docstring)."""
    folder = Path(folder)
    olds = _stale(folder, "old")
    if olds and not folder.exists():
        os.replace(olds[-1], folder)  # interrupted between the two renames: the old one is complete
        olds = olds[:-1]
    for stale in _stale(folder, "tmp") + olds:
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(folder):
    """Yield an empty temporary sibling of `folder`; when the block succeeds it replaces
    `folder` (the previous one is removed only after the new one is in place)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        _swap_in(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(tmp, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    os.rmdir(old)
    os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- random state
def capture_rng(generators: dict | None = None) -> dict:
    """The global random states of python, numpy and torch (and CUDA where present), plus
    the states of named torch.Generator objects, as plain types torch.load(weights_only) reads."""
    import torch

    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": np_state["bit_generator"], "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict | None = None) -> None:
    """Restore what capture_rng captured (the named generators in `generators` included;
    a global state the dict does not hold is left as it is)."""
    import torch

    if "python" in state:
        random.setstate(_tuples(state["python"]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state({"bit_generator": n["bit_generator"], "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                             "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name not in state.get("generators", {}):
            raise KeyError(f"the checkpoint holds no state for the generator {name!r}")
        g.set_state(state["generators"][name])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(
    folder,
    *,
    step: int,
    wall_s: float = 0.0,
    model: dict | None = None,
    optimizer: dict | None = None,
    rng: dict | None = None,
    extra: dict | None = None,
    meta: dict | None = None,
    weights_name: str = WEIGHTS_NAME,
    meta_name: str = META_NAME,
    write=None,
) -> Path:
    """Write one checkpoint folder atomically; returns it.

    model: a state dict (tensors, moved to CPU and made contiguous here); optimizer: an
    optimizer's state dict; rng: capture_rng(); extra: the trainer's own training state (plain
    types and tensors); meta: JSON metadata (step and wall_s are added). write(tmp) may add
    further files into the temporary folder before it is renamed into place. A write the file
    system refuses (full disk, read-only) is a CheckpointError; nothing of the previous
    checkpoint is lost.
    """
    folder = Path(folder)
    meta_out = {**(meta or {}), "step": int(step), "wall_s": float(wall_s)}
    try:
        _write_checkpoint(folder, meta_out, step, wall_s, model, optimizer, rng, extra, weights_name, meta_name, write)
    except (OSError, RuntimeError) as exc:  # safetensors' SafetensorError is an Exception of its own, checked below
        cause = write_failure(exc, folder)
        if cause is None:
            raise
        raise CheckpointError(folder, f"cannot write the checkpoint ({cause}); the previous one, if any, is unchanged") from None
    except Exception as exc:
        cause = write_failure(exc, folder) if type(exc).__name__ == "SafetensorError" else None
        if cause is None:
            raise
        raise CheckpointError(folder, f"cannot write the checkpoint ({cause}); the previous one, if any, is unchanged") from None
    return folder


# What torch's and safetensors' writers say when the file system refuses (they raise
# RuntimeError / SafetensorError, not OSError); torch's zip writer may only report a position
# mismatch ("inline_container.cc ... unexpected pos") when the disk fills under it.
_WRITE_FAILURE_WORDS = ("no space left", "os error 28", "read-only file system", "disk quota", "failed writing", "file write failed",
                        "inline_container", "pytorchstreamwriter")


def write_failure(exc: BaseException, folder: Path) -> str | None:
    """The cause, in words, when `exc` is the file system refusing a write into `folder`
    (full, read-only, no permission); None for any other error (a bug, to be raised)."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return exc.strerror or str(exc)
    text = str(exc).lower()
    if not any(w in text for w in _WRITE_FAILURE_WORDS):
        return None
    if "space" in text or "os error 28" in text:
        return "No space left on device"
    try:
        free = shutil.disk_usage(folder.parent if folder.parent.exists() else ".").free
    except OSError:
        free = None
    return "torch could not write the file" + (f"; {free} bytes free on the disk" if free is not None else "")


def _write_checkpoint(folder, meta_out, step, wall_s, model, optimizer, rng, extra, weights_name, meta_name, write) -> None:
    import torch

    with atomic_folder(folder) as tmp:
        if model is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, str(tmp / weights_name))
        (tmp / meta_name).write_text(json.dumps(meta_out, indent=2) + "\n")
        if optimizer is not None:
            torch.save(optimizer, tmp / OPTIMIZER_NAME)
        if rng is not None or extra is not None:
            torch.save({"step": int(step), "wall_s": float(wall_s), "rng": rng, "extra": extra or {}}, tmp / STATE_NAME)
        if write is not None:
            write(tmp)


def has_checkpoint(folder, meta_name: str = META_NAME) -> bool:
    """Whether `folder` holds a checkpoint (after recovering an interrupted write)."""
    folder = Path(folder)
    clean_stale(folder)
    return (folder / meta_name).is_file()


def read_json_object(path, what: str) -> dict:
    """A JSON object read from `path`; CheckpointError naming the file and `what` it holds
    ("checkpoint metadata", "mapper configuration") when it is not valid JSON, is nested too
    deeply to parse, or is not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(path, f"damaged {what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(path, f"damaged {what}: JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"damaged {what}: expected a JSON object, got {type(data).__name__}")
    return data


def read_meta(folder, meta_name: str = META_NAME) -> dict:
    """The checkpoint's JSON metadata; CheckpointError naming the file when missing or damaged."""
    path = Path(folder) / meta_name
    if not path.is_file():
        raise CheckpointError(path, "checkpoint metadata is missing")
    return read_json_object(path, "checkpoint metadata")


def load_weights(path, device="cpu") -> dict:
    """Tensors of a safetensors file; CheckpointError naming the file when missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "weights file is missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"damaged or truncated safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def load_torch_file(path, what: str):
    """torch.load(weights_only=True) with CheckpointError naming the file when missing or damaged."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, f"{what} is missing: this checkpoint cannot be resumed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(path, f"damaged or truncated {what} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def verify_checkpoint(folder, *, weights_name: str = WEIGHTS_NAME, meta_name: str = META_NAME) -> bool:
    """Read every file of the checkpoint in `folder` once, so that a --resume from a damaged
    one fails before anything in the run folder is rewritten; CheckpointError naming the
    first damaged file. False when `folder` holds no checkpoint (nothing to resume)."""
    folder = Path(folder)
    if not has_checkpoint(folder, meta_name):
        return False
    read_meta(folder, meta_name)
    if (folder / weights_name).exists():
        load_weights(folder / weights_name)
    load_torch_file(folder / OPTIMIZER_NAME, "optimizer state")
    if (folder / STATE_NAME).exists():
        load_torch_file(folder / STATE_NAME, "training state")
    return True


def load_checkpoint(
    folder,
    *,
    weights_name: str = WEIGHTS_NAME,
    meta_name: str = META_NAME,
    device="cpu",
    model: bool = True,
    training: bool = True,
) -> Checkpoint:
    """Read a checkpoint folder. model=False skips the weights; training=False skips the
    optimizer and training state (inference). Missing or damaged files raise CheckpointError."""
    folder = Path(folder)
    clean_stale(folder)
    meta = read_meta(folder, meta_name)
    ckpt = Checkpoint(folder, int(meta.get("step", 0)), float(meta.get("wall_s", 0.0)), meta)
    if model:
        ckpt.model = load_weights(folder / weights_name, device)
    if training:
        ckpt.optimizer = load_torch_file(folder / OPTIMIZER_NAME, "optimizer state")
        state = load_torch_file(folder / STATE_NAME, "training state")
        if not isinstance(state, dict) or "step" not in state:
            raise CheckpointError(folder / STATE_NAME, "damaged training state: no step")
        ckpt.step, ckpt.wall_s = int(state["step"]), float(state.get("wall_s", 0.0))
        ckpt.rng, ckpt.extra = state.get("rng"), dict(state.get("extra") or {})
    return ckpt
