import json

import pytest
import torch

from fourdistill.conditioning.processors import cross_attention_layers, install_layer_processors, layer_processors_installed
from fourdistill.conditioning.text import MappedTextConditioner
from fourdistill.mappers.checkpoint import load_mappers, save_mappers
from fourdistill.mappers.neti import MapperConfig, TimeMapper, ViewMapper

from tiny_models import tiny_pipeline


def _trained_conditioner(pipe):
    layers = cross_attention_layers(pipe.unet)
    torch.manual_seed(1)
    tm = TimeMapper(MapperConfig(kind="time", word_dim=32, n_layers=len(layers), encoding_seed=5, base_norm=0.4))
    vm = ViewMapper(MapperConfig(kind="view", word_dim=32, n_layers=len(layers), encoding_seed=6))
    return MappedTextConditioner(pipe.text_encoder, pipe.tokenizer, len(layers), tm, vm).eval(), layers


def test_saved_mappers_reload_to_identical_outputs(tmp_path):
    pipe = tiny_pipeline(tmp_path)
    cond, layers = _trained_conditioner(pipe)
    folder = save_mappers(tmp_path / "ckpt", cond, layers, base_model="tiny")
    cfg = json.loads((folder / "mappers.json").read_text())
    assert cfg["layers"] == layers and cfg["time_mapper"]["encoding_seed"] == 5 and cfg["bypass"]["time_alpha"] == 0.2

    fresh = tiny_pipeline(tmp_path / "other")
    attributes = set(vars(fresh))
    result = load_mappers(fresh, folder)
    loaded = result.conditioner
    assert layer_processors_installed(fresh.unet) and result.layers == layers and result.config["layers"] == layers
    assert set(vars(fresh)) == attributes  # the pipeline gets processors and tokens, no attributes of ours
    ids = cond.tokenize([cond.prompt("a cube")])
    args = (torch.tensor([100, 700]), torch.tensor([[0.3], [-0.6]]), torch.tensor([[0.1, 0.0, 0.0], [-0.5, 0.2, 0.1]]))
    with torch.no_grad():
        a = cond(ids.repeat(2, 1), *args)
        b = loaded(loaded.tokenize([loaded.prompt("a cube")]).repeat(2, 1), *args)
    torch.testing.assert_close(a, b)


def test_load_mappers_rejects_a_mismatched_unet_and_bad_folders(tmp_path):
    pipe = tiny_pipeline(tmp_path)
    cond, layers = _trained_conditioner(pipe)
    folder = save_mappers(tmp_path / "ckpt", cond, layers[:-1], base_model="tiny")  # pretend fewer layers
    with pytest.raises(ValueError, match="cross-attention layers"):
        load_mappers(tiny_pipeline(tmp_path / "b"), folder)
    with pytest.raises(FileNotFoundError, match="not a mapper checkpoint"):
        load_mappers(pipe, tmp_path)
    good = save_mappers(tmp_path / "good", cond, layers, base_model="tiny")
    (good / "mappers.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_mappers(pipe, good)


def test_processor_install_is_idempotent(tmp_path):
    pipe = tiny_pipeline(tmp_path)
    a = install_layer_processors(pipe.unet)
    b = install_layer_processors(pipe.unet)
    assert a == b
