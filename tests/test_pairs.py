import numpy as np
import pytest
import torch

from fourdistill.cameras import OrbitRange, orbit_camera, spherical_coordinates, spherical_delta
from fourdistill.pairs import PairBatch, PairConfig, PairSampler, PairStream, collate_pairs
from fourdistill.sources.base import Frame, FrameInfo, Source
from fourdistill.sources.world import WorldScenes, WorldSource
from fourdistill.world import make_scene, render_view

ORBIT = OrbitRange(azimuth_deg=(-180.0, 180.0), elevation_deg=(10.0, 40.0), radius=(3.0, 3.4), fov_x_deg=40.0)


class OrbitToy(Source):
    """A continuous source whose image spells out its camera and time.

    Channel 0 is the time, channel 1 the camera's elevation scaled to [0, 1], channel 2 a
    horizontal ramp; the mask is the left half. No `render_batch`: pairs render view by view.
    """

    kind = "toy-orbit"
    renders_any_view = True

    def __init__(self, orbit=ORBIT, caption="a toy"):
        self.orbit = orbit
        self.name = "toy"
        self.caption = caption
        cam = orbit_camera(0.0, 20.0, 3.2, 40.0, 8, 8)
        self._infos = [FrameInfo(0, 0.0, cam)]

    def infos(self):
        return self._infos

    def frame(self, index):
        info = self._infos[index]
        return self.render(info.camera, info.time01)

    def render(self, camera, time01):
        h, w = camera.height, camera.width
        _, el, _ = spherical_coordinates(camera.c2w, self.orbit.target)
        rgb = np.empty((h, w, 3), dtype=np.float32)
        rgb[..., 0] = time01
        rgb[..., 1] = el / 90.0
        rgb[..., 2] = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
        mask = np.zeros((h, w), dtype=np.float32)
        mask[:, : w // 2] = 1.0
        return Frame(rgb=rgb, time01=float(time01), camera=camera, mask=mask)


class HeldToy(Source):
    """A discrete in-memory source: frame k is a flat image of value k / (N - 1) in every channel."""

    def __init__(self, kind, times, cameras, size=(24, 24), masks=False, caption=None):
        self.kind = kind
        self.name = kind
        self.caption = caption
        self._infos = [FrameInfo(k, float(t), c) for k, (t, c) in enumerate(zip(times, cameras))]
        self._size = size
        self._masks = masks
        self.decoded = []

    def infos(self):
        return self._infos

    def frame(self, index):
        self.decoded.append(index)
        w, h = self._size
        value = index / max(len(self._infos) - 1, 1)
        rgb = np.full((h, w, 3), value, dtype=np.float32)
        mask = np.ones((h, w), dtype=np.float32) * 0.5 if self._masks else None
        info = self._infos[index]
        return Frame(rgb=rgb, time01=info.time01, camera=info.camera, mask=mask)


def video_like(n=12):
    """One fixed unknown camera, times i / (n - 1), a non-square frame."""
    return HeldToy("video", np.linspace(0, 1, n), [None] * n, size=(40, 24), caption="a toy video")


def dnerf_like(n=20):
    """A monocular moving camera: every frame a new pose and a new time, with masks."""
    cams = [orbit_camera(-180 + 360 * k / n, 15 + k, 4.0, 40.0, 32, 32) for k in range(n)]
    return HeldToy("dnerf", np.linspace(0, 1, n), cams, size=(32, 32), masks=True)


def nerfstudio_like(n=10):
    """A static multi-view capture: many poses, one time."""
    cams = [orbit_camera(36.0 * k, 20.0, 3.5, 50.0, 16, 16) for k in range(n)]
    return HeldToy("nerfstudio", np.zeros(n), cams, size=(16, 16))


def multiview_video(n_cams=3, n_times=5):
    """A synchronised rig: every camera at every time."""
    cams = [orbit_camera(120.0 * c, 20.0, 3.5, 40.0, 16, 16) for c in range(n_cams)]
    times = np.linspace(0, 1, n_times)
    return HeldToy("rig", [t for _ in cams for t in times], [c for c in cams for _ in times], size=(16, 16))


def _specs(sampler, n, seed=0):
    rng = np.random.default_rng(seed)
    return [sampler.sample_spec(rng) for _ in range(n)]


# --- continuous sources: statistics on drawn specs (no rendering)


def test_time_pairs_signs_ranges_and_rate_of_same_frame():
    cfg = PairConfig(mode="time", time_delta_abs=(0.1, 0.6), p_same=0.05)
    specs = _specs(PairSampler([OrbitToy()], cfg), 4000)
    same = [s for s in specs if s.kind == "same"]
    rest = [s for s in specs if s.kind != "same"]
    # d = 0 at rate p_same: 4000 draws give a standard error of 0.0034
    assert abs(len(same) / len(specs) - 0.05) < 0.015
    assert all(s.time_delta == 0.0 and s.camera_ref is s.camera_tgt for s in same)
    assert {s.kind for s in rest} == {"time"}
    d = np.array([s.time_delta for s in rest])
    np.testing.assert_array_equal(d, [s.time_tgt - s.time_ref for s in rest])
    assert np.all((np.abs(d) >= 0.1) & (np.abs(d) <= 0.6))
    times = np.array([(s.time_ref, s.time_tgt) for s in rest])
    assert times.min() >= 0.0 and times.max() <= 1.0
    # both signs about equally often, and |d| uniform over its range
    assert abs(np.mean(d > 0) - 0.5) < 0.04
    assert abs(np.mean(np.abs(d)) - 0.35) < 0.02
    assert np.mean(np.abs(d) > 0.5) > 0.15  # large displacements are not starved
    # a time pair keeps the camera
    assert all(s.camera_ref.same_pose(s.camera_tgt) and not s.has_view_change and s.has_time_change for s in rest)
    assert all(np.allclose(s.relative_pose, np.eye(4)) and np.allclose(s.spherical_delta, 0) for s in rest)


def test_view_pairs_match_relative_pose_and_spherical_delta_and_stay_in_the_orbit():
    cfg = PairConfig(mode="view", p_same=0.0, azimuth_delta_deg=(-90, 90), elevation_delta_deg=(-15, 15), radius_delta=(-0.3, 0.3))
    specs = _specs(PairSampler([OrbitToy()], cfg), 2000)
    assert {s.kind for s in specs} == {"view"}
    deltas = np.array([s.spherical_delta for s in specs])
    for s, dl in zip(specs[:50], deltas):
        np.testing.assert_allclose(s.relative_pose, np.linalg.inv(s.camera_ref.c2w) @ s.camera_tgt.c2w, atol=1e-12)
        np.testing.assert_allclose(dl, spherical_delta(s.camera_ref.c2w, s.camera_tgt.c2w), atol=1e-12)
        # the relative pose carries the target camera: P_ref @ dP = P_tgt
        np.testing.assert_allclose(s.camera_ref.c2w @ s.relative_pose, s.camera_tgt.c2w, atol=1e-9)
    assert all(s.time_ref == s.time_tgt and s.time_delta == 0.0 for s in specs)
    eps = 1e-6
    assert np.all(np.abs(deltas[:, 0]) <= 90 + eps) and np.all(np.abs(deltas[:, 1]) <= 15 + eps) and np.all(np.abs(deltas[:, 2]) <= 0.3 + eps)
    for col in range(3):  # every component changes in both directions, symmetrically
        assert abs(np.mean(deltas[:, col] > 0) - 0.5) < 0.05
    # the configured ranges are covered, not clamped towards zero
    assert np.mean(np.abs(deltas[:, 1]) > 10) > 0.25 and np.mean(np.abs(deltas[:, 0]) > 60) > 0.25
    for s in specs:
        for cam in (s.camera_ref, s.camera_tgt):
            _, el, r = spherical_coordinates(cam.c2w)
            assert 10 - eps <= el <= 40 + eps and 3.0 - eps <= r <= 3.4 + eps
            assert (cam.width, cam.height) == (64, 64)


def test_view_change_is_limited_to_a_narrow_orbit():
    narrow = OrbitRange(azimuth_deg=(-30.0, 30.0), elevation_deg=(10.0, 20.0), radius=(3.0, 3.1))
    specs = _specs(PairSampler([OrbitToy(narrow)], PairConfig(mode="view", p_same=0.0)), 500)
    eps = 1e-6
    for s in specs:
        for cam in (s.camera_ref, s.camera_tgt):
            az, el, r = spherical_coordinates(cam.c2w)
            assert -30 - eps <= az <= 30 + eps and 10 - eps <= el <= 20 + eps and 3.0 - eps <= r <= 3.1 + eps
    deltas = np.array([s.spherical_delta for s in specs])
    assert np.abs(deltas[:, 0]).max() <= 60 + eps and np.abs(deltas[:, 1]).max() <= 10 + eps
    assert np.abs(deltas[:, 0]).max() > 40  # the change still reaches across the orbit


def test_joint_pairs_change_both():
    cfg = PairConfig(mode="joint", time_delta_abs=(0.2, 1.0), p_same=0.1)
    specs = _specs(PairSampler([OrbitToy()], cfg), 1000)
    joint = [s for s in specs if s.kind == "joint"]
    assert abs(len(joint) / len(specs) - 0.9) < 0.04
    assert all(s.has_time_change and s.has_view_change for s in joint)
    assert all(abs(s.time_delta) >= 0.2 and not s.camera_ref.same_pose(s.camera_tgt) for s in joint)
    assert abs(np.mean([s.time_delta > 0 for s in joint]) - 0.5) < 0.06


# --- rendered batches


def test_batch_shapes_dtypes_ranges_and_that_images_show_their_own_time():
    sampler = PairSampler([OrbitToy()], PairConfig(mode="joint", resolution=16, p_same=0.3), seed=3)
    b = sampler.batch(12)
    assert isinstance(b, PairBatch) and len(b) == 12
    assert b.target.shape == b.reference.shape == (12, 3, 16, 16) and b.target.dtype == torch.float32
    assert b.target_mask.shape == b.reference_mask.shape == (12, 1, 16, 16)
    assert b.relative_pose.shape == (12, 4, 4) and b.spherical_delta.shape == (12, 3)
    for name in ("time_delta", "time_ref", "time_tgt", "mask_known", "pose_known", "has_time_change", "has_view_change", "source_index"):
        assert getattr(b, name).shape == (12,), name
    assert b.mask_known.dtype == torch.bool and b.time_delta.dtype == torch.float32
    assert b.target.min() >= -1 and b.target.max() <= 1 and b.reference.min() >= -1
    assert b.mask_known.all() and b.pose_known.all()
    assert b.captions == ["a toy"] * 12 and set(b.kind) == {"joint", "same"}
    # channel 0 encodes the time: the target shows t_ref + d, the reference t_ref
    tgt_time = (b.target[:, 0].mean(dim=(1, 2)) + 1) / 2
    ref_time = (b.reference[:, 0].mean(dim=(1, 2)) + 1) / 2
    torch.testing.assert_close(tgt_time, b.time_ref + b.time_delta, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_time, b.time_ref, atol=1e-5, rtol=0)
    same = torch.tensor([k == "same" for k in b.kind])
    assert torch.equal(b.has_time_change, ~same) and torch.equal(b.has_view_change, ~same)
    assert torch.equal(b.target[same], b.reference[same])
    torch.testing.assert_close(b.relative_pose[same], torch.eye(4).expand(int(same.sum()), 4, 4))
    # the mask is the left half
    assert b.target_mask[:, :, :, :8].min() == 1 and b.target_mask[:, :, :, 8:].max() == 0


def test_same_seed_same_batches_and_batch_equals_collated_samples():
    cfg = PairConfig(mode="joint", resolution=16)
    sources = WorldScenes(range(20), resolution=16)
    a = PairSampler(sources, cfg, seed=7).batch(4)
    b = PairSampler(sources, cfg, seed=7).batch(4)
    c = PairSampler(sources, cfg, seed=8).batch(4)
    assert torch.equal(a.target, b.target) and torch.equal(a.reference, b.reference) and torch.equal(a.time_delta, b.time_delta)
    assert a.captions == b.captions and a.kind == b.kind
    assert not torch.equal(a.target, c.target)
    # a batch (one render_batch call per scene) equals pairs rendered one by one with the same draws
    sampler = PairSampler(sources, cfg, seed=0)
    batched = sampler.batch(4, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    single = collate_pairs([sampler.sample(rng) for _ in range(4)])
    torch.testing.assert_close(batched.target, single.target, atol=1e-6, rtol=0)
    torch.testing.assert_close(batched.reference, single.reference, atol=1e-6, rtol=0)
    assert torch.equal(batched.time_delta, single.time_delta)


def test_world_pairs_show_the_scene_at_the_drawn_camera_and_time():
    sources = WorldScenes(range(100, 110), resolution=32)
    sampler = PairSampler(sources, PairConfig(mode="time", resolution=32, p_same=0.2), seed=1)
    rng = np.random.default_rng(4)
    for _ in range(6):
        pair = sampler.sample(rng)
        s = pair.spec
        scene = make_scene(100 + s.source_index)
        assert pair.caption == scene.caption and pair.mask_known
        want = render_view(scene, s.camera_tgt, s.time_tgt)
        torch.testing.assert_close(pair.target, torch.from_numpy(want["rgb"]).permute(2, 0, 1) * 2 - 1, atol=1e-6, rtol=0)
        torch.testing.assert_close(pair.target_mask[0], torch.from_numpy(want["mask"]), atol=1e-6, rtol=0)
        want_ref = render_view(scene, s.camera_ref, s.time_ref)
        torch.testing.assert_close(pair.reference, torch.from_numpy(want_ref["rgb"]).permute(2, 0, 1) * 2 - 1, atol=1e-6, rtol=0)


def test_lazy_sources_are_built_only_when_drawn():
    built = []

    class Lazy:
        def __len__(self):
            return 100_000

        def __getitem__(self, i):
            built.append(i)
            return WorldSource(make_scene(i), resolution=16)

    sampler = PairSampler(Lazy(), PairConfig(mode="view", resolution=16), seed=0)
    assert built == [0]
    specs = _specs(sampler, 5)
    assert len(built) == 6 and len({s.source_index for s in specs}) == 5


# --- discrete sources


def _images_value(images):
    """The flat value of each HeldToy image, back in [0, 1]: (B,)."""
    return ((images + 1) / 2).mean(dim=(1, 2, 3))


def test_video_like_source_gives_time_pairs_only():
    video = video_like()
    sampler = PairSampler([video], PairConfig(mode="time", resolution=16, p_same=0.1), seed=0)
    b = sampler.batch(8)
    assert b.target.shape == (8, 3, 16, 16)  # 40x24 frames centre-cropped to a square and resized
    assert set(b.kind) <= {"time", "same"} and not b.pose_known.any() and not b.mask_known.any()
    assert torch.equal(b.relative_pose, torch.eye(4).expand(8, 4, 4)) and not b.spherical_delta.any()
    assert torch.equal(b.target_mask, torch.ones(8, 1, 16, 16))
    assert b.captions == ["a toy video"] * 8
    # frame k shows k / 11 and sits at time k / 11: the images carry the pair's own frames
    torch.testing.assert_close(_images_value(b.target), b.time_tgt, atol=1e-5, rtol=0)
    torch.testing.assert_close(_images_value(b.reference), b.time_ref, atol=1e-5, rtol=0)
    for mode in ("view", "joint"):
        with pytest.raises(ValueError, match=f"source 0 \\(video.*{mode} pairs"):
            PairSampler([video], PairConfig(mode=mode))


def test_dnerf_like_source_gives_joint_pairs_only():
    src = dnerf_like()
    sampler = PairSampler([src], PairConfig(mode="joint", resolution=16, p_same=0.0), seed=2)
    b = sampler.batch(6)
    assert set(b.kind) == {"joint"} and b.pose_known.all() and b.mask_known.all()
    assert b.has_time_change.all() and b.has_view_change.all() and (b.time_delta != 0).all()
    torch.testing.assert_close(b.target_mask, torch.full((6, 1, 16, 16), 0.5))
    infos = src.infos()
    rng = np.random.default_rng(0)
    for _ in range(10):
        s = sampler.sample_spec(rng)
        ref, tgt = infos[s.frame_ref].camera.c2w, infos[s.frame_tgt].camera.c2w
        np.testing.assert_allclose(s.relative_pose, np.linalg.inv(ref) @ tgt, atol=1e-12)
        np.testing.assert_allclose(s.spherical_delta, spherical_delta(ref, tgt), atol=1e-12)
    for mode in ("time", "view"):
        with pytest.raises(ValueError, match=f"{mode} pairs"):
            PairSampler([src], PairConfig(mode=mode))


def test_nerfstudio_like_source_gives_view_pairs_only():
    src = nerfstudio_like()
    b = PairSampler([src], PairConfig(mode="view", resolution=16, p_same=0.0), seed=0).batch(5)
    assert set(b.kind) == {"view"} and (b.time_delta == 0).all() and b.pose_known.all()
    assert (b.spherical_delta[:, 0].abs() > 1).all() and b.captions == [""] * 5
    with pytest.raises(ValueError, match="static capture"):
        PairSampler([src], PairConfig(mode="time"))
    with pytest.raises(ValueError, match="joint pairs"):
        PairSampler([src], PairConfig(mode="joint"))


def test_discrete_pairs_are_uniform_over_ordered_pairs_and_respect_the_time_range():
    # one camera holds 5 frames, another 2: 20 + 2 ordered time pairs, each drawn alike
    cams = [orbit_camera(0.0, 20.0, 3.5, 40.0, 16, 16), orbit_camera(90.0, 20.0, 3.5, 40.0, 16, 16)]
    uneven = HeldToy("uneven", [0, 0.25, 0.5, 0.75, 1, 0, 1], [cams[0]] * 5 + [cams[1]] * 2)
    specs = _specs(PairSampler([uneven], PairConfig(mode="time", p_same=0.0)), 4400)
    counts = {}
    for s in specs:
        assert s.camera_ref.same_pose(s.camera_tgt) and s.frame_ref != s.frame_tgt
        counts[(s.frame_ref, s.frame_tgt)] = counts.get((s.frame_ref, s.frame_tgt), 0) + 1
    assert len(counts) == 22
    observed = np.array(list(counts.values()))
    chi2 = np.sum((observed - 200) ** 2 / 200)  # 21 degrees of freedom: mean 21, sd 6.5
    assert chi2 < 55, counts
    assert abs(np.mean([s.time_delta > 0 for s in specs]) - 0.5) < 0.03
    rig = multiview_video(n_cams=3, n_times=5)  # times 0, .25, .5, .75, 1
    # |d| in [0.3, 0.6] leaves only the frames half the clip apart
    ranged = _specs(PairSampler([rig], PairConfig(mode="time", time_delta_abs=(0.3, 0.6), p_same=0.0)), 300)
    assert {abs(s.time_delta) for s in ranged} == {0.5}
    # the same rig also gives view pairs (same time, other camera) and joint pairs
    view = _specs(PairSampler([rig], PairConfig(mode="view", p_same=0.0)), 300)
    assert all(s.time_delta == 0 and not s.camera_ref.same_pose(s.camera_tgt) for s in view)
    joint = _specs(PairSampler([rig], PairConfig(mode="joint", p_same=0.0)), 300)
    assert all(s.time_delta != 0 and not s.camera_ref.same_pose(s.camera_tgt) for s in joint)
    with pytest.raises(ValueError, match="time_delta_abs"):
        PairSampler([rig], PairConfig(mode="time", time_delta_abs=(0.8, 0.9)))


def test_same_frame_rate_and_decoding_on_discrete_sources():
    video = video_like()
    specs = _specs(PairSampler([video], PairConfig(mode="time", p_same=0.25)), 2000)
    same = [s for s in specs if s.kind == "same"]
    assert abs(len(same) / 2000 - 0.25) < 0.03
    assert all(s.frame_ref == s.frame_tgt and s.time_delta == 0 for s in same)
    # a batch decodes each needed frame once
    video.decoded.clear()
    b = PairSampler([video], PairConfig(mode="time", resolution=8, p_same=1.0), seed=0).batch(4)
    assert len(video.decoded) == len(set(video.decoded)) and torch.equal(b.target, b.reference)


def test_mixed_sources_draw_from_each_and_a_bad_one_is_named():
    sources = [dnerf_like(), OrbitToy()]
    specs = _specs(PairSampler(sources, PairConfig(mode="joint")), 600)
    counts = np.bincount([s.source_index for s in specs], minlength=2)
    assert abs(counts[0] / 600 - 0.5) < 0.07
    b = PairSampler(sources, PairConfig(mode="joint", resolution=16), seed=0).batch(8)
    assert b.target.shape == (8, 3, 16, 16) and set(b.captions) <= {"", "a toy"}
    with pytest.raises(ValueError, match="source 2 \\(video.*joint pairs"):
        PairSampler(sources + [video_like()], PairConfig(mode="joint"))


# --- loaders


def test_pair_stream_is_reproducible_with_workers():
    sampler = PairSampler([OrbitToy(), multiview_video()], PairConfig(mode="time", resolution=8), seed=5)
    stream = PairStream(sampler, batch_size=3, num_batches=4)

    def run(workers):
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
        return [b.time_delta for b in loader]

    one, again = run(0), run(0)
    assert len(one) == 4 and all(torch.equal(x, y) for x, y in zip(one, again))
    two, two_again = run(2), run(2)
    assert len(two) == 4 and all(torch.equal(x, y) for x, y in zip(two, two_again))
    assert not torch.equal(two[0], two[1])  # the workers draw different pairs
    stream.set_epoch(1)
    assert not torch.equal(run(0)[0], one[0])


# --- errors


def test_bad_configs_and_sources_are_named():
    with pytest.raises(ValueError, match="mode"):
        PairConfig(mode="both")
    with pytest.raises(ValueError, match="time_delta_abs"):
        PairConfig(time_delta_abs=(0.5, 0.2))
    with pytest.raises(ValueError, match="time_delta_abs"):
        PairConfig(mode="time", time_delta_abs=(0.0, 0.0))
    with pytest.raises(ValueError, match="p_same"):
        PairConfig(p_same=1.5)
    with pytest.raises(ValueError, match="azimuth_delta_deg"):
        PairConfig(azimuth_delta_deg=(-270.0, 90.0))
    with pytest.raises(ValueError, match="view change"):
        PairConfig(mode="view", azimuth_delta_deg=(0.0, 0.0), elevation_delta_deg=(0.0, 0.0), radius_delta=(0.0, 0.0))
    with pytest.raises(ValueError, match="at least one source"):
        PairSampler([], PairConfig())

    class NoOrbit(OrbitToy):
        def __init__(self):
            super().__init__()
            self.orbit = None

    with pytest.raises(ValueError, match="orbit"):
        PairSampler([NoOrbit()], PairConfig())
    mixed = HeldToy("mixed", [0.0, 1.0], [None, orbit_camera(0, 20, 3, 40, 8, 8)])
    with pytest.raises(ValueError, match="mixes frames"):
        PairSampler([mixed], PairConfig())

    class BadFrames(HeldToy):
        def frame(self, index):
            f = super().frame(index)
            return Frame(rgb=f.rgb[..., :2], time01=f.time01, camera=f.camera)

    bad = BadFrames("badclip", np.linspace(0, 1, 4), [None] * 4)
    with pytest.raises(ValueError, match="source 0 \\(badclip.*rgb must have shape"):
        PairSampler([bad], PairConfig(mode="time")).batch(1)


# --- the project's own readers, on data written from the world


def test_pairs_from_real_readers(tmp_path):
    from PIL import Image

    from fourdistill.sources import open_source
    from fourdistill.world import export_dnerf, export_video

    scene = make_scene(21)
    dnerf = open_source(export_dnerf(scene, tmp_path / "dnerf", resolution=32, n_train=8, n_val=0, n_test=0))
    video = open_source(export_video(scene, tmp_path / "clip.gif", n_frames=8, resolution=32))
    # a nerfstudio capture: one time, four posed views
    capture = tmp_path / "capture"
    capture.mkdir()
    frames = []
    for k in range(4):
        cam = orbit_camera(90.0 * k, 25.0, 3.2, 40.0, 32, 32)
        rgb = render_view(scene, cam, 0.5)["rgb"]
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(capture / f"v{k}.png")
        frames.append({"file_path": f"v{k}.png", "transform_matrix": cam.c2w.tolist()})
    meta = {"fl_x": cam.fx, "fl_y": cam.fy, "cx": 16.0, "cy": 16.0, "w": 32, "h": 32, "frames": frames}
    (capture / "transforms.json").write_text(__import__("json").dumps(meta))
    nerfstudio = open_source(capture)

    cfg = dict(resolution=16, p_same=0.0)
    b = PairSampler([dnerf], PairConfig(mode="joint", **cfg), seed=0).batch(4)
    assert set(b.kind) == {"joint"} and b.pose_known.all() and b.mask_known.all() and (b.time_delta != 0).all()
    infos = dnerf.infos()
    s = PairSampler([dnerf], PairConfig(mode="joint", **cfg)).sample_spec(np.random.default_rng(1))
    np.testing.assert_allclose(s.relative_pose, np.linalg.inv(infos[s.frame_ref].camera.c2w) @ infos[s.frame_tgt].camera.c2w, atol=1e-12)

    b = PairSampler([video], PairConfig(mode="time", **cfg), seed=0).batch(4)
    assert set(b.kind) == {"time"} and not b.pose_known.any() and b.target.shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="view pairs"):
        PairSampler([video], PairConfig(mode="view"))

    b = PairSampler([nerfstudio], PairConfig(mode="view", **cfg), seed=0).batch(4)
    assert set(b.kind) == {"view"} and (b.time_delta == 0).all()
    # four views 90 degrees apart: azimuth changes by a multiple of 90, elevation and radius stay
    d_az = b.spherical_delta[:, 0]
    torch.testing.assert_close(torch.remainder(d_az + 1e-3, 90.0), torch.full_like(d_az, 1e-3), atol=1e-3, rtol=0)
    assert b.spherical_delta[:, 1:].abs().max() < 1e-4
    with pytest.raises(ValueError, match="time pairs"):
        PairSampler([nerfstudio], PairConfig(mode="time"))
