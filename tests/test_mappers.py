import pytest
import torch

from fourdistill.conditioning.processors import (
    LayerTextIPAdapterAttnProcessor,
    cross_attention_layers,
    install_layer_processors,
    layer_processors_installed,
)
from fourdistill.conditioning.text import (
    TIME_TOKEN,
    VIEW_TOKEN,
    MappedTextConditioner,
    bypass,
    substituted_embeddings,
)
from fourdistill.mappers.neti import FourierEncoding, MapperConfig, TimeMapper, ViewMapper

from tiny_models import tiny_text_encoder, tiny_tokenizer, tiny_unet


def _inputs(n, k=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1000, (n,), generator=g), torch.randint(0, 4, (n,), generator=g), torch.rand(n, k, generator=g) * 2 - 1


def test_fourier_encoding_shapes_determinism_and_sigmas():
    a = FourierEncoding([0.03, 2.0, 1.0], 64, seed=3)
    b = FourierEncoding([0.03, 2.0, 1.0], 64, seed=3)
    c = FourierEncoding([0.03, 2.0, 1.0], 64, seed=4)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    assert a.weight.shape == (3, 32)
    # each input column scaled by its own sigma
    ratio = a.weight.std(dim=1)
    assert ratio[0] < 0.1 and 1.0 < ratio[1] < 3.5
    x = torch.randn(5, 3)
    y = a(x)
    assert y.shape == (5, 64)
    torch.testing.assert_close(y[:, :32] ** 2 + y[:, 32:] ** 2, torch.ones(5, 32))
    assert not a.weight.requires_grad and "weight" in dict(a.named_buffers())


def test_mapper_outputs_base_and_bypass_of_word_width():
    m = TimeMapper(MapperConfig(kind="time", word_dim=32, n_layers=4)).eval()
    t, l, c = _inputs(6)
    v_base, v_bypass = m(t, l, c)
    assert v_base.shape == (6, 32) and v_bypass.shape == (6, 32)
    # the same inputs give the same outputs; a different displacement a different token
    v2, _ = m(t, l, c)
    torch.testing.assert_close(v_base, v2)
    v3, _ = m(t, l, -c)
    assert not torch.allclose(v_base, v3)


def test_base_norm_option_fixes_the_norm_of_v_base():
    m = TimeMapper(MapperConfig(kind="time", word_dim=16, n_layers=4, base_norm=0.7)).eval()
    v_base, _ = m(*_inputs(5))
    torch.testing.assert_close(v_base.norm(dim=-1), torch.full((5,), 0.7))


def test_nested_dropout_only_in_training():
    m = TimeMapper(MapperConfig(kind="time", word_dim=8, n_layers=4, nested_dropout_p=1.0))
    t, l, c = _inputs(64)
    hidden = []
    m.blocks.register_forward_hook(lambda mod, i, o: hidden.append(o))
    m.train()
    torch.manual_seed(0)
    out_train = m(t, l, c)[0]
    m.eval()
    out_eval = m(t, l, c)[0]
    out_eval2 = m(t, l, c)[0]
    torch.testing.assert_close(out_eval, out_eval2)
    assert not torch.allclose(out_train, out_eval)
    # in training with p = 1 every row is cut at some index: trailing units are zero
    m.train()
    x = m.encoding(m.encode_inputs(t, l, c))
    h = m._nested_dropout(m.blocks(x))
    zero_tail = (h == 0).flip(1).cumprod(1).sum(1)  # count of trailing zeros per row
    assert (zero_tail > 0).float().mean() > 0.9
    # truncation at inference keeps only the first units
    m.eval()
    full = m(t, l, c, truncation=None)[0]
    trunc = m(t, l, c, truncation=4)[0]
    assert not torch.allclose(full, trunc)


def test_view_mapper_conditions_scale_to_unit_range():
    vm = ViewMapper(MapperConfig(kind="view", word_dim=8, n_layers=4))
    c = vm.condition(spherical_delta=torch.tensor([[90.0, -45.0, 0.5], [360.0, 0.0, 0.0]]))
    torch.testing.assert_close(c, torch.tensor([[0.5, -0.5, 0.5], [1.0, 0.0, 0.0]]))
    vm2 = ViewMapper(MapperConfig(kind="view", word_dim=8, n_layers=4, view_condition="matrix"))
    pose = torch.eye(4).unsqueeze(0)
    pose[0, :3, 3] = torch.tensor([2.0, 0.0, -8.0])
    c2 = vm2.condition(relative_pose=pose)
    assert c2.shape == (1, 12)
    torch.testing.assert_close(c2[0, [3, 7, 11]], torch.tensor([0.5, 0.0, -1.0]))
    with pytest.raises(ValueError, match="spherical"):
        vm.condition(relative_pose=pose)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        TimeMapper(MapperConfig(kind="time", word_dim=8, n_layers=4)).condition(torch.tensor([1.5]))


def test_bypass_matches_a_hand_computation():
    e = torch.tensor([[3.0, 4.0]])  # ||e|| = 5
    v = torch.tensor([[0.0, 2.0]])  # direction (0, 1)
    torch.testing.assert_close(bypass(e, v, 0.2), torch.tensor([[3.0, 4.0 + 0.2 * 5.0]]))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    te = tiny_text_encoder(len(tok) + 2)
    unet = tiny_unet()
    return tok, te, unet


def _conditioner(stack, view=True):
    tok, te, unet = stack
    layers = cross_attention_layers(unet)
    tm = TimeMapper(MapperConfig(kind="time", word_dim=32, n_layers=len(layers)))
    vm = ViewMapper(MapperConfig(kind="view", word_dim=32, n_layers=len(layers))) if view else None
    return MappedTextConditioner(te, tok, len(layers), tm, vm).eval()


def test_layer_list_is_derived_from_the_unet(stack):
    layers = cross_attention_layers(stack[2])
    assert len(layers) == 4  # 1 down + 1 mid + 2 up in the tiny U-Net
    assert layers[0].startswith("down_blocks") and layers[1].startswith("mid_block") and layers[-1].startswith("up_blocks")


def test_substitution_replaces_only_the_placeholder_input_embedding(stack):
    tok, te, _ = stack
    cond = _conditioner(stack)
    ids = cond.tokenize([cond.prompt("a red cube")])
    tid = cond.token_ids[TIME_TOKEN]
    vec_t = torch.full((1, 32), 7.0)
    vec_v = torch.full((1, 32), -3.0)
    emb = te.get_input_embeddings()
    with substituted_embeddings(te, {tid: vec_t, cond.token_ids[VIEW_TOKEN]: vec_v}):
        out = emb(ids)
    plain = emb(ids)
    pos_t = (ids[0] == tid).nonzero().item()
    pos_v = (ids[0] == cond.token_ids[VIEW_TOKEN]).nonzero().item()
    assert pos_t == 1 and pos_v == 2  # right after BOS, as the prompt says
    torch.testing.assert_close(out[0, pos_t], vec_t[0])
    torch.testing.assert_close(out[0, pos_v], vec_v[0])
    others = [i for i in range(ids.shape[1]) if i not in (pos_t, pos_v)]
    torch.testing.assert_close(out[0, others], plain[0, others])
    with pytest.raises(ValueError, match="exactly once"):
        with substituted_embeddings(te, {tid: vec_t}):
            emb(cond.tokenize(["a cube"]))


def test_one_pass_gives_each_layer_its_own_condition_and_matches_per_layer_passes(stack):
    cond = _conditioner(stack)
    ids = cond.tokenize([cond.prompt("a red cube"), cond.prompt("a blue ball")])
    t = torch.tensor([10, 900])
    d = torch.tensor([[0.5], [-0.25]])
    v = cond.view_mapper.condition(spherical_delta=torch.tensor([[30.0, 5.0, 0.0], [-60.0, 0.0, 0.1]]))
    with torch.no_grad():
        out = cond(ids, t, d, v)
    n_layers = cond.n_layers
    assert out.shape == (n_layers, 2, ids.shape[1], 32)
    assert not torch.allclose(out[0], out[1])  # two layers, two different conditions
    # the batched pass equals a separate text-encoder pass per layer (the per-layer formulation)
    tid, vid = cond.token_ids[TIME_TOKEN], cond.token_ids[VIEW_TOKEN]
    with torch.no_grad():
        for layer in range(n_layers):
            l = torch.full((2,), layer)
            tb, tp = cond.time_mapper(t, l, d)
            vb, vp = cond.view_mapper(t, l, v)
            with substituted_embeddings(cond.encoder, {tid: tb, vid: vb}):
                enc = cond.encoder(ids).last_hidden_state.clone()
            for row in range(2):
                pt = (ids[row] == tid).nonzero().item()
                pv = (ids[row] == vid).nonzero().item()
                enc[row, pt] = bypass(enc[row, pt][None], tp[row][None], cond.bypass_config.time_alpha)[0]
                enc[row, pv] = bypass(enc[row, pv][None], vp[row][None], cond.bypass_config.view_alpha)[0]
            torch.testing.assert_close(out[layer], enc, atol=1e-5, rtol=1e-5)


def test_gradients_reach_only_the_mappers(stack):
    cond = _conditioner(stack).train()
    ids = cond.tokenize([cond.prompt("a cube")])
    out = cond(ids, torch.tensor([500]), torch.tensor([[0.3]]), torch.zeros(1, 3))
    out.square().mean().backward()
    assert all(p.grad is not None for p in cond.time_mapper.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in cond.view_mapper.parameters() if p.requires_grad)
    assert all(p.grad is None for p in cond.encoder.parameters())
    assert set(k.split(".")[0] for k in cond.state_dict()) == {"time_mapper", "view_mapper"}


def test_placeholder_and_condition_must_agree(stack):
    cond = _conditioner(stack, view=False)
    with pytest.raises(ValueError, match="no .*placeholder"):
        cond(cond.tokenize(["a cube"]), torch.tensor([1]), torch.tensor([[0.1]]))
    with pytest.raises(ValueError, match="view placeholder"):
        cond(cond.tokenize([f"{TIME_TOKEN} {VIEW_TOKEN} a cube"]), torch.tensor([1]), torch.tensor([[0.1]]))


def test_processors_route_each_layer_its_condition_and_keep_the_ip_adapter(stack):
    _, _, unet = stack
    layers = install_layer_processors(unet)
    assert layer_processors_installed(unet)
    n = len(layers)
    x = torch.randn(1, 4, 8, 8)
    base = torch.randn(1, 16, 32)
    conds = base.expand(n, 1, 16, 32).clone()
    with torch.no_grad():
        same = unet(x, 10, encoder_hidden_states=base, cross_attention_kwargs={"layer_conditions": conds}).sample
        plain = unet(x, 10, encoder_hidden_states=base).sample
        torch.testing.assert_close(same, plain)  # identical conditions == the ordinary call
        changed = conds.clone()
        changed[n - 1] = torch.randn(1, 16, 32)
        out = unet(x, 10, encoder_hidden_states=base, cross_attention_kwargs={"layer_conditions": changed}).sample
        assert not torch.allclose(out, plain)  # the last layer read its own condition
    # each layer reads its own slot: changing any single slot changes the output
    for layer in range(n):
        one = conds.clone()
        one[layer] = torch.randn(1, 16, 32)
        with torch.no_grad():
            assert not torch.allclose(unet(x, 10, encoder_hidden_states=base, cross_attention_kwargs={"layer_conditions": one}).sample, plain)
    assert [unet.attn_processors[k].layer_index for k in layers] == list(range(n))
    # IP-Adapter processors are converted with their weights
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    ip = IPAdapterAttnProcessor2_0(hidden_size=32, cross_attention_dim=32, num_tokens=(4,), scale=0.5)
    conv = LayerTextIPAdapterAttnProcessor.from_processor(3, ip)
    assert conv.layer_index == 3 and conv.scale == [0.5]
    torch.testing.assert_close(conv.to_k_ip[0].weight, ip.to_k_ip[0].weight)
