"""The training loop: steps, wall clock, progress bar, logs, periodic checkpoints, exact resume.

Randomness. `step_generators(seed, step, process)` gives the numpy and torch generators of
one step as a function of (seed, step, process) alone, so a resumed run draws what the
uninterrupted run drew whatever happened before the interruption. A trainer that instead
carries one generator through the run saves its state in the checkpoint (capture_rng).

Logging. `RunLog` writes JSONL streams under the run folder and mirrors them to TensorBoard
(OUT/tensorboard). One schema: every row is {"step": int, "wall_s": float, <scalars>}; the
main stream's scalars are TensorBoard tags as they are ("loss"), another stream's are
prefixed with its name ("validation/psnr"). On resume `truncate(step)` drops the rows past
the checkpoint's step, so the logs read as one uninterrupted run.

The loop. `Loop` is iterated for the step indices still to run:

    loop = Loop(cfg.steps, start_step=ckpt.step, wall_s=ckpt.wall_s, desc="distill", log=log,
                save=save, save_every=cfg.save_every)
    for step in loop:            # step = the 0-based index of the step about to run
        loss = train_step(step)
        loop.log(step + 1, loss=loss)       # non-finite -> NonFiniteLossError; bar postfix; JSONL; TensorBoard
        if loop.due(cfg.eval_every, step + 1):
            with loop.paused():             # evaluation time is not training time
                ...

After each step's body the loop advances the bar and the wall clock, and calls save(done)
(done = steps completed) every `save_every` steps and after the last step, outside the
wall clock. `stop_at` saves and ends early as an interruption would (loop.stopped is then
True); resuming finishes the run. `wall_s` is the training time summed over every
invocation of the run, the one wall-time key of checkpoints, logs and cards.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the loss and the step."""


def step_generators(seed: int, step: int, process: int = 0):
    """The (numpy, torch) generators of one step: randomness as a function of (seed, step, process)."""
    np_rng = np.random.default_rng([int(seed), int(step), int(process), 0xD1])
    torch_gen = torch.Generator().manual_seed(int(np_rng.integers(2**62)))
    return np_rng, torch_gen


def check_finite(step: int, **losses) -> None:
    """NonFiniteLossError when any of `losses` (name -> float) is NaN or infinite."""
    for name, value in losses.items():
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteLossError(f"{name} became {value} at step {step}")


def read_rows(path) -> list[dict]:
    """The rows of a JSONL file ([] when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLog:
    """JSONL streams OUT/<stream>.jsonl and TensorBoard OUT/tensorboard, one row schema.

    main: the name of the main stream (its TensorBoard tags carry no prefix). enabled False
    (a non-main process) writes nothing. tensorboard False skips TensorBoard.
    """

    def __init__(self, out, main: str = "log", tensorboard: bool = True, enabled: bool = True):
        self.out, self.main, self.enabled = Path(out), main, enabled
        self._tensorboard = tensorboard and enabled
        self._writer = None

    def path(self, stream: str | None = None) -> Path:
        return self.out / f"{stream or self.main}.jsonl"

    def rows(self, stream: str | None = None) -> list[dict]:
        return read_rows(self.path(stream))

    def write(self, step: int, wall_s: float, stream: str | None = None, **scalars) -> dict:
        """Append {"step", "wall_s", **scalars} to the stream and to TensorBoard; returns the row."""
        row = {"step": int(step), "wall_s": round(float(wall_s), 3), **scalars}
        if not self.enabled:
            return row
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.path(stream), "a") as f:
            f.write(json.dumps(row) + "\n")
        writer = self.writer
        if writer is not None:
            prefix = "" if stream in (None, self.main) else f"{stream}/"
            for key, value in scalars.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(prefix + key, value, int(step))
        return row

    @property
    def writer(self):
        """The TensorBoard SummaryWriter (created on first use; None when off or not installed)."""
        if self._writer is None and self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:  # tensorboard is a declared dependency; a trimmed install still trains
                self._tensorboard = False
        return self._writer

    def truncate(self, step: int) -> None:
        """Keep only rows with step <= `step` in every stream (where a resumed run continues)."""
        if not self.enabled or not self.out.is_dir():
            return
        for path in self.out.glob("*.jsonl"):
            rows = read_rows(path)
            kept = [r for r in rows if r.get("step", 0) <= step]
            if len(kept) != len(rows):
                path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Loop:
    """Iterate the steps start_step .. steps - 1 with a bar, a wall clock and checkpoints.

    steps: total steps of the run; start_step / wall_s: where a resumed run continues from.
    save(done): writes a checkpoint after `done` steps; called every `save_every` steps, after
    the last step and at `stop_at`. log: a RunLog (or None). progress False hides the bar;
    main False (a non-main process) also hides it and skips logging and saving.
    """

    def __init__(
        self,
        steps: int,
        *,
        start_step: int = 0,
        wall_s: float = 0.0,
        desc: str = "train",
        progress: bool = True,
        log: RunLog | None = None,
        save: Callable[[int], object] | None = None,
        save_every: int = 0,
        stop_at: int | None = None,
        main: bool = True,
    ):
        self.steps, self.start_step, self.step = int(steps), int(start_step), int(start_step)
        self.desc, self.progress, self.main = desc, progress and main, main
        self.run_log, self._save, self.save_every, self.stop_at = log, save, save_every, stop_at
        self.stopped = False
        self.last_saved: int | None = None
        self._wall_before = float(wall_s)
        self._counted = 0.0
        self._tick: float | None = None
        self._postfix: dict = {}
        self.bar = None

    # ------------------------------------------------------------------ clock
    @property
    def wall_s(self) -> float:
        """Training seconds over every invocation of the run (paused time excluded)."""
        running = time.perf_counter() - self._tick if self._tick is not None else 0.0
        return self._wall_before + self._counted + running

    def _stop_clock(self) -> None:
        if self._tick is not None:
            self._counted += time.perf_counter() - self._tick
            self._tick = None

    @contextlib.contextmanager
    def paused(self):
        """Time spent in the block does not count as training time (evaluation, writing files)."""
        running = self._tick is not None
        self._stop_clock()
        try:
            yield
        finally:
            if running:
                self._tick = time.perf_counter()

    # ------------------------------------------------------------------ steps
    def __iter__(self):
        self.bar = tqdm(total=self.steps, initial=self.start_step, desc=self.desc, unit="step", disable=not self.progress, dynamic_ncols=True)
        self._tick = time.perf_counter()
        try:
            for step in range(self.start_step, self.steps):
                yield step
                done = self.step = step + 1
                self.bar.update(1)
                if self._postfix:
                    self.bar.set_postfix(self._postfix, refresh=False)
                if self.due(self.save_every, done) or done == self.steps:
                    self.save(done)
                if self.stop_at is not None and done >= self.stop_at and done < self.steps:
                    if self.last_saved != done:
                        self.save(done)
                    self.stopped = True
                    break
            if self.start_step >= self.steps and self.last_saved is None:
                self.save(self.steps)  # nothing left to train: the checkpoint still reflects the last step
        finally:
            self._stop_clock()
            self.bar.close()

    @staticmethod
    def due(every: int | None, done: int) -> bool:
        """Whether an every-k-steps action is due after `done` steps (k falsy: never)."""
        return bool(every) and done % every == 0

    def save(self, done: int) -> None:
        """Checkpoint now, outside the wall clock (the main process only)."""
        if self._save is None or not self.main:
            return
        with self.paused():
            self._save(done)
        self.last_saved = done

    # ------------------------------------------------------------------ logging
    def log(self, step: int, stream: str | None = None, postfix: dict | None = None, **scalars) -> dict:
        """Check `scalars` are finite, write one row to the log and show them on the bar.

        postfix: what the bar shows instead of the scalars (formatted strings, say)."""
        check_finite(step, **{k: v for k, v in scalars.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        shown = postfix if postfix is not None else {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in scalars.items()}
        if stream is None or (self.run_log is not None and stream == self.run_log.main):
            self._postfix = dict(shown)
        if self.run_log is not None and self.main:
            return self.run_log.write(step, self.wall_s, stream, **scalars)
        return {"step": int(step), "wall_s": round(self.wall_s, 3), **scalars}

    def set_postfix(self, **shown) -> None:
        """What the bar shows next to the step count (for values not logged every step)."""
        self._postfix = dict(shown)

    def write(self, message: str, fallback=print) -> None:
        """A line above the bar (or through `fallback` when the bar is hidden)."""
        (self.bar.write if self.bar is not None and self.progress else fallback)(message)
