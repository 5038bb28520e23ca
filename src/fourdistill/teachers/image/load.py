"""One loader for every diffusion stack the project uses.

`load_stack(model)` returns a `StableDiffusionPipeline` with an IP-Adapter loaded, for
  - None or "embedded": the tiny stack shipped inside the package (assets/stack);
  - a local folder in the Stable Diffusion layout (the embedded stack's own training output,
    or a downloaded SD 1.5 / 2.1);
  - a hub id (docs/method.md, 1.6: "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "stabilityai/stable-diffusion-2-1-base"), with the IP-Adapter from "h94/IP-Adapter".
It uses the same two calls a GPU user makes with the real weights:
`StableDiffusionPipeline.from_pretrained(...)` then `pipe.load_ip_adapter(...)`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

from .ip_adapter import check_ip_adapter_state, read_ip_adapter_file
from .ip_adapter import IMAGE_ENCODER_SUBFOLDER, IP_ADAPTER_WEIGHT_NAME
from .stack import IP_ADAPTER_SUBFOLDER

SHIPPED_STACK = Path(__file__).resolve().parents[2] / "assets" / "stack"
EMBEDDED = "embedded"

# The real IP-Adapter for SD 1.5 (docs/method.md, 1.6).
HUB_IP_ADAPTER = "h94/IP-Adapter"
HUB_IP_ADAPTER_WEIGHT = "ip-adapter-plus_sd15.safetensors"

NO_NETWORK = "no network: download the weights to a folder and pass its path"

# Pipeline parts that must be there, and the weight files each may use.
_REQUIRED_PARTS = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}


class StackLoadError(ValueError):
    """A stack that cannot be loaded. The message names the folder, file or id and the problem."""
    def __init__(self, where, problem: str):
        super().__init__(f"{where}: {problem}")


def resolve_model(model: str | None) -> tuple[str, bool]:
    """(folder or hub id, is_local). None / "embedded" -> the shipped folder."""
    if model is None or model == EMBEDDED:
        if not (SHIPPED_STACK / "model_index.json").is_file():
            raise StackLoadError(SHIPPED_STACK, "the embedded stack is not in this installation (train one with `fourdistill teachers train`)")
        return str(SHIPPED_STACK), True
    path = Path(model).expanduser()
    if path.exists():
        return str(path), True
    looks_like_id = model.count("/") == 1 and not model.startswith((".", "/", "~")) and not path.suffix
    if not looks_like_id:
        raise StackLoadError(model, "no such folder (pass 'embedded', a Stable Diffusion folder, or a hub id like owner/name)")
    return model, False


def check_stack_folder(folder) -> None:
    """Raise StackLoadError unless `folder` holds a Stable Diffusion pipeline with its weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StackLoadError(folder, "not a folder")
    if not (folder / "model_index.json").is_file():
        raise StackLoadError(folder, "not a diffusion stack (no model_index.json; expected the Stable Diffusion folder layout)")
    for part, weights in _REQUIRED_PARTS.items():
        sub = folder / part
        config = sub / "config.json"
        if not config.is_file():
            raise StackLoadError(config, f"missing (the stack's {part} has no config)")
        if not any((sub / w).is_file() for w in weights):
            raise StackLoadError(sub / weights[0], f"missing weight file (the stack's {part} needs {' or '.join(weights)})")
    if not any((folder / "tokenizer" / f).is_file() for f in ("vocab.json", "tokenizer.json")):
        raise StackLoadError(folder / "tokenizer" / "vocab.json", "missing (the stack has no tokenizer)")


def check_ip_adapter_folder(folder, weight_name: str, unet) -> None:
    """Raise a clear error unless folder/weight_name is an IP-Adapter-Plus file for `unet` and
    folder/image_encoder holds a CLIPVisionModelWithProjection."""
    folder = Path(folder)
    check_ip_adapter_state(read_ip_adapter_file(folder / weight_name), unet, folder / weight_name)
    enc = folder / IMAGE_ENCODER_SUBFOLDER
    if not (enc / "config.json").is_file():
        raise StackLoadError(enc / "config.json", "missing (the IP-Adapter's image encoder has no config)")
    if not any((enc / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        raise StackLoadError(enc / "model.safetensors", "missing weight file (the IP-Adapter's image encoder)")


def load_stack(
    model: str | None = None,
    ip_adapter: bool = True,
    device="cpu",
    dtype=None,
    ip_adapter_model: str | None = None,
    ip_adapter_weight: str | None = None,
):
    """A StableDiffusionPipeline (DPM-Solver multistep scheduler, Lu et al. 2022) with the
    IP-Adapter loaded, from "embedded" (default), a local folder, or a hub id.

    ip_adapter_model / ip_adapter_weight: where the IP-Adapter comes from. Default: the stack's
    own `models/` folder when it has one, else h94/IP-Adapter's ip-adapter-plus_sd15.
    """

    dtype = dtype or torch.float32
    where, local = resolve_model(model)
    kwargs = dict(safety_checker=None, requires_safety_checker=False, torch_dtype=dtype)
    if local:
        check_stack_folder(where)
        try:
            pipe = StableDiffusionPipeline.from_pretrained(where, local_files_only=True, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise StackLoadError(where, f"cannot load as a Stable Diffusion pipeline ({first_line(exc)})") from None
    else:
        pipe = from_hub(lambda: StableDiffusionPipeline.from_pretrained(where, **kwargs), where)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    if ip_adapter:
        src = ip_adapter_model
        weight = ip_adapter_weight
        if src is None and local and (Path(where) / IP_ADAPTER_SUBFOLDER).is_dir():
            src = where
            weight = weight or _local_ip_adapter_weight(Path(where) / IP_ADAPTER_SUBFOLDER)
        src = src or HUB_IP_ADAPTER
        weight = weight or HUB_IP_ADAPTER_WEIGHT
        if Path(src).exists():
            check_ip_adapter_folder(Path(src) / IP_ADAPTER_SUBFOLDER, weight, pipe.unet)
            pipe.load_ip_adapter(src, subfolder=IP_ADAPTER_SUBFOLDER, weight_name=weight, local_files_only=True)
        else:
            from_hub(lambda: pipe.load_ip_adapter(src, subfolder=IP_ADAPTER_SUBFOLDER, weight_name=weight), src)
    return pipe.to(device)


def _local_ip_adapter_weight(models: Path) -> str:
    if (models / IP_ADAPTER_WEIGHT_NAME).is_file():
        return IP_ADAPTER_WEIGHT_NAME
    found = sorted(p.name for p in models.glob("ip-adapter*.safetensors")) + sorted(p.name for p in models.glob("ip-adapter*.bin"))
    if not found:
        raise StackLoadError(models / IP_ADAPTER_WEIGHT_NAME, "missing IP-Adapter weight file (no ip-adapter*.safetensors in models/)")
    return found[0]


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def from_hub(fn, model_id: str):
    """Run a hub load; turn "cannot reach the hub / not cached" into the project's message."""
    try:
        return fn()
    except OSError as exc:
        detail = first_line(exc)
        if len(detail) > 200:  # cut between words, and say that it was cut
            detail = detail[:200].rsplit(" ", 1)[0].rstrip(" ,;:(") + " ..."
        raise StackLoadError(model_id, f"{NO_NETWORK} ({detail})") from None


def describe_stack(pipe) -> list[str]:
    """Lines for `fourdistill teachers info`: parts, parameter counts, cross-attention layers."""
    def count(m):
        return sum(p.numel() for p in m.parameters()) if m is not None else 0

    unet = pipe.unet
    cross = [n for n in unet.attn_processors if n.startswith(("down_blocks.", "mid_block.", "up_blocks.")) and n.endswith("attn2.processor")]
    size = unet.config.sample_size * pipe.vae_scale_factor
    lines = [
        f"image size:        {size}x{size} (latents {unet.config.in_channels}x{unet.config.sample_size}x{unet.config.sample_size})",
        f"text encoder:      {type(pipe.text_encoder).__name__}, width {pipe.text_encoder.config.hidden_size}, {count(pipe.text_encoder) / 1e6:.2f} M parameters",
        f"tokenizer:         {type(pipe.tokenizer).__name__}, {len(pipe.tokenizer)} tokens, context {pipe.tokenizer.model_max_length}",
        f"vae:               {type(pipe.vae).__name__}, scaling factor {pipe.vae.config.scaling_factor:.5f}, {count(pipe.vae) / 1e6:.2f} M parameters",
        f"unet:              {type(unet).__name__}, {count(unet) / 1e6:.2f} M parameters (with IP-Adapter), cross_attention_dim {unet.config.cross_attention_dim}",
        f"cross-attention:   {len(cross)} layers",
    ]
    lines += [f"  {i:2d} {n[: -len('.processor')]}" for i, n in enumerate(cross)]
    enc = getattr(pipe, "image_encoder", None)
    if enc is not None:
        lines.append(f"image encoder:     {type(enc).__name__}, {enc.config.image_size}px, {count(enc) / 1e6:.2f} M parameters")
    proj = getattr(unet, "encoder_hid_proj", None)
    if proj is not None:
        layer = proj.image_projection_layers[0]
        lines.append(f"image projection:  {type(layer).__name__}, {count(layer) / 1e6:.2f} M parameters")
    lines.append(f"scheduler:         {type(pipe.scheduler).__name__}")
    return lines
