"""The fitted-field checkpoint: what a reconstruction (or a text-to-4D run) leaves on disk.

A field checkpoint is an engine checkpoint folder (fourdistill.engine.checkpoint):

    field.safetensors   field weights, occupancy grid buffers ("occupancy." prefix)
    field.json          format tag and version, FieldConfig, RenderConfig, OccupancyConfig,
                        orbit, caption, source, resolution, time range, step, wall_s
    optimizer.pt        optimizer state (runs that can be resumed)
    train_state.pt      step, wall_s, RNG states, the trainer's state (runs that can be resumed)

field.safetensors and field.json are all that rendering needs (FieldSource). Folders written
before the engine (their train_state.pt held the optimizer itself and "elapsed_s") still load,
and still resume: `load_training_state` reads both layouts.

Whether a folder is a field is decided in the package's __init__ (file names only, before
torch loads); this module is what reads and writes one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from ..cameras import OrbitRange
from ..engine.checkpoint import (
    OPTIMIZER_NAME,
    STATE_NAME,
    Checkpoint,
    clean_stale,
    load_checkpoint as load_engine_checkpoint,
    load_torch_file,
    load_weights,
    read_meta,
    save_checkpoint as save_engine_checkpoint,
)
from ..sources.base import SourceError
from . import META_NAME
from .field import Field4D, FieldConfig
from .render import OccupancyConfig, OccupancyGrid, RenderConfig

CHECKPOINT_FORMAT = "fourdistill.field"
CHECKPOINT_VERSION = 1
WEIGHTS_NAME = "field.safetensors"


def field_metadata(field_cfg, render, occupancy, **extra) -> dict:
    """field.json's content for a field with configs (FieldConfig, RenderConfig, OccupancyConfig);
    `extra` adds run facts (orbit, caption, source, resolution, time_range, ...)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "field": field_cfg.to_dict(),
        "render": dataclasses.asdict(render),
        "occupancy": dataclasses.asdict(occupancy),
        **extra,
    }


def orbit_to_dict(orbit) -> dict:
    return dataclasses.asdict(orbit)


def orbit_from_dict(d: dict):
    return OrbitRange(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def step_size(bound: float, render) -> float:
    """Typical sample spacing: the box diagonal over the samples per ray (what occupancy refers to)."""
    return 2.0 * math.sqrt(3.0) * bound / render.n_samples


def save_checkpoint(
    folder,
    field,
    grid,
    meta: dict,
    *,
    step: int | None = None,
    wall_s: float = 0.0,
    optimizer: dict | None = None,
    rng: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a field checkpoint folder atomically (see the module docstring).

    meta: field_metadata(...); step defaults to meta's "step" (else 0). optimizer, rng and
    extra (the trainer's state) make the checkpoint resumable.
    """
    tensors = {k: v for k, v in field.state_dict().items()}
    tensors.update({f"occupancy.{k}": v for k, v in grid.state_dict().items()})
    step = int(meta.get("step", 0)) if step is None else int(step)
    return save_engine_checkpoint(
        folder, step=step, wall_s=wall_s, model=tensors, optimizer=optimizer, rng=rng, extra=extra,
        meta=meta, weights_name=WEIGHTS_NAME, meta_name=META_NAME,
    )


def checkpoint_folder(path) -> Path | None:
    """The checkpoint folder at `path` (a checkpoint or a run folder holding checkpoint/), or None."""
    path = Path(path)
    for candidate in (path, path / "checkpoint"):
        if candidate.name == "checkpoint" and candidate.parent.is_dir():
            clean_stale(candidate)
        meta = candidate / META_NAME
        if meta.is_file():
            try:
                if json.loads(meta.read_text()).get("format") == CHECKPOINT_FORMAT:
                    return candidate
            except (OSError, ValueError, AttributeError, RecursionError):  # unreadable, not JSON, nested too deeply
                return None
    return None


def load_checkpoint(path, device="cpu"):
    """(field, occupancy grid, metadata) from a checkpoint folder or a run folder.

    metadata is field.json with "render_config" (a RenderConfig) added. A folder that is not a
    field checkpoint, a wrong version, a bad configuration or weights that do not match raise
    SourceError; a damaged weights file raises CheckpointError; both name the file.
    """
    folder = checkpoint_folder(path)
    if folder is None:
        raise SourceError(path, f"not a field checkpoint: no {META_NAME} with format {CHECKPOINT_FORMAT!r} here or in checkpoint/")
    meta_path = folder / META_NAME
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != CHECKPOINT_VERSION:
        raise SourceError(meta_path, f"checkpoint version {meta.get('version')} is not {CHECKPOINT_VERSION}", "version")
    try:
        field_cfg = FieldConfig.from_dict(meta["field"])
        occupancy = OccupancyConfig(**meta["occupancy"])
        render = RenderConfig(**meta["render"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(meta_path, f"bad configuration ({exc})", "field") from None
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise SourceError(weights_path, "weights file is missing")
    tensors = load_weights(weights_path, device)
    field = Field4D(field_cfg).to(device)
    grid = OccupancyGrid(occupancy, field.bound, step_size(field.bound, render)).to(device)
    grid_state = {k[len("occupancy.") :]: v for k, v in tensors.items() if k.startswith("occupancy.")}
    field_state = {k: v for k, v in tensors.items() if not k.startswith("occupancy.")}
    try:
        field.load_state_dict(field_state)
        grid.load_state_dict(grid_state)
    except RuntimeError as exc:
        raise SourceError(weights_path, f"weights do not match {META_NAME} ({str(exc).splitlines()[0]})") from None
    meta["render_config"] = render
    return field, grid, meta


def load_training_state(path):
    """The engine Checkpoint (step, wall_s, optimizer, rng, extra; no weights) of a field
    checkpoint, for resuming. Reads folders written before the engine too: their
    train_state.pt held {"step", "optimizer", "generator", "history", "elapsed_s",
    "rays_per_step", "config"}, returned here as rng={"generators": {"train": ...}} and extra."""
    folder = checkpoint_folder(path) or Path(path)
    if not (folder / OPTIMIZER_NAME).exists() and (folder / STATE_NAME).is_file():
        state = load_torch_file(folder / STATE_NAME, "training state")
        if isinstance(state, dict) and "optimizer" in state:  # the layout before the engine
            extra = {k: state[k] for k in ("history", "rays_per_step") if k in state}
            if "config" in state:
                extra["config"] = json.loads(state["config"])
            return Checkpoint(folder, int(state["step"]), float(state.get("elapsed_s", 0.0)), read_meta(folder, META_NAME),
                              optimizer=state["optimizer"], rng={"generators": {"train": state["generator"]}}, extra=extra)
    return load_engine_checkpoint(folder, weights_name=WEIGHTS_NAME, meta_name=META_NAME, model=False)
