"""The control adapter (fourdistill.mappers.adapter): a condition embedding in the U-Net's
timestep embedding and a PEFT LoRA, attached to a tiny random U-Net of the real class."""

import math

import pytest
import torch

from fourdistill.mappers.adapter import (
    CONTROL_FEATURES,
    AdapterConfig,
    AdapterError,
    adapter_parameters,
    adapter_state_dict,
    attach_adapter,
    control_features,
    enable_adapter,
    load_adapter_state,
    set_controls,
)
from tiny_models import tiny_unet


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, 8, 8, generator=g), torch.tensor([500] * b), torch.randn(b, 5, 32, generator=g)


def _out(unet, x, t, ehs):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ehs).sample


def _trained(unet, seed=1):
    """Give every adapter weight a random value (what training would do)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(unet):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return unet


def test_features_by_hand():
    f = control_features(torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 0.0, 0.0], [90.0, -45.0, 0.5]]))
    assert f.shape == (2, CONTROL_FEATURES)
    assert torch.all(f[0] == 0)  # no change is the origin
    expect = [1.0, 0.5, -0.5, 0.5, math.sin(math.pi / 2), math.cos(math.pi / 2) - 1, 1.0, -1.0]
    assert torch.allclose(f[1, :8], torch.tensor(expect), atol=1e-6)
    assert torch.allclose(f[1, 15], torch.tensor(math.cos(3 * math.pi / 2) - 1), atol=1e-6)


def test_untrained_adapter_is_the_frozen_unet():
    x, t, ehs = _inputs()
    frozen = _out(tiny_unet(), x, t, ehs)
    unet = attach_adapter(tiny_unet(), AdapterConfig(rank=4))
    set_controls(unet, [1.0, -1.0], [[90.0, 0, 0], [-90.0, 0, 0]])
    assert torch.allclose(_out(unet, x, t, ehs), frozen, atol=1e-6)


def test_trained_adapter_follows_the_control_and_switches_off():
    x, t, ehs = _inputs()
    frozen = _out(tiny_unet(), x, t, ehs)
    unet = _trained(attach_adapter(tiny_unet(), AdapterConfig(rank=4)))
    set_controls(unet, [0.0, 0.0], [[90.0, 0, 0], [90.0, 0, 0]])
    plus = _out(unet, x, t, ehs)
    set_controls(unet, [0.0, 0.0], [[-90.0, 0, 0], [-90.0, 0, 0]])
    minus = _out(unet, x, t, ehs)
    assert (plus - minus).abs().mean() > 1e-3  # the control reaches the output
    enable_adapter(unet, False)
    assert torch.allclose(_out(unet, x, t, ehs), frozen, atol=1e-6)  # off: the frozen weights exactly
    enable_adapter(unet, True)
    set_controls(unet)  # no controls: the embedding adds nothing, the LoRA stays
    none = _out(unet, x, t, ehs)
    emb_only = _trained(attach_adapter(tiny_unet(), AdapterConfig(rank=0)))
    set_controls(emb_only)
    assert torch.allclose(_out(emb_only, x, t, ehs), frozen, atol=1e-6)
    assert not torch.allclose(none, frozen, atol=1e-4)


def test_guided_batch_gets_the_controls_in_both_halves():
    x, t, ehs = _inputs(b=4)
    unet = _trained(attach_adapter(tiny_unet(), AdapterConfig(rank=0)))
    set_controls(unet, [0.5, -0.5], None)
    both = _out(unet, x, t, ehs)
    set_controls(unet, [0.5, -0.5, 0.5, -0.5], None)
    assert torch.allclose(both, _out(unet, x, t, ehs))
    set_controls(unet, [0.5, -0.5, 0.1], None)
    with pytest.raises(AdapterError, match="controls for 3 images"):
        _out(unet, x, t, ehs)


def test_state_round_trip():
    x, t, ehs = _inputs()
    a = _trained(attach_adapter(tiny_unet(), AdapterConfig(rank=4)))
    state = adapter_state_dict(a)
    assert any(k.startswith("lora.") for k in state) and any(k.startswith("class_embedding.") for k in state)
    b = attach_adapter(tiny_unet(), AdapterConfig(rank=4), state_dict=state)
    for u in (a, b):
        set_controls(u, [0.3, -0.7], [[40.0, 5, 0], [-60.0, 0, 0.1]])
    assert torch.allclose(_out(a, x, t, ehs), _out(b, x, t, ehs), atol=1e-6)
    with pytest.raises(AdapterError, match="missing"):
        load_adapter_state(attach_adapter(tiny_unet(), AdapterConfig(rank=4)), {k: v for k, v in state.items() if not k.startswith("lora.")})
    with pytest.raises(AdapterError, match="do not fit"):
        attach_adapter(tiny_unet(), AdapterConfig(rank=0), state_dict=state)


def test_bad_configs_are_named():
    with pytest.raises(AdapterError, match="rank"):
        AdapterConfig(rank=-1)
    with pytest.raises(AdapterError, match="LoRA .* or the control embedding"):
        AdapterConfig(rank=0, embedding=False)
    unet = attach_adapter(tiny_unet(), AdapterConfig(rank=2))
    with pytest.raises(AdapterError, match="already has a control adapter"):
        attach_adapter(unet, AdapterConfig(rank=2))


def test_attaching_keeps_a_loaded_ip_adapter(tmp_path):
    """diffusers keeps the IP-Adapter's encoder_hid_dim_type as an attribute of the config: the
    class-embedding slot's new config must keep it, or the image prompt silently drops out."""
    from fourdistill.teachers.image.load import load_stack
    from tiny_models import tiny_stack_folder

    folder = tiny_stack_folder(tmp_path)
    plain, adapted = (load_stack(str(folder), ip_adapter=True) for _ in range(2))
    attach_adapter(adapted.unet, AdapterConfig(rank=2))
    g = torch.Generator().manual_seed(0)
    x, ehs = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 7, 32, generator=g)
    image = {"image_embeds": [torch.randn(2, 1, 5, 32, generator=g)]}
    with torch.no_grad():
        a, b = (u.unet(x, torch.tensor([300, 700]), encoder_hidden_states=ehs, added_cond_kwargs=image).sample for u in (plain, adapted))
        other = plain.unet(x, torch.tensor([300, 700]), encoder_hidden_states=ehs, added_cond_kwargs={"image_embeds": [image["image_embeds"][0] * 3]}).sample
    assert adapted.unet.config.encoder_hid_dim_type == "ip_image_proj"
    assert not torch.allclose(a, other, atol=1e-4)  # the image prompt matters to this U-Net
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_explicit_class_labels_are_read_after_a_call_without_controls():
    """Training passes class_labels itself; a generation without controls in between (which
    switches the embedding off for its own calls) must not leave it off."""
    x, t, ehs = _inputs()
    unet = _trained(attach_adapter(tiny_unet(), AdapterConfig(rank=0)))
    labels = control_features(torch.tensor([1.0, -1.0]), torch.tensor([[90.0, 0, 0], [-90.0, 0, 0]]))
    with torch.no_grad():
        first = unet(x, t, encoder_hidden_states=ehs, class_labels=labels).sample
        set_controls(unet)
        _out(unet, x, t, ehs)
        again = unet(x, t, encoder_hidden_states=ehs, class_labels=labels).sample
        zero = unet(x, t, encoder_hidden_states=ehs, class_labels=torch.zeros_like(labels)).sample
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, zero, atol=1e-4)
