"""Does time and view control work? Generated images against the world's exact ground truth.

On held-out world scenes only (EVAL_SEEDS), pairs are drawn as in training (docs/method.md, 1.1):
a reference render at (t_ref, camera_ref) and the true target at (t_ref + d, camera_tgt). Every
method gets the same pairs, the same noise, guidance and image prompt, and is scored against
the true target:

- `mappers`: the distilled mappers (time, view, or both, by the pair's kind);
- `copy`: the reference itself (what a model that ignores the control would score);
- `ip_adapter`: IP-Adapter with the plain caption (no control at all);
- `ip_adapter_phrase`: IP-Adapter with the change written in words ("a moment later",
  "seen from the left", ...), the text-only way to ask for it;
- `no_bypass`: the mappers with the textual bypass switched off at inference (alpha = 0);
- any further checkpoint given by name (e.g. mappers distilled without nested dropout).

Numbers: PSNR and SSIM, unmasked and masked to the target's objects, per pair; their means per
|d| bin (time and joint pairs) or per |d azimuth| bin (view pairs); monotonicity, the Spearman
correlation between the size of the asked change and how much the image moved away from the
reference; identity, whether the world's judge reads the same objects (shape and colour) in the
generated image as in the true target.

Read against asked: the world's reader (docs/reader.md) reads the change from (reference,
generated image) back from pixels, and the report sets it against the asked change: the absolute
error |wrap(read - asked)| of the relative azimuth (view and joint pairs) and |read |d| - |asked
d|| (time and joint pairs), median and mean, binned by the size of the asked change, and the
slope of read against asked (least squares through the origin: 1 is perfect control, 0 none, as
copying the reference scores). Time is scored as |d|: only a bounce or an orbit shows the sign of
d, so the signed slope is given apart, on the pairs whose scene has one. The same reads of the
true target renders (`true_target`) are the reader's own ceiling, to read a method's numbers beside.
"""

from __future__ import annotations

import time as _time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from ..generate import ViewChange
from ..io import atomic_path, image_grid, save_image, write_json
from ..pairs import PairConfig, PairSampler
from ..sources.world import WorldScenes
from ..world import DEFAULT_ORBIT, EVAL_SEEDS, make_scene, render_view
from .config import ControlEvalConfig
from .judge import load_judge
from .reader import DIRECTED_MOTIONS, load_reader, wrap_deg
from .learned import fvd, lpips_distance
from .metrics import as_image_tensor, masked_psnr, masked_ssim, psnr, spearman, ssim

TIME_BINS = (0.0, 0.25, 0.5, 0.75, 1.0)  # |d|
VIEW_BINS = (0.0, 30.0, 60.0, 90.0)  # |d azimuth| in degrees
PSNR_CAP_DB = 60.0  # identical images (e.g. an object hidden from both views) would give inf and poison the means


# ---------------------------------------------------------------------- words for the changes
def time_phrase(d: float) -> str:
    """The change in time, in words (the text-only baseline)."""
    if abs(d) < 1e-6:
        return ""
    return "a moment later" if d > 0 else "a moment earlier"


def view_phrase(d_azimuth: float, d_elevation: float) -> str:
    """The change of view, in words. A positive azimuth change moves the camera to its right
    (counter-clockwise seen from above, z up), so the object is then seen from the right."""
    parts = []
    if abs(d_azimuth) >= 5.0:
        parts.append("seen from the right" if d_azimuth > 0 else "seen from the left")
    if abs(d_elevation) >= 5.0:
        parts.append("seen from above" if d_elevation > 0 else "seen from below")
    return ", ".join(parts)


def phrased(caption: str, d: float, d_azimuth: float, d_elevation: float) -> str:
    words = [w for w in (time_phrase(d), view_phrase(d_azimuth, d_elevation)) if w]
    return caption if not words else f"{caption}, {', '.join(words)}"


# ---------------------------------------------------------------------- pairs
@dataclass
class EvalPairs:
    """Held-out pairs of one kind, images (N, H, W, 3) in [0, 1]."""

    kind: str
    reference: np.ndarray
    target: np.ndarray
    target_mask: np.ndarray  # (N, H, W) bool
    time_delta: np.ndarray
    spherical_delta: np.ndarray  # (N, 3)
    captions: list[str]
    seeds: list[int]


def moving_seeds(seeds) -> list[int]:
    """The seeds whose scene has at least one moving object: a time change of a scene where
    nothing moves changes no pixel, so it cannot test time control (and would score copying
    with an infinite PSNR)."""
    return [s for s in seeds if any(o.motion != "static" for o in make_scene(s).objects)]


def held_out_pairs(kind: str, n: int, scenes: int, resolution: int, seed: int = 0) -> EvalPairs:
    """n pairs of `kind` from the first `scenes` evaluation seeds (no same-frame pairs; time and
    joint pairs only from scenes where something moves)."""
    seeds = list(EVAL_SEEDS)[:scenes]
    if kind in ("time", "joint"):
        seeds = moving_seeds(seeds)
        if not seeds:
            raise ValueError(f"none of the first {scenes} evaluation scenes moves: no time pairs to score")
    sampler = PairSampler(WorldScenes(seeds, resolution=resolution, allow_eval=True), PairConfig(mode=kind, p_same=0.0, resolution=resolution), seed=seed)
    batch = sampler.batch(n, rng=np.random.default_rng([seed, 0xE7A1, ("time", "view", "joint").index(kind)]))
    return EvalPairs(
        kind=kind,
        reference=batch.images(batch.reference),
        target=batch.images(batch.target),
        target_mask=batch.target_mask[:, 0].numpy() > 0.5,
        time_delta=batch.time_delta.numpy().astype(np.float64),
        spherical_delta=batch.spherical_delta.numpy().astype(np.float64),
        captions=list(batch.captions),
        seeds=[seeds[int(i)] for i in batch.source_index],
    )


# ---------------------------------------------------------------------- scoring
def image_scores(generated: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image PSNR / SSIM, unmasked and masked to the target's objects."""
    g, t = as_image_tensor(generated), as_image_tensor(target)
    m = torch.from_numpy(mask.astype(np.float32))[:, None]
    cap = lambda x: np.minimum(x.numpy().astype(np.float64), PSNR_CAP_DB)  # noqa: E731
    return {
        "psnr": cap(psnr(g, t)),
        "ssim": ssim(g, t).numpy().astype(np.float64),
        "masked_psnr": cap(masked_psnr(g, t, m)),
        "masked_ssim": masked_ssim(g, t, m).numpy().astype(np.float64),
    }


def magnitude(pairs: EvalPairs) -> tuple[str, np.ndarray, tuple[float, ...]]:
    """What the bins are over: |d| for time and joint pairs, |d azimuth| for view pairs."""
    if pairs.kind == "view":
        return "|d azimuth| (deg)", np.abs(pairs.spherical_delta[:, 0]), VIEW_BINS
    return "|d|", np.abs(pairs.time_delta), TIME_BINS


def binned(values: np.ndarray, mags: np.ndarray, edges) -> list[dict]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (mags >= lo) & ((mags < hi) if hi < edges[-1] else (mags <= hi))
        rows.append({"lo": lo, "hi": hi, "n": int(sel.sum()), "mean": float(values[sel].mean()) if sel.any() else None})
    return rows


def judge_agreement(judge, generated: np.ndarray, target: np.ndarray) -> dict:
    """Does the judge read the same objects (shape and colour) in the generated image as in the truth?"""
    a = judge.labels(as_image_tensor(generated)).numpy()
    b = judge.labels(as_image_tensor(target)).numpy()
    return {"exact": float(np.mean(np.all(a == b, axis=1))), "per_shape": float(np.mean(a == b))}


def slope_through_origin(read: np.ndarray, asked: np.ndarray) -> float | None:
    """Least-squares slope b of read = b * asked (no intercept): sum(read * asked) / sum(asked^2).

    Through the origin because no change asked must read as no change: a method that copies the
    reference reads 0 everywhere and scores 0, one that follows the control exactly scores 1.
    None when every asked change is 0."""
    read, asked = np.asarray(read, np.float64), np.asarray(asked, np.float64)
    den = float(np.sum(asked * asked))
    return None if den == 0.0 else float(np.sum(read * asked) / den)


def binned_errors(errors: np.ndarray, mags: np.ndarray, edges) -> list[dict]:
    """Median and mean of `errors` per bin of `mags` (the bins of `binned`)."""
    rows = []
    for row in binned(errors, mags, edges):
        lo, hi = row["lo"], row["hi"]
        sel = (mags >= lo) & ((mags < hi) if hi < edges[-1] else (mags <= hi))
        rows.append({**row, "median": float(np.median(errors[sel])) if sel.any() else None})
    return rows


def directed_seeds(seeds) -> np.ndarray:
    """(N,) bool: whether the scene of each pair has a bounce or an orbit, the motions whose
    frames show which way time runs (docs/reader.md)."""
    return np.array([any(o.motion in DIRECTED_MOTIONS for o in make_scene(s).objects) for s in seeds], bool)


def _read_quantity(read: np.ndarray, asked: np.ndarray, mags: np.ndarray, edges, wrap: bool) -> dict:
    err = np.abs(wrap_deg(read - asked)) if wrap else np.abs(read - asked)
    return {
        "slope": slope_through_origin(read, asked),
        "median_error": float(np.median(err)),
        "mean_error": float(np.mean(err)),
        "binned": binned_errors(err, mags, edges),
        "asked": [float(v) for v in asked],
        "read": [float(v) for v in read],
    }


def read_against_asked(reader, pairs: EvalPairs, images: np.ndarray) -> dict:
    """The reader's reads of (reference, images) against the asked change of `pairs`:

    "azimuth" (view, joint): relative azimuth in degrees, error |wrap(read - asked)|, bins over
    |asked| (VIEW_BINS); "abs_time" (time, joint): read |d| against asked |d|, error
    |read - asked|, bins over |asked d| (TIME_BINS); "signed_time" (time, joint): the slope of the
    signed read d against d on the pairs whose scene has a bounce or an orbit (n of them, slope
    None when there are none). Each with its slope through the origin, median and mean error and
    the per-pair values (for the plot)."""
    reads = reader.read_pair(as_image_tensor(pairs.reference), as_image_tensor(images))
    out = {}
    if pairs.kind != "time":
        asked = pairs.spherical_delta[:, 0]
        out["azimuth"] = _read_quantity(reads["relative_azimuth_deg"].numpy().astype(np.float64), asked, np.abs(asked), VIEW_BINS, wrap=True)
    if pairs.kind != "view":
        asked = np.abs(pairs.time_delta)
        out["abs_time"] = _read_quantity(reads["abs_time_delta"].numpy().astype(np.float64), asked, asked, TIME_BINS, wrap=False)
        sel = directed_seeds(pairs.seeds)
        signed = reads["time_delta"].numpy().astype(np.float64)
        out["signed_time"] = {"n": int(sel.sum()), "slope": slope_through_origin(signed[sel], pairs.time_delta[sel]) if sel.any() else None}
    return out


# ---------------------------------------------------------------------- generation per method
def _views(pairs: EvalPairs):
    return [ViewChange(*map(float, s)) for s in pairs.spherical_delta]


def generate_method(cp, method: str, pairs: EvalPairs, cfg: ControlEvalConfig) -> np.ndarray:
    """Images of one method for all pairs, in batches, with the same noise for every method."""
    if method == "copy":
        return pairs.reference.copy()
    out = []
    views = _views(pairs)
    for i in range(0, len(pairs.captions), cfg.batch):
        sl = slice(i, i + cfg.batch)
        common = dict(num_inference_steps=cfg.steps, guidance_scale=cfg.guidance, seed=cfg.seed + i, ip_adapter_scale=cfg.ip_adapter_scale)
        refs = pairs.reference[sl]
        if method in ("ip_adapter", "ip_adapter_phrase"):
            captions = pairs.captions[sl]
            if method == "ip_adapter_phrase":
                captions = [
                    phrased(c, d if pairs.kind != "view" else 0.0, s[0] if pairs.kind != "time" else 0.0, s[1] if pairs.kind != "time" else 0.0)
                    for c, d, s in zip(captions, pairs.time_delta[sl], pairs.spherical_delta[sl])
                ]
            out.append(cp.plain(captions, refs, **common))
            continue
        time = list(pairs.time_delta[sl]) if pairs.kind != "view" and cp.has_time else None
        view = views[sl] if pairs.kind != "time" and cp.has_view else None
        out.append(cp(pairs.captions[sl], refs, time=time, view=view, textual_bypass=method != "no_bypass", **common))
    return np.concatenate(out)


def time_videos(cp, method: str, n_videos: int, frames: int, cfg: ControlEvalConfig, scenes: int) -> tuple[np.ndarray, np.ndarray]:
    """(true, generated) videos (N, T, H, W, 3): from a reference at t = 0, frames at t = d for
    d in linspace(0, 1, T), one held-out scene and camera per video."""
    side = cp.size[0]
    rng = np.random.default_rng([cfg.seed, 0xF7D])
    deltas = np.linspace(0.0, 1.0, frames)
    true, fake = [], []
    for k in range(n_videos):
        scene = make_scene(list(EVAL_SEEDS)[k % scenes])
        cam = DEFAULT_ORBIT.sample(rng, side, side)
        video = np.stack([render_view(scene, cam, float(t))["rgb"] for t in deltas]).astype(np.float32)
        true.append(video)
        if method == "copy":
            fake.append(np.repeat(video[:1], frames, axis=0))
            continue
        common = dict(num_inference_steps=cfg.steps, guidance_scale=cfg.guidance, seed=cfg.seed + k, ip_adapter_scale=cfg.ip_adapter_scale)
        if method == "ip_adapter":
            fake.append(cp.plain([scene.caption] * frames, video[0], **common))
        else:
            fake.append(cp([scene.caption] * frames, video[0], time=list(deltas), **common))
    return np.stack(true), np.stack(fake)


def evaluate_control(
    cp, cfg: ControlEvalConfig, judge=None, extra_pipelines: dict | None = None, progress: bool = True, samples_dir=None, learned: dict | None = None,
    reader=None,
) -> dict:
    """Every number of the report (a JSON-ready dict).

    reader: the world's reader that reads the change back from (reference, image) (default: the
    shipped reader, loaded once here); per method under "read", and on the true targets under
    each kind's "true_target_read" (see `read_against_asked`).

    learned: optional metrics with weights, {"lpips": LPIPS, "clip": ClipScorer, "fvd": detector,
    "fvd_videos": N, "fvd_frames": T}: LPIPS against the truth and CLIP score against the caption
    for every method, and FVD of time-sweep videos for the mappers, copying and IP-Adapter alone.
    """
    judge = judge or load_judge()
    reader = reader or load_reader()
    extra_pipelines = extra_pipelines or {}
    kinds = [k for k in cfg.kinds if (k != "time" or cp.has_time) and (k != "view" or cp.has_view) and (k != "joint" or (cp.has_time and cp.has_view))]
    if not kinds:
        raise ValueError("the mappers support none of the asked kinds of control")
    methods = list(cfg.methods) + list(extra_pipelines)
    report = {"config": {**asdict(cfg), "kinds": kinds}, "kinds": {}}
    side = cp.size[0]
    bar = tqdm(total=len(kinds) * len(methods), desc="evaluate", disable=not progress)
    for kind in kinds:
        pairs = held_out_pairs(kind, cfg.pairs, cfg.scenes, side, seed=cfg.seed)
        label, mags, edges = magnitude(pairs)
        entry = {"pairs": len(pairs.captions), "magnitude": label, "bins": list(edges), "methods": {}, "true_target_read": read_against_asked(reader, pairs, pairs.target)}
        for method in methods:
            start = _time.perf_counter()
            pipe = extra_pipelines.get(method, cp)
            images = generate_method(pipe, "mappers" if method in extra_pipelines else method, pairs, cfg)
            scores = image_scores(images, pairs.target, pairs.target_mask)
            change = np.mean(np.abs(images - pairs.reference), axis=(1, 2, 3))
            entry["methods"][method] = {
                **{k: float(v.mean()) for k, v in scores.items()},
                "binned": {k: binned(v, mags, edges) for k, v in scores.items()},
                "monotonicity_spearman": spearman(mags, change) if method != "copy" else None,
                "identity": judge_agreement(judge, images, pairs.target),
                "read": read_against_asked(reader, pairs, images),
                "seconds": _time.perf_counter() - start,
            }
            if learned and learned.get("lpips") is not None:
                entry["methods"][method]["lpips"] = float(lpips_distance(learned["lpips"], images, pairs.target).mean())
            if learned and learned.get("clip") is not None:
                entry["methods"][method]["clip_score"] = float(learned["clip"](images, pairs.captions).mean())
            if samples_dir is not None:
                _save_samples(Path(samples_dir) / f"{kind}_{method}.png", pairs, images)
            bar.update(1)
        report["kinds"][kind] = entry
    bar.close()
    if learned and learned.get("fvd") is not None and cp.has_time:
        n_videos, frames = int(learned.get("fvd_videos", 16)), int(learned.get("fvd_frames", 16))
        report["fvd"] = {"videos": n_videos, "frames": frames, "methods": {}}
        for method in ("mappers", "copy", "ip_adapter"):
            true, fake = time_videos(cp, method, n_videos, frames, cfg, cfg.scenes)
            report["fvd"]["methods"][method] = fvd(true, fake, learned["fvd"])
    return report


def _save_samples(path: Path, pairs: EvalPairs, images: np.ndarray, n: int = 8) -> None:
    """Rows: references, generated, truth (the first n pairs)."""
    k = min(n, len(images))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, image_grid(np.concatenate([pairs.reference[:k], images[:k], pairs.target[:k]]), rows=3))


# ---------------------------------------------------------------------- report
def markdown_report(report: dict, command: str | None = None) -> str:
    lines = ["# Time and view control against ground truth", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    cfg = report["config"]
    lines += [
        f"Held-out world scenes (the first {cfg['scenes']} EVAL_SEEDS), {cfg['pairs']} pairs per kind, "
        f"{cfg['steps']} denoising steps, guidance {cfg['guidance']}, the same noise for every method.",
        "",
    ]
    for kind, entry in report["kinds"].items():
        lines += [f"## {kind} control", "", "| method | PSNR | SSIM | masked PSNR | masked SSIM | monotonicity (Spearman) | identity (judge, exact) |", "|---|---|---|---|---|---|---|"]
        for method, m in entry["methods"].items():
            mono = "" if m["monotonicity_spearman"] is None else f"{m['monotonicity_spearman']:.3f}"
            lines.append(
                f"| {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['masked_psnr']:.2f} | {m['masked_ssim']:.4f} | {mono} | {m['identity']['exact']:.3f} |"
            )
        edges = entry["bins"]
        heads = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]
        lines += ["", f"PSNR by {entry['magnitude']}:", "", "| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
        for method, m in entry["methods"].items():
            cells = [("" if b["mean"] is None else f"{b['mean']:.2f}") + f" (n={b['n']})" for b in m["binned"]["psnr"]]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += _read_tables(entry)
        learned = [k for k in ("lpips", "clip_score") if all(k in m for m in entry["methods"].values())]
        if learned:
            lines += ["", "| method | " + " | ".join(learned) + " |", "|---|" + "---|" * len(learned)]
            for method, m in entry["methods"].items():
                lines.append(f"| {method} | " + " | ".join(f"{m[k]:.4f}" for k in learned) + " |")
        lines.append("")
    if "fvd" in report:
        f = report["fvd"]
        lines += [f"## FVD of time sweeps ({f['videos']} videos x {f['frames']} frames, I3D)", "", "| method | FVD |", "|---|---|"]
        lines += [f"| {m} | {v:.2f} |" for m, v in f["methods"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


READ_QUANTITIES = (("azimuth", "relative azimuth (deg)"), ("abs_time", "|d|"))


def _f(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _read_tables(entry: dict) -> list[str]:
    """The reader's reads against the asked change, a table per quantity, the true target last."""
    rows = {m: v["read"] for m, v in entry["methods"].items() if "read" in v}
    if "true_target_read" in entry:
        rows["true target"] = entry["true_target_read"]
    lines = []
    for key, name in READ_QUANTITIES:
        have = {m: r[key] for m, r in rows.items() if key in r}
        if not have:
            continue
        first = next(iter(have.values()))
        heads = [f"{b['lo']:g}-{b['hi']:g}" for b in first["binned"]]
        signed = key == "abs_time"
        lines += [
            "",
            f"Read against asked, {name} (the reader on (reference, image); slope through the origin, 1 perfect, 0 none; "
            f"median / mean absolute error{', wrapped' if key == 'azimuth' else ''}, by the asked {'|d azimuth|' if key == 'azimuth' else '|d|'}):",
            "",
            "| method | slope | median error | mean error | " + " | ".join(heads) + (" | signed d slope (bounce/orbit scenes) |" if signed else " |"),
            "|---|---|---|---|" + "---|" * (len(heads) + signed),
        ]
        for method, q in have.items():
            cells = [f"{_f(b['median'], '.3g')} / {_f(b['mean'], '.3g')} (n={b['n']})" for b in q["binned"]]
            row = f"| {method} | {_f(q['slope'], '.3f')} | {q['median_error']:.3g} | {q['mean_error']:.3g} | " + " | ".join(cells) + " |"
            if signed:
                st = rows[method].get("signed_time", {})
                row += f" {_f(st.get('slope'), '.3f')} (n={st.get('n', 0)}) |"
            lines.append(row)
    if any("abs_time" in r for r in rows.values()):
        lines += ["", "Time is scored as |d|: only a bounce or an orbit shows the sign of d, so the signed slope is given on those scenes only."]
    return lines


def plot_read_vs_asked(report: dict, path) -> Path:
    """The reader's read change against the asked change, a panel per (kind, quantity), the
    points of each method and of the true targets, with the diagonal (perfect control)."""
    panels = [(kind, key, name) for kind, entry in report["kinds"].items() for key, name in READ_QUANTITIES if key in entry.get("true_target_read", {})]
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 3.8))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)
    for ax, (kind, key, name) in zip(axes[0], panels):
        entry = report["kinds"][kind]
        series = {**{m: v["read"][key] for m, v in entry["methods"].items() if key in v.get("read", {})}, "true target": entry["true_target_read"][key]}
        lo = min(min(q["asked"] + q["read"]) for q in series.values())
        hi = max(max(q["asked"] + q["read"]) for q in series.values())
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--")
        for method, q in series.items():
            slope = "" if q["slope"] is None else f" ({q['slope']:.2f})"
            ax.scatter(q["asked"], q["read"], s=12, marker="x" if method == "true target" else "o", label=method + slope)
        ax.set_title(f"{kind} control: {name}")
        ax.set_xlabel(f"asked {name}")
        ax.set_ylabel(f"read {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def plot_report(report: dict, path) -> Path:
    """PSNR against the size of the change, a panel per kind, a line per method."""
    kinds = list(report["kinds"])
    fig = Figure(figsize=(4.5 * len(kinds), 3.6))
    axes = fig.subplots(1, len(kinds), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        entry = report["kinds"][kind]
        edges = entry["bins"]
        centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:])]
        for method, m in entry["methods"].items():
            ys = [b["mean"] if b["mean"] is not None else np.nan for b in m["binned"]["psnr"]]
            ax.plot(centres, ys, marker="o", label=method)
        ax.set_title(f"{kind} control")
        ax.set_xlabel(entry["magnitude"])
        ax.set_ylabel("PSNR vs truth (dB)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def write_report(report: dict, folder, command: str | None = None) -> Path:
    """report.json, report.md, psnr_vs_change.png and read_vs_asked.png in `folder` (each written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", report)
    with atomic_path(folder / "report.md") as tmp:
        Path(tmp).write_text(markdown_report(report, command))
    plot_report(report, folder / "psnr_vs_change.png")
    if any("true_target_read" in e for e in report["kinds"].values()):
        plot_read_vs_asked(report, folder / "read_vs_asked.png")
    return folder
