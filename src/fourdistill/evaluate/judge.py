"""The world's judge: a small CNN that reads which shapes an image shows and in which colour.

For each shape of the world's shape list the judge predicts one of K + 1 classes: "absent" or
one of the world's K colours (label 0 is absent, label 1 + c is colour c). World scenes never
repeat a shape, so one colour per shape describes an image of them completely.
`Judge.attributes(image)` turns that into a set of (colour, shape) pairs.

Truth for a render comes from the world itself (`Readability`): an object is "present" in a
view when it covers at least 0.5% of the image and at least a quarter of it is unhidden by other
objects (pixels found from the render's depth and the objects' exact distance functions),
"absent" when no pixel shows it, and unscored in between (a sliver at the border or a tip
behind another object is not something to read or to blame). Truth for a generated image is
its scene's caption: every object of the scene.

Scores (`JudgeScore`): `exact`, the fraction of images whose every scored shape is read right,
is the headline accuracy; `per_shape`, `object_recall` and `object_precision` break it down.

The judge trains on renders of training seeds only (never `EVAL_SEEDS`) at random cameras and
times, and is scored on renders of held-out `EVAL_SEEDS` scenes at `DEFAULT_ORBIT` cameras.
`train_judge` runs on the training engine (fourdistill.engine): its run folder's checkpoint/
is a judge folder that also resumes exactly; configs/judge.yaml is the shipped judge's run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import OrbitRange
from ..world import COLORS, DEFAULT_ORBIT, EVAL_SEEDS, SHAPES, TRAIN_SEEDS, check_train_seeds, render_views
from .metrics import as_image_tensor
from .model_folder import CHECKPOINT_DIR, CONFIG_NAME, ModelFolder, training_info

SHIPPED_JUDGE = Path(__file__).resolve().parent.parent / "assets" / "judge"
WEIGHTS_NAME = "judge.safetensors"
FORMAT = "fourdistill-judge"
JUDGE_FOLDER = ModelFolder(WEIGHTS_NAME, FORMAT)
ABSENT = 0
UNSCORED = -1

# Training cameras: wider than DEFAULT_ORBIT (elevation 10..40, radius 3.0..3.4) on both sides,
# so the judge also reads views a little closer, farther, higher or lower than the default.
# Our choice, not from a paper.
TRAIN_ORBIT = OrbitRange(
    azimuth_deg=(-180.0, 180.0), elevation_deg=(5.0, 50.0), radius=(2.8, 4.4), fov_x_deg=DEFAULT_ORBIT.fov_x_deg
)


# ----------------------------------------------------------------------------- model
@dataclass(frozen=True)
class JudgeConfig:
    """What the judge reads and how big it is; saved next to its weights.

    shapes, colors: the world's lists (label 1 + c is colors[c]). image_size: the side the
    judge works at; other sizes are resized. stem_width: channels of the stride-2 stem conv.
    widths: channels of the stride-2 stages after it. head_width: channels of the last 3 x 3
    conv, at the final resolution image_size / 2^(1 + len(widths)) (64 -> 8 by default).
    """

    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    image_size: int = 64
    stem_width: int = 16
    widths: tuple[int, ...] = (32, 64)
    head_width: int = 96

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "colors", tuple(self.colors))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        for name, known, values in (("shapes", SHAPES, self.shapes), ("colors", tuple(COLORS), self.colors)):
            bad = [v for v in values if v not in known]
            if bad or not values or len(set(values)) != len(values):
                raise ValueError(f"JudgeConfig.{name}: unknown, repeated or empty {bad or list(values)}; the world has {list(known)}")
        if self.image_size < 16 or self.image_size % 2 ** (1 + len(self.widths)) or any(w < 1 for w in (self.stem_width, self.head_width, *self.widths)):
            raise ValueError(
                f"JudgeConfig: image_size must be >= 16 and divisible by 2^(1 + len(widths)), all widths positive; "
                f"got {self.image_size}, {self.stem_width}, {self.widths}, {self.head_width}"
            )

    @property
    def n_classes(self) -> int:
        return len(self.colors) + 1


def _conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU()]


class Judge(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> logits (B, S, K + 1): per shape, absent or a colour.

    A small CNN maps the image to an (h, w) grid of features (8 x 8 for 64 x 64 images). At
    every grid cell a 1 x 1 conv scores each shape and each colour; a (shape, colour) pair
    scores the sum of the two at a cell, and an image's score for the pair is its best cell.
    Shape and colour are thus bound where the object is, so two objects' attributes do not
    mix, and each colour is learnt from every shape that wears it. The absent class has logit 0.
    """

    def __init__(self, config: JudgeConfig | None = None):
        super().__init__()
        self.config = config or JudgeConfig()
        c = self.config
        layers = _conv(3, c.stem_width, stride=2)
        for c_in, c_out in zip((c.stem_width, *c.widths[:-1]), c.widths):
            layers += _conv(c_in, c_out, stride=2) + _conv(c_out, c_out)
        layers += _conv(c.widths[-1] if c.widths else c.stem_width, c.head_width)
        self.features = nn.Sequential(*layers)
        self.shape_scores = nn.Conv2d(c.head_width, len(c.shapes), 1)
        self.color_scores = nn.Conv2d(c.head_width, len(c.colors), 1)
        # Start from "mostly absent" (a prior of about 5% per colour, as RetinaNet's prior
        # initialisation) so early steps are not spent unlearning false objects.
        nn.init.constant_(self.shape_scores.bias, -3.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, s = len(images), len(self.config.shapes)
        f = self.features(images * 2.0 - 1.0)  # (B, C, h, w)
        cells = self.shape_scores(f)[:, :, None] + self.color_scores(f)[:, None]  # (B, S, K, h, w)
        pairs = cells.flatten(3).amax(dim=3)  # (B, S, K)
        return torch.cat([pairs.new_zeros(b, s, 1), pairs], dim=2)

    def prepare(self, images) -> torch.Tensor:
        """Any image input (see `as_image_tensor`) -> (B, 3, S, S) on the judge's device, S = image_size."""
        x = as_image_tensor(images).to(next(self.parameters()).device)
        if x.shape[1] != 3:
            raise ValueError(f"the judge reads RGB images, got {x.shape[1]} channels")
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x.clamp(0.0, 1.0)

    @torch.no_grad()
    def labels(self, images, batch_size: int = 256) -> torch.Tensor:
        """Predicted labels (B, S): 0 absent, 1 + c colour c. Images as in `prepare`."""
        was_training = self.training
        self.eval()
        x = self.prepare(images)
        out = torch.cat([self(x[i : i + batch_size]).argmax(dim=-1) for i in range(0, len(x), batch_size)])
        self.train(was_training)
        return out.cpu()

    def attributes(self, images) -> set[tuple[str, str]] | list[set[tuple[str, str]]]:
        """What the judge sees: a set of (colour, shape) for one image ((3, H, W) tensor or
        (H, W, 3) array), a list of such sets for a batch."""
        single = (isinstance(images, torch.Tensor) and images.ndim == 3) or (not isinstance(images, torch.Tensor) and np.ndim(images) == 3)
        sets = [labels_to_attributes(row, self.config) for row in self.labels(images)]
        return sets[0] if single else sets


def labels_to_attributes(labels, config: JudgeConfig) -> set[tuple[str, str]]:
    """(S,) labels -> {(colour, shape)} for the shapes labelled present."""
    return {(config.colors[int(v) - 1], s) for s, v in zip(config.shapes, labels) if int(v) > ABSENT}


# ----------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class Readability:
    """When an object in a render counts as readable (scored present).

    min_image_fraction: the share of the image's pixels it must cover (0.005: 20 pixels of a
    64 x 64 image). min_unhidden_share: the share of its own silhouette that must be unhidden
    by other objects (a cone tip peeking over a cube is not a cone to read). Our choices.
    """

    min_image_fraction: float = 0.005
    min_unhidden_share: float = 0.25


def scene_labels(scene, config: JudgeConfig | None = None) -> np.ndarray:
    """(S,) int64 labels of a scene's caption: every object present, whatever the camera."""
    config = config or JudgeConfig()
    out = np.full(len(config.shapes), ABSENT, dtype=np.int64)
    for obj in scene.objects:
        if obj.shape not in config.shapes or obj.color_name not in config.colors:
            raise ValueError(f"scene {scene.seed}: the judge does not know a {obj.color_name} {obj.shape}")
        out[config.shapes.index(obj.shape)] = 1 + config.colors.index(obj.color_name)
    return out


def object_pixels(scene, cameras, times, depth: np.ndarray, tolerance: float = 4e-3) -> np.ndarray:
    """Pixels showing each object in rendered views: (B, n_objects) int64.

    depth: (B, H, W) from the render. A pixel shows object k when the surface point at its depth
    lies within `tolerance` world units of object k's surface (nearest object wins); the sphere
    tracer stops within 1e-3 of a surface, ground and sky points lie farther from every object
    except along a contact line.
    """
    from ..world.render import sdf_local, to_local

    b = len(cameras)
    points, views = [], []
    for i, cam in enumerate(cameras):
        o, d = cam.rays()
        hit = np.isfinite(depth[i])
        points.append(o[hit] + depth[i][hit, None] * d[hit])
        views.append(np.full(int(hit.sum()), i))
    p = np.concatenate(points).astype(np.float32)
    v = np.concatenate(views)
    dist = np.empty((len(p), len(scene.objects)), dtype=np.float32)
    for k, obj in enumerate(scene.objects):
        centre, angle, scale = (x.astype(np.float32) for x in obj.state(np.asarray(times, dtype=np.float64)))
        dist[:, k] = sdf_local(obj.shape, to_local(p, centre[v], angle[v], scale[v])) * scale[v]
    counts = np.zeros((b, len(scene.objects)), dtype=np.int64)
    if len(p):
        owner = dist.argmin(axis=1)
        on_object = dist[np.arange(len(p)), owner] < tolerance
        np.add.at(counts, (v[on_object], owner[on_object]), 1)
    return counts


def silhouette_pixels(scene, cameras, times) -> np.ndarray:
    """Pixels each object would cover with nothing in front of it: (B, n_objects) int64.

    Each object is rendered alone (the ground never hides an object: objects stand on it and
    cameras look from above), so comparing with `object_pixels` gives the visible share.
    """
    from dataclasses import replace

    out = np.zeros((len(cameras), len(scene.objects)), dtype=np.int64)
    for k, obj in enumerate(scene.objects):
        alone = replace(scene, objects=(obj,))
        out[:, k] = object_pixels(alone, cameras, times, render_views(alone, cameras, times)["depth"])[:, 0]
    return out


def view_labels(scene, visible: np.ndarray, silhouette: np.ndarray, n_pixels: int, config: JudgeConfig, rule: Readability) -> np.ndarray:
    """Labels (B, S) of rendered views from per-object pixel counts (B, n_objects).

    visible: pixels showing each object (`object_pixels`); silhouette: pixels it would cover
    unoccluded (`silhouette_pixels`). An object is present (its colour) when `rule` finds it
    readable, absent when no pixel shows it, UNSCORED otherwise.
    """
    base = scene_labels(scene, config)
    out = np.repeat(base[None], len(visible), axis=0)
    for k, obj in enumerate(scene.objects):
        s = config.shapes.index(obj.shape)
        v = visible[:, k]
        readable = (v >= rule.min_image_fraction * n_pixels) & (v >= rule.min_unhidden_share * silhouette[:, k])
        out[:, s] = np.where(readable, base[s], np.where(v == 0, ABSENT, UNSCORED))
    return out


def labelled_renders(
    seeds,
    views_per_scene: int,
    rng: np.random.Generator,
    orbit: OrbitRange = DEFAULT_ORBIT,
    resolution: int = 64,
    config: JudgeConfig | None = None,
    rule: Readability = Readability(),
    allow_eval: bool = False,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render `views_per_scene` random (camera, time) views of each seed's scene.

    Cameras are drawn from `orbit`, times uniform in [0, 1]. Returns images (N, H, W, 3) uint8
    and labels (N, S) int64 (see `view_labels`). Evaluation seeds are refused unless
    `allow_eval`.
    """
    from ..world import make_scene

    seeds = [int(s) for s in seeds]
    if not allow_eval:
        check_train_seeds(seeds)
    config = config or JudgeConfig()
    images = np.empty((len(seeds) * views_per_scene, resolution, resolution, 3), dtype=np.uint8)
    labels = np.empty((len(seeds) * views_per_scene, len(config.shapes)), dtype=np.int64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc=progress, unit="scene", leave=False)
    for i, seed in enumerate(seeds):
        scene = make_scene(seed)
        cams = [orbit.sample(rng, resolution, resolution) for _ in range(views_per_scene)]
        times = rng.uniform(0.0, 1.0, views_per_scene)
        out = render_views(scene, cams, times)
        visible = object_pixels(scene, cams, times, out["depth"])
        silhouette = silhouette_pixels(scene, cams, times) if len(scene.objects) > 1 else visible
        rows = slice(i * views_per_scene, (i + 1) * views_per_scene)
        images[rows] = np.clip(out["rgb"] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        labels[rows] = view_labels(scene, visible, silhouette, resolution * resolution, config, rule)
        if bar:
            bar.update()
    if bar:
        bar.close()
    return images, labels


# ----------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class JudgeScore:
    """How well predicted labels match the truth.

    exact: images whose every scored shape is right (absent, or present in the right colour).
    per_shape: scored (image, shape) decisions that are right.
    object_recall: true objects (scored, present) read as present in the right colour.
    object_precision: shapes read as present (where scored) that are there in that colour.
    images: how many images; unscored: (image, shape) decisions left out (UNSCORED truth).
    """

    exact: float
    per_shape: float
    object_recall: float
    object_precision: float
    images: int
    unscored: int

    def summary(self) -> str:
        return (
            f"exact {self.exact:.4f}  per-shape {self.per_shape:.4f}  object recall {self.object_recall:.4f}  "
            f"object precision {self.object_precision:.4f}  ({self.images} images, {self.unscored} unscored decisions)"
        )


def score_labels(predicted, truth) -> JudgeScore:
    """Compare predicted labels (N, S) with true labels (N, S) (UNSCORED entries are skipped)."""
    pred = torch.as_tensor(np.asarray(predicted), dtype=torch.int64)
    true = torch.as_tensor(np.asarray(truth), dtype=torch.int64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"predicted and true labels must both be (N, S), got {tuple(pred.shape)} and {tuple(true.shape)}")
    if len(pred) == 0:
        raise ValueError("no images to score")
    scored = true != UNSCORED
    right = (pred == true) & scored
    present = scored & (true > ABSENT)
    called = scored & (pred > ABSENT)

    def ratio(a, b):
        return float(a) / float(b) if b else math.nan

    return JudgeScore(
        exact=ratio((right | ~scored).all(dim=1).sum(), len(pred)),
        per_shape=ratio(right.sum(), scored.sum()),
        object_recall=ratio((right & present).sum(), present.sum()),
        object_precision=ratio((right & called).sum(), called.sum()),
        images=len(pred),
        unscored=int((~scored).sum()),
    )


def attribute_accuracy(images, scenes, judge: Judge | None = None) -> JudgeScore:
    """Does each image show its scene's objects, shape and colour? One scene per image.

    images: (B, 3, H, W) tensor or (B, H, W, 3) array in [0, 1]. Truth: every object of the
    scene (the caption), so this is the score for images generated from captions.
    """
    judge = judge or load_judge()
    scenes = list(scenes)
    x = as_image_tensor(images)
    if len(x) != len(scenes):
        raise ValueError(f"attribute_accuracy needs one scene per image, got {len(x)} images and {len(scenes)} scenes")
    truth = np.stack([scene_labels(s, judge.config) for s in scenes])
    return score_labels(judge.labels(x), truth)


def heldout_score(judge: Judge, scenes: int = 200, views: int = 4, seed: int = 0, rule: Readability = Readability()) -> JudgeScore:
    """Score the judge on renders of the first `scenes` evaluation seeds, `views` random
    DEFAULT_ORBIT views each (cameras and times drawn with `seed`)."""
    images, labels = labelled_renders(
        EVAL_SEEDS[:scenes],
        views,
        np.random.default_rng([seed, 0xE7A1]),
        orbit=DEFAULT_ORBIT,
        resolution=judge.config.image_size,
        config=judge.config,
        rule=rule,
        allow_eval=True,
    )
    return score_labels(judge.labels(images), labels)


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class AugmentConfig:
    """Label-preserving perturbations so the judge also reads imperfect (generated) images.

    Shapes are mirror-symmetric, so a horizontal flip keeps the labels; colour changes stay
    small enough not to move one named colour into another. Our choices.
    """

    flip_p: float = 0.5
    shift_px: float = 4.0  # random translation, pixels at image_size
    scale: tuple[float, float] = (0.9, 1.1)  # random zoom
    brightness: tuple[float, float] = (0.85, 1.15)  # one gain for all channels
    channel_gain: float = 0.04  # +- per-channel gain
    blur_p: float = 0.3  # downsample-upsample to a random side in blur_side
    blur_side: tuple[int, int] = (24, 48)
    noise_std: float = 0.04  # Gaussian noise, std drawn uniform in [0, noise_std]


def random_blur(x: torch.Tensor, p: float, side: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Blur each image of a batch (B, 3, H, W) with probability p: down to a random square side
    in [side[0], side[1]] (antialiased) and back up, one side for the batch; a new tensor."""
    b, _, h, w = x.shape
    blur = torch.rand(b, generator=generator) < p
    x = x.clone()
    if blur.any():
        s = int(torch.randint(side[0], side[1] + 1, (1,), generator=generator))
        small = F.interpolate(x[blur], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        x[blur] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return x


def augment(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Perturb a batch (B, 3, H, W) in [0, 1]; seeded through `generator`."""
    b, _, h, w = x.shape

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    zoom = u(*config.scale, b)
    flip = torch.where(torch.rand(b, generator=generator) < config.flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = flip / zoom
    theta[:, 1, 1] = 1.0 / zoom
    theta[:, 0, 2] = u(-1, 1, b) * 2.0 * config.shift_px / w
    theta[:, 1, 2] = u(-1, 1, b) * 2.0 * config.shift_px / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = random_blur(x, config.blur_p, config.blur_side, generator)
    gain = u(*config.brightness, b, 1, 1, 1) * u(1 - config.channel_gain, 1 + config.channel_gain, b, 3, 1, 1)
    noise = torch.randn(x.shape, generator=generator) * u(0, config.noise_std, b, 1, 1, 1)
    return (x * gain + noise).clamp(0.0, 1.0)


@dataclass(frozen=True)
class JudgeTrainConfig:
    """A judge training run. Defaults train the shipped judge in a few minutes on two CPU cores.

    Training data: `train_scenes` scenes of training seeds drawn with `seed`, `views_per_scene`
    random TRAIN_ORBIT views each, rendered once. Held-out score: `eval_scenes` evaluation seeds
    x `eval_views` DEFAULT_ORBIT views. Schedule: linear warm-up over `warmup_steps`, then
    cosine decay to 0 at `steps`.
    """

    steps: int = 6000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    seed: int = 0
    train_scenes: int = 1500
    views_per_scene: int = 8
    eval_scenes: int = 200
    eval_views: int = 4
    readability: Readability = field(default_factory=Readability)
    checkpoint_every: int = 500
    orbit: OrbitRange = TRAIN_ORBIT
    model: JudgeConfig = field(default_factory=JudgeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "train_scenes", "views_per_scene", "eval_scenes", "eval_views", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"JudgeTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.train_scenes > len(TRAIN_SEEDS) or self.eval_scenes > len(EVAL_SEEDS):
            raise ValueError(f"JudgeTrainConfig: at most {len(TRAIN_SEEDS)} training and {len(EVAL_SEEDS)} evaluation scenes")


def judge_loss(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over scored (image, shape) decisions. images (B, 3, H, W), labels (B, S)."""
    logits = judge(images)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=UNSCORED)


def learning_rate(step: int, config: JudgeTrainConfig) -> float:
    """The learning rate at a step: linear warm-up over `warmup_steps`, cosine decay to 0 at `steps`."""
    from ..engine.schedules import warmup_cosine

    return warmup_cosine(config.warmup_steps, config.steps, config.lr)(step)


def training_seeds(config: JudgeTrainConfig) -> np.ndarray:
    """The training scenes' seeds: `train_scenes` distinct training seeds drawn with `config.seed`."""
    rng = np.random.default_rng([config.seed, 0x7D])
    seeds = TRAIN_SEEDS.start + rng.choice(len(TRAIN_SEEDS), size=config.train_scenes, replace=False)
    check_train_seeds(seeds)
    return seeds


# Settings a resumed run may change besides the engine's (how long, how often): the held-out
# scoring happens after training and does not touch the training stream.
RESUME_MAY_CHANGE = ("eval_scenes", "eval_views")


def train_judge(
    config: JudgeTrainConfig | None = None, out=None, progress: bool = True, command: str | None = None, resume: bool = False
) -> tuple[Judge, dict]:
    """Train a judge; returns (judge, report) with the report's "training" and "heldout" parts.

    With `out` (a run folder) the run is the engine's: OUT/config.json (the run's settings),
    OUT/log.jsonl ({step, wall_s, loss} per step) and TensorBoard, and OUT/checkpoint, a judge
    folder as `load_judge` reads it (judge.safetensors, config.json, README.md) that also holds
    the optimizer and the RNG states (optimizer.pt, train_state.pt), written atomically every
    `checkpoint_every` steps and at the end. `resume` continues the run in `out` exactly: the
    training renders are rebuilt from the seed, the batches and augmentations continue from
    the saved generator, so an interrupted and resumed run ends with the weights of an
    uninterrupted one. Without `resume` a folder that holds a run is refused; with it a changed
    setting is refused, named (`steps`, `checkpoint_every`, `eval_scenes`, `eval_views` may change).
    """
    from ..engine import config as engine_config
    from ..engine.checkpoint import capture_rng, has_checkpoint, load_checkpoint, read_meta, restore_rng
    from ..engine.loop import Loop, RunLog
    from ..engine.schedules import warmup_cosine

    config = config or JudgeTrainConfig()
    if resume and out is None:
        raise ValueError("train_judge: resume needs the run folder `out`")
    ckpt_dir = Path(out) / CHECKPOINT_DIR if out is not None else None
    state = None
    if out is not None:
        resuming = resume and has_checkpoint(ckpt_dir, CONFIG_NAME)
        saved = read_meta(ckpt_dir, CONFIG_NAME).get("training", {}).get("config") if resuming else None
        engine_config.start_run(out, config, resume, may_change=engine_config.MAY_CHANGE + RESUME_MAY_CHANGE, saved=saved, command=command)
        if resuming:
            state = load_checkpoint(ckpt_dir, weights_name=WEIGHTS_NAME, meta_name=CONFIG_NAME)

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # draws every batch and augmentation
    rng = np.random.default_rng([config.seed, 0xDA7A])
    images, labels = labelled_renders(
        training_seeds(config), config.views_per_scene, rng, config.orbit, config.model.image_size, config.model, config.readability,
        progress="render" if progress else None,
    )
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, H, W)
    labels = torch.from_numpy(labels)
    render_s = time.perf_counter() - started

    judge = Judge(config.model)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log = RunLog(out, main="log") if out is not None else None
    losses: list[float] = []
    start_step, wall_s = (state.step, state.wall_s) if state is not None else (0, 0.0)
    if state is not None:
        judge.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        restore_rng(state.rng, {"batches": generator})
    if log is not None:
        log.truncate(start_step)  # the log continues where the checkpoint does
        losses = [float(r["loss"]) for r in log.rows()]

    def save(done: int, heldout: dict | None = None, rng_state: dict | None = None) -> None:
        training = training_info(config, done, loop.wall_s, render_s, losses, command)
        JUDGE_FOLDER.save_checkpoint(ckpt_dir, judge, optimizer, rng_state or capture_rng({"batches": generator}), training, loop.wall_s, heldout, card=lambda info: model_card_text(judge, info))

    lr_at = warmup_cosine(config.warmup_steps, config.steps, config.lr)
    loop = Loop(
        config.steps, start_step=start_step, wall_s=wall_s, desc="train judge",
        progress=progress, log=log, save=save if out is not None else None, save_every=config.checkpoint_every,
    )
    judge.train()
    for step in loop:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(len(images), (config.batch_size,), generator=generator)
        x = augment(images[idx].float() / 255.0, config.augment, generator)
        loss = judge_loss(judge, x, labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        loop.log(step + 1, postfix={"loss": f"{np.mean(losses[-20:]):.4f}"}, loss=losses[-1])
    if log is not None:
        log.close()
    end_rng = capture_rng({"batches": generator})  # as the loop left it, for a resume with more steps

    scored = time.perf_counter()
    score = heldout_score(judge, config.eval_scenes, config.eval_views, seed=0, rule=config.readability)
    heldout = {
        "seeds": f"{EVAL_SEEDS.start}..{EVAL_SEEDS.start + config.eval_scenes - 1}",
        "views_per_scene": config.eval_views,
        "orbit": asdict(DEFAULT_ORBIT),
        "readability": asdict(config.readability),
        "scoring_s": round(time.perf_counter() - scored, 1),
        **asdict(score),
    }
    report = {"training": training_info(config, loop.step, loop.wall_s, render_s, losses, command), "heldout": heldout}
    if out is not None:
        save(loop.step, heldout, end_rng)
    return judge, report


# ----------------------------------------------------------------------------- files
def save_judge(judge: Judge, folder, info: dict | None = None) -> Path:
    """Write `judge.safetensors` and `config.json` (the JudgeConfig plus `info`) into `folder`.

    The folder's judge files are replaced atomically: the folder is rebuilt next to itself and
    swapped in, keeping a model card already there. (Training writes its judge folders as
    engine checkpoints instead, with the optimizer and RNG states; see `train_judge`.)
    """
    return JUDGE_FOLDER.save(judge, folder, info)


def load_judge(path=None, device: str | torch.device = "cpu") -> Judge:
    """Load a judge folder (`judge.safetensors` + `config.json`), or a training run's folder
    (its checkpoint/ is one); None loads the shipped judge. A damaged file is a CheckpointError
    naming it."""
    return JUDGE_FOLDER.load(path if path is not None else SHIPPED_JUDGE, Judge, JudgeConfig, "judge", device)


def model_card_text(judge: Judge, report: dict) -> str:
    """README.md of a judge folder: what it reads, how it was trained, how well it reads.

    report: {"training": ..., "heldout": ...} as `train_judge` returns it and config.json holds
    (the shipped judge's config.json, written before the engine, names its times wall_time_s
    and render_time_s; both spellings are read).
    """
    from ..engine.cards import card_text

    t = report["training"]
    h = report["heldout"]
    cfg = t["config"]
    wall_s = t.get("wall_s", t.get("wall_time_s"))
    render_s = t.get("render_s", t.get("render_time_s"))
    n_params = sum(p.numel() for p in judge.parameters())
    intro = f"""A small CNN ({n_params:,} parameters, {n_params * 4 / 1e6:.2f} MB of float32 weights) that reads a
{judge.config.image_size} x {judge.config.image_size} image of the procedural world and says, for
each shape ({", ".join(judge.config.shapes)}), whether it is in the image and in which colour
({", ".join(judge.config.colors)}). Load it with `fourdistill.evaluate.load_judge()`."""
    training = [
        f"steps: {t['step']}, batch {cfg['batch_size']}, AdamW lr {cfg['lr']} (warm-up {cfg['warmup_steps']}, cosine decay), "
        f"weight decay {cfg['weight_decay']}, seed {cfg['seed']}",
        f"""data: {cfg["train_scenes"]} scenes of training seeds (never the evaluation seeds
  {EVAL_SEEDS.start}..{EVAL_SEEDS.stop - 1}) x {cfg["views_per_scene"]} views at random cameras
  (elevation {cfg["orbit"]["elevation_deg"][0]:g}..{cfg["orbit"]["elevation_deg"][1]:g} deg,
  radius {cfg["orbit"]["radius"][0]:g}..{cfg["orbit"]["radius"][1]:g}, fov {cfg["orbit"]["fov_x_deg"]:g} deg) and random times,
  with flips, shifts, zoom, blur, brightness and noise""",
        f"rendering the training views: {render_s:.0f} s (the wall time below includes it and the held-out scoring)"
        if "wall_s" not in t
        else f"rendering the training views: {render_s:.0f} s before training"
        + (f", held-out scoring {h['scoring_s']:.0f} s after it" if "scoring_s" in h else "")
        + " (not in the wall time below)",
        f"final training loss: {t['final_loss']:.4f}",
    ]
    heldout = f"""Renders of evaluation seeds {h["seeds"]}, {h["views_per_scene"]} views each at DEFAULT_ORBIT cameras
(elevation {h["orbit"]["elevation_deg"][0]:g}..{h["orbit"]["elevation_deg"][1]:g} deg, radius
{h["orbit"]["radius"][0]:g}..{h["orbit"]["radius"][1]:g}) and random times: {h["images"]} images.

| score | value |
|---|---|
| exact match (every scored shape of the image right) | {h["exact"]:.4f} |
| per-shape decisions right | {h["per_shape"]:.4f} |
| object recall (true objects read in the right colour) | {h["object_recall"]:.4f} |
| object precision (objects read that are there in that colour) | {h["object_precision"]:.4f} |

Truth per view: an object is present when it covers at least
{h["readability"]["min_image_fraction"] * 100:g}% of the image's pixels and at least
{h["readability"]["min_unhidden_share"] * 100:g}% of it is unhidden by other objects, absent when no
pixel shows it, and not scored in between ({h["unscored"]} of
{h["images"] * len(judge.config.shapes)} decisions here).
Recompute with `fourdistill judge eval`."""
    return card_text(
        "The world's judge", intro, command=t["command"], default_command="train_judge(JudgeTrainConfig(...))", training=training,
        wall_s=wall_s, device="CPU", threads=t.get("threads"), sections={"Held-out accuracy": heldout},
    )


def write_model_card(folder, judge: Judge, report: dict) -> Path:
    """Write `model_card_text` to folder/README.md (atomically); returns the path."""
    from ..engine.cards import write_card

    return write_card(folder, model_card_text(judge, report))
