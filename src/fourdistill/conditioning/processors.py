"""Attention processors that give each cross-attention layer its own text condition.

The U-Net is called with `cross_attention_kwargs={"layer_conditions": C}` where C has shape
(L, B, 77, width): one text condition per cross-attention layer. Each processor is told its
layer index when it is installed (from the U-Net's module names, never by counting calls), so
the result does not depend on call order, gradient checkpointing or re-entrant forwards.

The processors are subclasses of diffusers' own, so they compose with the IP-Adapter: the
image tokens still enter through decoupled cross-attention
`Attn(Q, K_text, V_text) + scale * Attn(Q, K_img, V_img)` (IP-Adapter, Ye et al. 2023), and diffusers'
`set_ip_adapter_scale` keeps working on them.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0


def _text_for_layer(encoder_hidden_states, layer_conditions: torch.Tensor | None, layer_index: int):
    """Swap the text part of `encoder_hidden_states` (a tensor, or (text, image tokens))."""
    if layer_conditions is None:
        return encoder_hidden_states
    text = layer_conditions[layer_index]
    if isinstance(encoder_hidden_states, tuple):
        return (text.to(encoder_hidden_states[0].dtype),) + tuple(encoder_hidden_states[1:])
    if encoder_hidden_states is not None:
        text = text.to(encoder_hidden_states.dtype)
    return text


class SelfAttnProcessor(AttnProcessor2_0):
    """Self-attention: accepts (and ignores) `layer_conditions` so the call signature is uniform."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, layer_conditions=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class LayerTextAttnProcessor(AttnProcessor2_0):
    """Cross-attention to this layer's own text condition."""

    def __init__(self, layer_index: int):
        super().__init__()
        self.layer_index = int(layer_index)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, layer_conditions=None):
        ehs = _text_for_layer(encoder_hidden_states, layer_conditions, self.layer_index)
        return super().__call__(attn, hidden_states, ehs, attention_mask, temb)


class LayerTextIPAdapterAttnProcessor(IPAdapterAttnProcessor2_0):
    """Decoupled cross-attention: this layer's own text condition plus the IP-Adapter's image tokens."""

    def __init__(self, layer_index: int, hidden_size, cross_attention_dim=None, num_tokens=(4,), scale=1.0):
        super().__init__(hidden_size, cross_attention_dim, num_tokens, scale)
        self.layer_index = int(layer_index)

    @classmethod
    def from_processor(cls, layer_index: int, processor: IPAdapterAttnProcessor2_0) -> "LayerTextIPAdapterAttnProcessor":
        new = cls(layer_index, processor.hidden_size, processor.cross_attention_dim, processor.num_tokens, processor.scale)
        ref = processor.to_k_ip[0].weight
        new.to(device=ref.device, dtype=ref.dtype)
        new.load_state_dict(processor.state_dict())
        return new

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        scale: float = 1.0,
        ip_adapter_masks=None,
        layer_conditions=None,
    ):
        ehs = _text_for_layer(encoder_hidden_states, layer_conditions, self.layer_index)
        return super().__call__(attn, hidden_states, ehs, attention_mask, temb, scale, ip_adapter_masks)


LAYER_PROCESSORS = (SelfAttnProcessor, LayerTextAttnProcessor, LayerTextIPAdapterAttnProcessor)


def cross_attention_layers(unet) -> list[str]:
    """Processor names of the U-Net's cross-attention layers, in IN -> MID -> OUT order.

    Derived from the model (16 for Stable Diffusion 1.x, XTI/P+ IN01..OUT11), never assumed.
    """
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    names.sort(key=lambda n: order.get(n.split(".")[0], 3))  # stable: keeps order within a group
    if not names:
        raise ValueError("this U-Net has no cross-attention layers (no attn2 modules): not a text-conditioned model")
    return names


def install_layer_processors(unet) -> list[str]:
    """Replace every attention processor with its layer-aware counterpart; returns the layer list.

    IP-Adapter processors (if `load_ip_adapter` ran before) keep their weights and scale.
    """
    layers = cross_attention_layers(unet)
    index = {name: i for i, name in enumerate(layers)}
    new = {}
    for name, proc in unet.attn_processors.items():
        if name in index:
            if isinstance(proc, IPAdapterAttnProcessor2_0):
                new[name] = proc if isinstance(proc, LayerTextIPAdapterAttnProcessor) else LayerTextIPAdapterAttnProcessor.from_processor(index[name], proc)
            else:
                new[name] = LayerTextAttnProcessor(index[name])
        else:
            new[name] = SelfAttnProcessor()
    unet.set_attn_processor(new)
    return layers


def layer_processors_installed(unet) -> bool:
    return all(isinstance(p, LAYER_PROCESSORS) for p in unet.attn_processors.values())
