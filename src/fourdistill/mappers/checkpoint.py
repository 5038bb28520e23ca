"""Save trained mappers, and load them for a pipeline the user already has.

A mapper checkpoint is a folder with `mappers.safetensors` (the weights, keys prefixed
`time_mapper.` / `view_mapper.`) and `mappers.json` (everything needed to rebuild: base model,
cross-attention layer list, mapper configs with encoding seeds and sigmas, bypass alphas,
placeholder tokens). Folders are written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file

from ..conditioning.processors import install_layer_processors
from ..conditioning.text import TIME_TOKEN, VIEW_TOKEN, BypassConfig, MappedTextConditioner
from ..engine.cards import card_text, write_card
from ..engine.checkpoint import CheckpointError, load_weights, read_json_object
from ..engine.loop import read_rows
from ..io import atomic_dir
from ..sources.world_seed import world_seed_of
from .neti import MapperConfig, build_mapper

FORMAT_VERSION = 1
WEIGHTS_NAME = "mappers.safetensors"
CONFIG_NAME = "mappers.json"


def mapper_config(conditioner, layers: list[str], base_model: str, extra: dict | None = None) -> dict:
    """mappers.json's content: everything that rebuilds `conditioner`'s mappers, plus `extra`."""
    return {
        "format_version": FORMAT_VERSION,
        "base_model": base_model,
        "layers": list(layers),
        "time_mapper": conditioner.time_mapper.config.to_dict() if conditioner.time_mapper is not None else None,
        "view_mapper": conditioner.view_mapper.config.to_dict() if conditioner.view_mapper is not None else None,
        "bypass": {"time_alpha": conditioner.bypass_config.time_alpha, "view_alpha": conditioner.bypass_config.view_alpha},
        "tokens": {"time": TIME_TOKEN, "view": VIEW_TOKEN},
        **(extra or {}),
    }


def save_mappers(folder, conditioner, layers: list[str], base_model: str, extra: dict | None = None, overwrite: bool = True) -> Path:
    """Write `conditioner`'s mappers and the config that rebuilds them into `folder`."""
    config = mapper_config(conditioner, layers, base_model, extra)
    state = {k: v.detach().cpu().contiguous() for k, v in conditioner.state_dict().items()}
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return Path(folder)


def read_mapper_config(folder) -> dict:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a mapper checkpoint (no {CONFIG_NAME})")
    config = read_json_object(path, "mapper configuration")
    for key in ("layers", "time_mapper", "view_mapper", "bypass"):
        if key not in config:
            raise ValueError(f"{path}: missing field {key!r}")
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder}: missing {WEIGHTS_NAME}")
    return config


def build_conditioner(config: dict, text_encoder, tokenizer, state_dict=None):
    """Rebuild a MappedTextConditioner from a saved config (and weights, if given)."""
    mappers = {k: build_mapper(MapperConfig(**config[k])) if config[k] else None for k in ("time_mapper", "view_mapper")}
    cond = MappedTextConditioner(
        text_encoder,
        tokenizer,
        len(config["layers"]),
        mappers["time_mapper"],
        mappers["view_mapper"],
        BypassConfig(**config["bypass"]),
    )
    if state_dict is not None:
        missing, unexpected = cond.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(f"mapper weights do not match their config: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return cond


@dataclass(frozen=True)
class LoadedMappers:
    """Mappers loaded for one pipeline: what `load_mappers` builds, for `ControlledPipeline`.

    conditioner: the MappedTextConditioner over the pipeline's text encoder and tokenizer (eval
        mode, on the U-Net's device); its `state_dict()` is the mappers' weights.
    layers: the U-Net's cross-attention processor names, in the order the conditions index them.
    config: the checkpoint's mappers.json (base model, mapper configs, bypass alphas, and the
        distillation config where the checkpoint came from `fourdistill distill`).
    """

    conditioner: object
    layers: list[str]
    config: dict


def load_mappers(pipe, folder) -> LoadedMappers:
    """Load trained mappers for a Stable Diffusion pipeline (the `load_textual_inversion` habit).

    What the pipeline gets is what diffusers supports: layer-aware attention processors on its
    U-Net (`set_attn_processor`, keeping a loaded IP-Adapter's weights and scale) and the
    placeholder tokens in its tokenizer, with the text encoder's embedding table grown to match.
    Load the IP-Adapter first: `load_ip_adapter` replaces attention processors. Everything else
    is returned: generate with `ControlledPipeline(pipe, load_mappers(pipe, folder))`.
    """
    folder = Path(folder)
    config = read_mapper_config(folder)
    layers = install_layer_processors(pipe.unet)
    if layers != config["layers"]:
        raise ValueError(
            f"{folder}: these mappers were trained for a U-Net with {len(config['layers'])} cross-attention layers "
            f"({config.get('base_model', '?')}); this pipeline's U-Net has {len(layers)}"
        )
    width = pipe.text_encoder.config.hidden_size
    for key in ("time_mapper", "view_mapper"):
        if config[key] and config[key]["word_dim"] != width:
            raise ValueError(f"{folder}: {key} outputs width {config[key]['word_dim']}, this text encoder has {width}")
    try:
        cond = build_conditioner(config, pipe.text_encoder, pipe.tokenizer, load_weights(folder / WEIGHTS_NAME))
    except (TypeError, KeyError) as exc:  # a config whose mapper or bypass fields do not fit
        raise CheckpointError(folder / CONFIG_NAME, f"damaged mapper configuration ({type(exc).__name__}: {exc})") from None
    param = next(pipe.unet.parameters())
    cond.to(device=param.device).eval()
    return LoadedMappers(conditioner=cond, layers=layers, config=config)


def training_data(cfg: dict) -> str:
    """What the mappers were trained on, in the card's words: the world seed range actually
    used for source "world", else the source and the world scene it shows (where it names one)."""
    source = cfg.get("source")
    if source == "world" and cfg.get("world_seeds"):
        start, stop = cfg["world_seeds"]
        return f"source world, seeds {start}..{stop - 1} ({stop - start} scenes)"
    seed = world_seed_of(source) if source else None
    return f"source {source}" + (f" (world scene {seed})" if seed is not None else "")


def write_mapper_card(folder, loss_path=None, validation_path=None, evaluation: str | None = None) -> Path:
    """README.md for a mapper checkpoint: how it was made and what it reached.

    Everything comes from the checkpoint's own JSON (command, config, step, wall time) and the
    run's curves; `evaluation` (markdown) is appended when given. The card's frame (command,
    wall time, sections) is the engine's (fourdistill.engine.cards); the lines here are the
    mappers' own."""
    folder = Path(folder)
    config = read_mapper_config(folder)
    cfg = config.get("distill_config", {})
    losses = read_rows(loss_path) if loss_path else []
    vals = read_rows(validation_path) if validation_path else []
    kinds = [k for k in ("time_mapper", "view_mapper") if config.get(k)]
    numbers = []
    if losses:
        k = max(1, len(losses) // 10)
        first = sum(r["loss"] for r in losses[:k]) / k
        last = sum(r["loss"] for r in losses[-k:]) / k
        numbers.append(f"training loss (mean of the first / last {k} steps): {first:.4f} -> {last:.4f}")
    if vals:
        numbers.append("validation PSNR of generated vs true targets (fixed pairs): " + ", ".join(f"step {r['step']}: {r['psnr']:.2f} dB" for r in vals))
    text = card_text(
        "Time / View Mappers",
        f"NeTI-style mappers ({', '.join(k.replace('_', ' ') for k in kinds)}) for the diffusion stack `{config.get('base_model')}`, "
        f"{len(config['layers'])} cross-attention layers. Load them with `fourdistill.mappers.load_mappers(pipe, folder)` "
        "or `fourdistill generate --mappers FOLDER`.",
        command=config.get("command"),
        default_command="fourdistill distill (library call)",
        training=[
            f"mode {cfg.get('mode')}, {training_data(cfg)}, {config.get('step')} steps of "
            f"batch {cfg.get('batch_size')} x {cfg.get('grad_accum')} accumulation, AdamW lr {cfg.get('lr')}, seed {cfg.get('seed')}",
            f"IP-Adapter scale {cfg.get('ip_adapter_scale')}, bypass alpha time {config['bypass']['time_alpha']} / view {config['bypass']['view_alpha']}, "
            f"nested dropout p {cfg.get('nested_dropout_p')}, view condition {cfg.get('view_condition')}, resolution {config.get('resolution')}",
        ],
        steps=config.get("step"),
        wall_s=config.get("wall_s", 0.0),
        device=config.get("device", "?"),
        threads=config.get("threads"),
        numbers=numbers,
        sections={"": evaluation} if evaluation else None,
    )
    return write_card(folder, text)
