"""The multi-view teacher: MVDream's layout in diffusers' U-Net, the converter, the loader, training."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from fourdistill.teachers.multiview.convert import from_mvdream, to_mvdream
from fourdistill.teachers.multiview.load import TEACHER_FILE, load_multiview_teacher, save_multiview_teacher
from fourdistill.teachers.multiview.model import (
    MultiViewAttnProcessor,
    MultiViewError,
    camera_input,
    multiview_unet,
    predict_views,
    set_multiview,
)

TINY = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
)


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(**TINY).eval()


def cameras(b, v, seed=0):
    from fourdistill.cameras import orbit_camera

    rng = np.random.default_rng(seed)
    out = np.zeros((b, v, 4, 4), np.float32)
    for i in range(b):
        offset = rng.uniform(-180, 180)
        for k in range(v):
            out[i, k] = orbit_camera(offset + 90 * k, 20.0, 3.0, 40.0, 8, 8, (0, 0, 0)).c2w
    return torch.from_numpy(out)


def randomise_camera_mlp(unet, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.class_embedding.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_camera_input_normalises_the_translation_and_flattens():
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[:, :3, 3] = torch.tensor([[3.0, 0, 4.0], [0, 2.0, 0]])
    x = camera_input(c2w)
    assert x.shape == (2, 16)
    # row-major: the translation sits at entries 3, 7, 11
    assert torch.allclose(x[0, [3, 7, 11]], torch.tensor([0.6, 0.0, 0.8]))
    assert torch.allclose(x[1, [3, 7, 11]], torch.tensor([0.0, 1.0, 0.0]))
    assert x[0, 0] == 1 and x[0, 15] == 1
    with pytest.raises(MultiViewError, match="cameras"):
        camera_input(torch.zeros(2, 3, 4))
    with pytest.raises(MultiViewError, match="origin"):
        camera_input(torch.eye(4))


def test_one_view_processor_equals_plain_attention():
    unet = tiny_unet()
    x, t, text = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 900]), torch.randn(3, 77, 16)
    with torch.no_grad():
        plain = unet(x, t, text).sample
        set_multiview(unet, 1)
        assert plain.shape == unet(x, t, text).sample.shape
        procs = {n: MultiViewAttnProcessor(1) if n.endswith("attn1.processor") else p for n, p in unet.attn_processors.items()}
        unet.set_attn_processor(procs)
        one_view = unet(x, t, text).sample
    assert torch.allclose(plain, one_view, atol=1e-6)


def test_views_attend_to_each_other_only_with_the_processor():
    torch.manual_seed(0)
    mv = multiview_unet(tiny_unet(), num_views=4)
    randomise_camera_mlp(mv)
    x, t, text, cams = torch.randn(1, 4, 4, 8, 8), torch.tensor([400]), torch.randn(1, 77, 16), cameras(1, 4)
    changed = x.clone()
    changed[0, 0] += torch.randn_like(changed[0, 0])
    with torch.no_grad():
        a, b = predict_views(mv, x, t, text, cams), predict_views(mv, changed, t, text, cams)
        assert (a[0, 1:] - b[0, 1:]).abs().max() > 1e-4  # views 1..3 see view 0's change
        set_multiview(mv, 1)
        flat = dict(encoder_hidden_states=text.repeat(4, 1, 1), class_labels=camera_input(cams[0]))
        c = mv(x[0], t.repeat(4), **flat).sample
        d = mv(changed[0], t.repeat(4), **flat).sample
    assert torch.allclose(c[1:], d[1:], atol=1e-6)  # plain attention: the other views do not change


def test_zero_camera_mlp_gives_the_image_unet_per_view_and_the_camera_matters_once_trained():
    unet = tiny_unet()
    mv = multiview_unet(unet, num_views=2)
    set_multiview(mv, 1)
    x, t, text, cams = torch.randn(2, 4, 8, 8), torch.tensor([100, 100]), torch.randn(2, 77, 16), cameras(1, 2)[0]
    with torch.no_grad():
        assert torch.allclose(mv(x, t, text, class_labels=camera_input(cams)).sample, unet(x, t, text).sample, atol=1e-5)
        randomise_camera_mlp(mv)
        moved = mv(x, t, text, class_labels=camera_input(cams)).sample
    assert (moved - unet(x, t, text).sample).abs().max() > 1e-3


def test_bad_view_counts_and_camera_shapes_are_named():
    mv = multiview_unet(tiny_unet(), num_views=4)
    x, t, text = torch.randn(1, 4, 4, 8, 8), torch.tensor([10]), torch.randn(1, 77, 16)
    with pytest.raises(MultiViewError, match="cameras: expected shape"):
        predict_views(mv, x, t, text, torch.zeros(1, 3, 4, 4))
    with pytest.raises(MultiViewError, match="built for 4"):
        predict_views(mv, torch.randn(1, 2, 4, 8, 8), t, text, cameras(1, 2))
    with pytest.raises(MultiViewError, match="whole number of 4-view sets"):
        mv(torch.randn(3, 4, 8, 8), torch.tensor([1, 1, 1]), torch.randn(3, 77, 16), class_labels=torch.zeros(3, 16))
    with pytest.raises(MultiViewError, match="num_views"):
        MultiViewAttnProcessor(0)


def test_converter_round_trips_a_tiny_original_layout_checkpoint():
    mv = multiview_unet(tiny_unet(), num_views=4)
    randomise_camera_mlp(mv)
    original = to_mvdream(mv.state_dict(), mv.config)
    assert "model.diffusion_model.camera_embed.0.weight" in original
    assert "model.diffusion_model.camera_embed.2.bias" in original
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in original  # the first cross-attention block
    assert not any("class_embedding" in k for k in original)
    back = from_mvdream(original, mv.config)
    state = mv.state_dict()
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(MultiViewError, match="not an MVDream checkpoint"):
        from_mvdream({"model.diffusion_model.conv_in.weight": torch.zeros(1)}, mv.config)


@pytest.fixture(scope="module")
def embedded_mv():
    from fourdistill.teachers.parts import load_base_parts

    parts = load_base_parts()
    return parts, multiview_unet(parts.unet, 4)


def test_teacher_folder_and_original_file_load_to_the_same_predictions(tmp_path, embedded_mv):
    parts, mv = embedded_mv
    randomise_camera_mlp(mv)
    folder = save_multiview_teacher(mv, tmp_path / "teacher", "embedded", 4, float16=False)
    assert json.loads((folder / TEACHER_FILE).read_text())["num_views"] == 4
    from_folder = load_multiview_teacher(folder)
    original = tmp_path / "sd-tiny-4view.pt"
    torch.save(to_mvdream(mv.state_dict(), mv.config), original)
    from_file = load_multiview_teacher(original, base="embedded")
    x, t, text, cams = torch.randn(1, 4, 4, 16, 16), torch.tensor([600]), parts.encode_text(["a red cube"]), cameras(1, 4)
    with torch.no_grad():
        want = predict_views(mv, x, t, text, cams)
        assert torch.allclose(from_folder.predict(x, t, text, cams), want, atol=1e-5)
        assert torch.allclose(from_file.predict(x, t, text, cams), want, atol=1e-5)
    half = load_multiview_teacher(save_multiview_teacher(mv, tmp_path / "half", "embedded", 4, float16=True))
    assert half.unet.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(half.predict(x, t, text, cams), want, atol=5e-2)


def test_unknown_folders_and_files_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MultiViewError, match="not a multi-view teacher"):
        load_multiview_teacher(tmp_path / "empty")
    bad = tmp_path / "weights.txt"
    bad.write_text("x")
    with pytest.raises(MultiViewError, match="not a checkpoint file"):
        load_multiview_teacher(bad)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(MultiViewError, match="cannot read the checkpoint"):
        load_multiview_teacher(broken, base="embedded")
    (tmp_path / "image" / "unet").mkdir(parents=True)
    (tmp_path / "image" / TEACHER_FILE).write_text(json.dumps({"num_views": 4}))
    (tmp_path / "image" / "unet" / "config.json").write_text(json.dumps({"class_embed_type": None}))
    with pytest.raises(MultiViewError, match="not a multi-view U-Net"):
        load_multiview_teacher(tmp_path / "image")
    with pytest.raises(MultiViewError, match="no such file or folder"):
        load_multiview_teacher(str(tmp_path / "missing"))
