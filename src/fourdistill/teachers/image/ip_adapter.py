"""IP-Adapter-Plus for the tiny stack, stored in the h94/IP-Adapter file layout.

Why Plus (a Resampler over the image encoder's penultimate patch tokens) rather than the plain
"ip-adapter_sd15" linear projection of one global embedding: the reference method uses
IP-Adapter-Plus with 16 image tokens (IP-Adapter, Ye et al. 2023), and patch tokens keep where things
are in the reference image, which the image-prompt reconstruction needs.

The weight file holds two groups of keys, as h94's files do:
  image_proj.*  the Resampler, in the original layout (latents, proj_in, proj_out, norm_out,
                layers.{i}.0.{norm1,norm2,to_q,to_kv,to_out}, layers.{i}.1.{0,1,3})
  ip_adapter.*  `{k}.to_k_ip.weight`, `{k}.to_v_ip.weight` for the k-th cross-attention layer,
                k = 1, 3, 5, ... in the U-Net's attention-processor order.
Training uses diffusers' own modules (installed by diffusers' own loader from such a state
dict); `ip_adapter_state_dict` writes them back in the file layout.

The file names are IP-Adapter's: `IP_ADAPTER_WEIGHT_NAME` and `IMAGE_ENCODER_SUBFOLDER` sit
side by side in one folder, as in h94/IP-Adapter's `models/`. torch loads inside the functions,
so the stack's layout code can read these names without it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers.loaders import IPAdapterMixin
from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...io import atomic_path

IP_ADAPTER_WEIGHT_NAME = "ip-adapter-plus_tiny.safetensors"
IMAGE_ENCODER_SUBFOLDER = "image_encoder"  # beside the weight file, as in h94/IP-Adapter's models/

# CLIP's image normalisation (what CLIPImageProcessor applies; OpenAI CLIP constants).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class IPAdapterFileError(ValueError):
    """An IP-Adapter weight file that is missing or does not match the U-Net. Names the file."""
    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")


def _cross_attention_names(unet) -> list[str]:
    """The U-Net's cross-attention processors in diffusers' order (the file's k = 1, 3, 5, ...)."""
    blocks = ("down_blocks.", "mid_block.", "up_blocks.")
    return [n for n in unet.attn_processors if n.startswith(blocks) and not n.endswith("attn1.processor")]


def init_ip_adapter_state(unet, embed_dims: int, cfg, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A fresh IP-Adapter in the file layout: a seeded Resampler, and to_k_ip / to_v_ip copied
    from each cross-attention layer's text to_k / to_v (IP-Adapter's initialisation).

    embed_dims: the image encoder's hidden size. cfg: IPAdapterConfig.
    """

    if cfg.hidden_dims % 64:
        raise ValueError(f"IPAdapterConfig.hidden_dims must be a multiple of 64 (heads of 64 channels), got {cfg.hidden_dims}")
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        proj = IPAdapterPlusImageProjection(
            embed_dims=embed_dims,
            output_dims=unet.config.cross_attention_dim,
            hidden_dims=cfg.hidden_dims,
            depth=cfg.depth,
            dim_head=64,
            heads=cfg.hidden_dims // 64,
            num_queries=cfg.num_tokens,
        )
    image_proj = _resampler_to_file_keys(proj.state_dict())
    ip_adapter = {}
    modules = dict(unet.named_modules())
    for k, name in enumerate(_cross_attention_names(unet)):
        attn = modules[name[: -len(".processor")]]
        ip_adapter[f"{2 * k + 1}.to_k_ip.weight"] = attn.to_k.weight.detach().clone()
        ip_adapter[f"{2 * k + 1}.to_v_ip.weight"] = attn.to_v.weight.detach().clone()
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def install_ip_adapter(unet, state: dict) -> torch.nn.Module:
    """Load a file-layout state into `unet` with diffusers' own loader; returns the image projection.

    The loader is diffusers' public `IPAdapterMixin.load_ip_adapter`, given the state dict and a
    host that holds only the U-Net (no image encoder or feature extractor to register): it
    installs IP-Adapter attention processors and `encoder_hid_proj` exactly as loading the file
    into a pipeline does.
    """

    class UNetOnly(IPAdapterMixin):  # what load_ip_adapter reads of a pipeline, given a state dict
        def __init__(self, unet):
            self.unet = unet

    check_ip_adapter_state(state, unet, "<state dict>")
    UNetOnly(unet).load_ip_adapter(state, subfolder="", weight_name=IP_ADAPTER_WEIGHT_NAME, low_cpu_mem_usage=False)
    return unet.encoder_hid_proj.image_projection_layers[0]


def _resampler_to_file_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' IPAdapterPlusImageProjection names -> the original Resampler's names."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] != "layers":
            out[key] = value
            continue
        i, rest = parts[1], ".".join(parts[2:])
        if rest in ("attn.to_k.weight", "attn.to_v.weight"):
            if rest == "attn.to_k.weight":  # to_kv = [to_k; to_v]
                out[f"layers.{i}.0.to_kv.weight"] = torch.cat([value, sd[f"layers.{i}.attn.to_v.weight"]], dim=0)
            continue
        renamed = {
            "ln0.weight": "0.norm1.weight",
            "ln0.bias": "0.norm1.bias",
            "ln1.weight": "0.norm2.weight",
            "ln1.bias": "0.norm2.bias",
            "attn.to_q.weight": "0.to_q.weight",
            "attn.to_out.0.weight": "0.to_out.weight",
            "ff.0.weight": "1.0.weight",
            "ff.0.bias": "1.0.bias",
            "ff.1.net.0.proj.weight": "1.1.weight",
            "ff.1.net.2.weight": "1.3.weight",
        }
        if rest not in renamed:
            raise KeyError(f"unexpected Resampler parameter {key}")
        out[f"layers.{i}.{renamed[rest]}"] = value
    return out


def ip_adapter_state_dict(unet, image_proj) -> dict[str, dict[str, torch.Tensor]]:
    """The IP-Adapter held by `unet` (processors) and `image_proj` (Resampler), in the file layout."""
    image = {k: v.detach().clone().contiguous() for k, v in _resampler_to_file_keys(image_proj.state_dict()).items()}
    procs = unet.attn_processors
    adapter = {}
    for k, name in enumerate(_cross_attention_names(unet)):
        proc = procs[name]
        if not hasattr(proc, "to_k_ip"):
            raise ValueError(f"U-Net layer {name} has no IP-Adapter processor")
        adapter[f"{2 * k + 1}.to_k_ip.weight"] = proc.to_k_ip[0].weight.detach().clone().contiguous()
        adapter[f"{2 * k + 1}.to_v_ip.weight"] = proc.to_v_ip[0].weight.detach().clone().contiguous()
    return {"image_proj": image, "ip_adapter": adapter}


def save_ip_adapter(folder, state: dict, image_encoder, weight_name: str | None = None) -> Path:
    """Write `folder/weight_name` (safetensors, prefixed keys) and `folder/image_encoder/`."""


    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {f"image_proj.{k}": v for k, v in state["image_proj"].items()}
    flat.update({f"ip_adapter.{k}": v for k, v in state["ip_adapter"].items()})
    path = folder / (weight_name or IP_ADAPTER_WEIGHT_NAME)
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={"format": "pt"})
    image_encoder.save_pretrained(folder / IMAGE_ENCODER_SUBFOLDER, safe_serialization=True)
    return path


def read_ip_adapter_file(path) -> dict[str, dict[str, torch.Tensor]]:
    """Read a safetensors IP-Adapter file into {"image_proj": {...}, "ip_adapter": {...}}."""
    path = Path(path)
    if not path.is_file():
        raise IPAdapterFileError(path, "IP-Adapter weight file not found")
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise IPAdapterFileError(path, f"not a readable safetensors file ({exc})") from None
    state = {"image_proj": {}, "ip_adapter": {}}
    other = []
    for key, value in flat.items():
        group, _, rest = key.partition(".")
        if group in state and rest:
            state[group][rest] = value
        else:
            other.append(key)
    if other:
        raise IPAdapterFileError(path, f"keys outside 'image_proj.' and 'ip_adapter.': {sorted(other)[:5]}")
    return state


def check_ip_adapter_state(state: dict, unet, path) -> None:
    """Raise IPAdapterFileError unless `state` fits `unet`: an IP-Adapter-Plus Resampler, and
    to_k_ip / to_v_ip for every cross-attention layer with the right shapes."""
    for group in ("image_proj", "ip_adapter"):
        if not state.get(group):
            raise IPAdapterFileError(path, f"no '{group}.' keys (an IP-Adapter file has 'image_proj.' and 'ip_adapter.' keys)")
    proj = state["image_proj"]
    for key in ("latents", "proj_in.weight", "proj_out.weight", "norm_out.weight", "layers.0.0.to_q.weight"):
        if key not in proj:
            raise IPAdapterFileError(path, f"missing key image_proj.{key} (expected an IP-Adapter-Plus Resampler)")
    cross_dim = unet.config.cross_attention_dim
    if proj["proj_out.weight"].shape[0] != cross_dim:
        raise IPAdapterFileError(
            path, f"image_proj.proj_out.weight has {proj['proj_out.weight'].shape[0]} outputs, the U-Net's cross_attention_dim is {cross_dim}"
        )
    names = _cross_attention_names(unet)
    expected = {f"{2 * k + 1}.to_{kv}_ip.weight" for k in range(len(names)) for kv in "kv"}
    got = set(state["ip_adapter"])
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise IPAdapterFileError(
            path,
            f"ip_adapter keys do not match the U-Net's {len(names)} cross-attention layers"
            + (f"; missing {missing[:4]}" if missing else "")
            + (f"; unexpected {extra[:4]}" if extra else ""),
        )
    modules = dict(unet.named_modules())
    for k, name in enumerate(names):
        attn = modules[name[: -len(".processor")]]
        for kv, lin in (("k", attn.to_k), ("v", attn.to_v)):
            w = state["ip_adapter"][f"{2 * k + 1}.to_{kv}_ip.weight"]
            if tuple(w.shape) != tuple(lin.weight.shape):
                raise IPAdapterFileError(path, f"ip_adapter.{2 * k + 1}.to_{kv}_ip.weight has shape {tuple(w.shape)}, layer {name} needs {tuple(lin.weight.shape)}")


def clip_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) or (B, 3, H, W) float in [0, 1] at the encoder's size -> (B, 3, H, W) CLIP-normalised,
    what CLIPImageProcessor produces for an image already at the encoder's size."""
    if images.shape[-1] == 3:
        images = images.permute(0, 3, 1, 2)
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def image_prompt_tokens(image_encoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """The IP-Adapter-Plus input, as the pipeline computes it: the encoder's penultimate hidden
    states, (B, 1 + patches, C)."""
    return image_encoder(pixel_values, output_hidden_states=True).hidden_states[-2]


def encode_image_prompts(pipe, images: list) -> tuple[torch.Tensor, torch.Tensor]:
    """One image prompt per image, through the pipeline's own feature extractor and image encoder:
    (embeds, negative), each (B, ...). IP-Adapter-Plus reads the encoder's penultimate hidden
    states, the plain IP-Adapter its projected embedding; negative is the encoding of all-zero
    pixels, the pipeline's unconditional image prompt."""
    plain = isinstance(pipe.unet.encoder_hid_proj.image_projection_layers[0], ImageProjection)
    with torch.no_grad():
        return pipe.encode_image(list(images), pipe.image_encoder.device, 1, output_hidden_states=not plain)


@contextmanager
def per_prompt_image_embeds(unet, image_embeds: torch.Tensor):
    """Give each prompt of a batched pipeline call its own image prompt, for the calls inside the block.

    diffusers' pipelines read the IP-Adapter input as the image(s) of one prompt and repeat it for
    every prompt of the batch: N reference images (or N rows of `ip_adapter_image_embeds`) for a
    batch of N prompts become N images for each prompt, and every sample attends to the tokens of
    all N references at once (huggingface/diffusers#9813). Generating a batch of different
    references that way blends them: the samples lose their own reference's layout and converge
    on what the batch has in common. Here the U-Net gets the inputs directly, row by row, the
    way training feeds them.

    image_embeds: (B, 1, ...) with one row per prompt, or (2B, 1, ...) with the B negative rows
    first, for classifier-free guidance (the layout of the U-Net's `added_cond_kwargs`). A U-Net
    call with B samples gets the last B rows, one with 2B samples all of them. Pass no IP-Adapter
    input to the pipeline itself.
    """
    n_proj = len(unet.encoder_hid_proj.image_projection_layers)
    if n_proj != 1:
        raise ValueError(f"per_prompt_image_embeds feeds one IP-Adapter; the U-Net has {n_proj}")
    rows = image_embeds.shape[0]

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        b = sample.shape[0]
        if b == rows:
            chosen = image_embeds
        elif 2 * b == rows:  # no guidance: the positive half
            chosen = image_embeds[b:]
        else:
            raise ValueError(f"per_prompt_image_embeds: {rows} image-prompt rows for a U-Net batch of {b}")
        kwargs = dict(kwargs)
        kwargs["added_cond_kwargs"] = {**(kwargs.get("added_cond_kwargs") or {}), "image_embeds": [chosen.to(sample.device, sample.dtype)]}
        return args, kwargs

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
