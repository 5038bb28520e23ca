"""The control adapter: the asked change fed where the U-Net reads it, beside the mappers.

The mappers (fourdistill.mappers.neti) reach the U-Net only through its text condition, and on
a frozen U-Net that path carries little of the condition (docs/control.md). The adapter adds a
second path, as camera-controlled diffusion models do:

- a **control embedding**: the time displacement d and the relative camera (Δazimuth,
  Δelevation, Δradius) as `control_features` (CONTROL_FEATURES numbers), through an MLP into
  the U-Net's timestep embedding, where every ResNet block reads it. MVDream (Shi et al. 2024,
  "MVDream: Multi-view Diffusion for 3D Generation") adds its camera there; Zero-1-to-3 (Liu et
  al. 2023, "Zero-1-to-3: Zero-shot One Image to 3D Object") conditions on the relative pose.
  It is diffusers' own `class_embed_type="projection"` slot (`TimestepEmbedding`), with its last
  layer zero at the start, so the adapted U-Net begins equal to the frozen one;
- a **LoRA** (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models") on the
  attention projections, through PEFT (`unet.add_adapter`, as diffusers trains LoRA), named
  ADAPTER_NAME so it can be switched off.

Attaching registers a forward pre-hook that hands the U-Net the `class_labels` of the current
controls (`set_controls`) on every call, duplicated for the two halves of a classifier-free
guidance batch (the control is in both passes). With no controls set, or with the adapter
disabled (`enable_adapter(unet, False)`), the embedding adds nothing and the LoRA is off, so
the plain pipeline runs on the frozen weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding

CONTROL_FEATURES = 16
ADAPTER_NAME = "control"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, self and cross


class AdapterError(ValueError):
    """An adapter that cannot be built, attached or loaded; the message names the field."""


@dataclass(frozen=True)
class AdapterConfig:
    """rank: the LoRA's rank (alpha = rank; 0: no LoRA). embedding: whether the control
    embedding is added to the timestep embedding. At least one of the two."""

    rank: int = 8
    embedding: bool = True

    def __post_init__(self):
        if int(self.rank) < 0:
            raise AdapterError(f"adapter rank must be >= 0, got {self.rank}")
        if not self.rank and not self.embedding:
            raise AdapterError("an adapter needs a LoRA (rank > 0) or the control embedding, or both")

    def to_dict(self) -> dict:
        return asdict(self)


def control_features(time_delta: torch.Tensor, spherical_delta: torch.Tensor) -> torch.Tensor:
    """(B,) d in [-1, 1] and (B, 3) (Δazimuth_deg, Δelevation_deg, Δradius) -> (B, 16):

    d, Δaz / 180°, Δel / 90°, Δr and, for k = 1, 2, 3, sin(k π d / 2), cos(k π d / 2) - 1,
    sin(k Δaz), cos(k Δaz) - 1. The periodic terms let a small MLP tell nearby azimuths apart
    across the whole circle; every feature is 0 for no change, so "no change" is one point."""
    d = time_delta.reshape(-1).float()
    s = spherical_delta.reshape(-1, 3).float().to(d.device)
    if s.shape[0] != d.shape[0]:
        raise AdapterError(f"control_features: {d.shape[0]} time displacements for {s.shape[0]} view changes")
    az, el, r = s[:, 0] * (math.pi / 180), s[:, 1] * (math.pi / 180), s[:, 2]
    feats = [d, az / math.pi, el / (math.pi / 2), r]
    for k in (1, 2, 3):
        feats += [torch.sin(k * math.pi * d / 2), torch.cos(k * math.pi * d / 2) - 1, torch.sin(k * az), torch.cos(k * az) - 1]
    return torch.stack(feats, dim=1)


class ControlEmbedding(TimestepEmbedding):
    """diffusers' TimestepEmbedding (linear_1, SiLU, linear_2: the keys of a projection class
    embedding) that adds nothing while `enabled` is False."""

    enabled: bool = True

    def forward(self, sample, condition=None):
        out = super().forward(sample, condition)
        return out if self.enabled else torch.zeros_like(out)


class _ControlHook:
    """The U-Net pre-hook: class_labels from the controls set last (zeros and the embedding
    off when none are)."""

    def __init__(self):
        self.features: torch.Tensor | None = None

    def __call__(self, module, args, kwargs):
        emb = getattr(module, "class_embedding", None)
        if not isinstance(emb, ControlEmbedding):
            return args, kwargs
        if kwargs.get("class_labels") is not None:  # given by the caller (training)
            emb.enabled = module._control_enabled
            return args, kwargs
        sample = args[0] if args else kwargs["sample"]
        feats = self.features
        emb.enabled = feats is not None and module._control_enabled
        if feats is None:
            feats = torch.zeros(1, CONTROL_FEATURES)
        if feats.shape[0] != sample.shape[0]:
            if sample.shape[0] % feats.shape[0]:
                raise AdapterError(f"controls for {feats.shape[0]} images, the U-Net is called on {sample.shape[0]}")
            feats = feats.repeat(sample.shape[0] // feats.shape[0], 1)  # both halves of a guided batch
        kwargs = dict(kwargs)
        kwargs["class_labels"] = feats.to(sample.device, sample.dtype)
        return args, kwargs


def attach_adapter(unet, config: AdapterConfig, state_dict: dict | None = None):
    """Give `unet` the adapter of `config` (in place) and return it. The control embedding goes
    into diffusers' projection class-embedding slot (zero last layer), the LoRA is a PEFT
    adapter; `state_dict` (adapter_state_dict's keys) loads trained weights. A U-Net that
    already has a class embedding or this adapter is refused."""
    if hasattr(unet, "_control_hook"):
        raise AdapterError("this U-Net already has a control adapter")
    if config.embedding:
        if unet.class_embedding is not None:
            raise AdapterError("this U-Net already has a class embedding (e.g. a multi-view camera): the control embedding needs the slot")
        dim = unet.time_embedding.linear_2.out_features
        emb = ControlEmbedding(CONTROL_FEATURES, dim)
        torch.nn.init.zeros_(emb.linear_2.weight)
        torch.nn.init.zeros_(emb.linear_2.bias)
        param = next(unet.parameters())
        unet.class_embedding = emb.to(param.device, param.dtype)
        old = unet.config
        unet.register_to_config(class_embed_type="projection", projection_class_embeddings_input_dim=CONTROL_FEATURES)
        # diffusers' load_ip_adapter sets encoder_hid_dim_type as an attribute of the config
        # object, not an entry of it; a new config would drop it and with it the image prompt
        for key, value in vars(old).items():
            if not key.startswith("_") and key not in ("class_embed_type", "projection_class_embeddings_input_dim"):
                setattr(unet.config, key, value)
    if config.rank:
        from peft import LoraConfig

        unet.add_adapter(LoraConfig(r=int(config.rank), lora_alpha=int(config.rank), init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)),
                         adapter_name=ADAPTER_NAME)
    unet._control_config = config
    unet._control_enabled = True
    unet._control_hook = _ControlHook()
    unet._control_handle = unet.register_forward_pre_hook(unet._control_hook, with_kwargs=True)
    if state_dict is not None:
        load_adapter_state(unet, state_dict)
    return unet


def adapter_config_of(unet) -> AdapterConfig | None:
    """The AdapterConfig attached to `unet`, or None."""
    return getattr(unet, "_control_config", None)


def adapter_parameters(unet) -> list[torch.nn.Parameter]:
    """The adapter's parameters (the control embedding and the LoRA), made trainable."""
    params = []
    for name, p in unet.named_parameters():
        if name.startswith("class_embedding.") or f"lora_A.{ADAPTER_NAME}" in name or f"lora_B.{ADAPTER_NAME}" in name:
            p.requires_grad_(True)
            params.append(p)
    return params


def adapter_state_dict(unet) -> dict[str, torch.Tensor]:
    """The adapter's weights: `class_embedding.*` and the LoRA's (PEFT's keys, adapter name
    removed), on the CPU."""
    config = adapter_config_of(unet)
    if config is None:
        raise AdapterError("this U-Net has no control adapter")
    state = {}
    if config.embedding:
        state.update({f"class_embedding.{k}": v for k, v in unet.class_embedding.state_dict().items()})
    if config.rank:
        from peft import get_peft_model_state_dict

        state.update({f"lora.{k}": v for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME).items()})
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def load_adapter_state(unet, state: dict) -> None:
    """Load adapter_state_dict's weights into an attached adapter; a missing or extra key is
    named."""
    config = adapter_config_of(unet)
    expected = set(adapter_state_dict(unet))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise AdapterError(f"adapter weights do not fit the adapter {config}: missing {missing[:3]}, unexpected {extra[:3]}")
    if config.embedding:
        unet.class_embedding.load_state_dict({k[len("class_embedding."):]: v for k, v in state.items() if k.startswith("class_embedding.")})
    if config.rank:
        from peft import set_peft_model_state_dict

        lora = {k[len("lora."):]: v for k, v in state.items() if k.startswith("lora.")}
        set_peft_model_state_dict(unet, lora, adapter_name=ADAPTER_NAME)


def set_controls(unet, time_delta=None, spherical_delta=None) -> None:
    """The controls every following U-Net call is conditioned on: (B,) d and (B, 3) view
    changes (either may be None: no change); both None clears them (the embedding adds nothing)."""
    hook = getattr(unet, "_control_hook", None)
    if hook is None:
        return
    if time_delta is None and spherical_delta is None:
        hook.features = None
        return
    n = len(time_delta) if time_delta is not None else len(spherical_delta)
    d = torch.zeros(n) if time_delta is None else torch.as_tensor(time_delta, dtype=torch.float32)
    s = torch.zeros(n, 3) if spherical_delta is None else torch.as_tensor(spherical_delta, dtype=torch.float32)
    hook.features = control_features(d, s)


def enable_adapter(unet, enabled: bool = True) -> None:
    """Switch the adapter (embedding and LoRA) on or off; off is the frozen U-Net exactly."""
    config = adapter_config_of(unet)
    if config is None:
        return
    unet._control_enabled = bool(enabled)
    if config.rank:
        if enabled:
            unet.enable_adapters()
        else:
            unet.disable_adapters()
