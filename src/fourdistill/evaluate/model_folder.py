"""The folder the world's small networks share (the judge, the reader): their weights, config
and card, and a training run's checkpoint in the same layout.

    <weights_name>   safetensors, with {"format": ...} metadata
    config.json      {"format", "model": the network's config, "training", "heldout"}
    README.md        the model card

A training run writes its checkpoint as such a folder (OUT/checkpoint, through the engine, with
the optimizer and RNG states beside it), so the run's end is a shippable folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file

from ..engine.checkpoint import load_weights, read_json_object, save_checkpoint
from ..io import atomic_dir

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
CHECKPOINT_DIR = "checkpoint"


def training_info(config, step: int, wall_s: float, render_s: float, losses: list[float], command) -> dict:
    """What a card and config.json record of a run: command, steps, wall and render seconds,
    the last 50 steps' mean loss, torch and threads, the training config."""
    return {
        "command": command,
        "step": step,
        "wall_s": round(wall_s, 1),
        "render_s": round(render_s, 1),
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": asdict(config),
    }


@dataclass(frozen=True)
class ModelFolder:
    """One network's file names. weights_name: e.g. "judge.safetensors"; format: the tag in
    config.json and in the weights' metadata."""

    weights_name: str
    format: str

    def resolve(self, path) -> Path:
        """The folder that holds the weights: `path` itself, or a training run's checkpoint/."""
        folder = Path(path)
        if not (folder / self.weights_name).is_file() and (folder / CHECKPOINT_DIR / self.weights_name).is_file():
            folder = folder / CHECKPOINT_DIR
        return folder

    def write_weights(self, model: torch.nn.Module, path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path), metadata={"format": self.format})

    def config(self, model, info: dict | None = None) -> dict:
        return {"format": self.format, "model": asdict(model.config), **(info or {})}

    def save(self, model, folder, info: dict | None = None) -> Path:
        """Write the weights and config.json into `folder` atomically (the folder is rebuilt
        next to itself and swapped in), keeping a model card already there."""
        folder = Path(folder)
        card = (folder / CARD_NAME).read_text() if (folder / CARD_NAME).is_file() else None
        with atomic_dir(folder, overwrite=True) as tmp:
            self.write_weights(model, tmp / self.weights_name)
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config(model, info), indent=2) + "\n")
            if card is not None:
                (tmp / CARD_NAME).write_text(card)
        return folder

    def save_checkpoint(
        self, folder, model, optimizer, rng_state: dict, training: dict, wall_s: float, heldout: dict | None, card: Callable[[dict], str]
    ) -> Path:
        """One engine checkpoint that is also a model folder; with `heldout` (the run's end) the
        scores go into config.json and the card (`card(info)`) is written with it, in the same
        atomic swap."""
        info = {"training": training, **({"heldout": heldout} if heldout is not None else {})}

        def write(tmp: Path) -> None:
            self.write_weights(model, tmp / self.weights_name)
            if heldout is not None:
                (tmp / CARD_NAME).write_text(card(info))

        return save_checkpoint(
            folder, step=training["step"], wall_s=wall_s, optimizer=optimizer.state_dict(), rng=rng_state,
            meta=self.config(model, info), weights_name=self.weights_name, meta_name=CONFIG_NAME, write=write,
        )

    def load(self, path, model_cls, config_cls, what: str, device="cpu"):
        """The network in a folder (or a training run's folder): config.json's "model" read into
        `config_cls`, `model_cls(config)` given the weights, in eval mode on `device`. A missing
        file is a FileNotFoundError, a damaged one a CheckpointError naming it, a config or
        weights that do not fit a ValueError naming the file and the field."""
        folder = self.resolve(path)
        config_path, weights_path = folder / CONFIG_NAME, folder / self.weights_name
        for p in (config_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such file (a {what} folder holds {CONFIG_NAME} and {self.weights_name})")
        data = read_json_object(config_path, f"{what} configuration")
        if data.get("format") != self.format:
            raise ValueError(f"{config_path} [format]: expected {self.format!r}, got {data.get('format')!r}")
        model = data.get("model")
        if not isinstance(model, dict):
            raise ValueError(f"{config_path} [model]: missing or not an object")
        unknown = sorted(set(model) - set(config_cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{config_path} [model.{unknown[0]}]: unknown field")
        try:
            config = config_cls(**model)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{config_path} [model]: {exc}") from None
        net = model_cls(config)
        state = load_weights(weights_path)
        missing = sorted(set(net.state_dict()) - set(state))
        extra = sorted(set(state) - set(net.state_dict()))
        if missing or extra:
            raise ValueError(f"{weights_path}: weights do not match {CONFIG_NAME} (missing {missing[:3]}, unexpected {extra[:3]})")
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{weights_path}: weights do not match {CONFIG_NAME}: {str(exc).splitlines()[-1].strip()}") from None
        return net.to(device).eval()
