"""Mapper distillation on two processes: `accelerate launch ... -m fourdistill.cli distill`.

Two CPU processes (gloo) that each train on their rows of the batch make the run one process
makes with the whole batch: the same losses and mappers up to float summation order. Their
checkpoint resumes under two processes to the uninterrupted single-process run.

`accelerate launch --cpu --num_processes 2` starts one process unless MPI is installed, so the
test launches torchrun's two processes with `--multi_gpu` and ACCELERATE_USE_CPU=1, which is
what `--cpu` sets.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import fourdistill
from fourdistill.distill import DistillConfig, process_rows, run

from tiny_models import tiny_stack_folder


pytestmark = pytest.mark.usefixtures("one_thread")

# batch 3 over two processes: shares of 2 and 1 rows, so the loss weighting is exercised too
SETTINGS = dict(mode="joint", batch_size=3, grad_accum=2, world_seeds=(0, 50), save_every=2, validate_every=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(stack, out, steps: int, resume: bool = False) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "fourdistill.cli", "distill",
        "--model", str(stack), "--out", str(out), "--steps", str(steps), "--threads", "1",
        "--mode", SETTINGS["mode"], "--batch-size", str(SETTINGS["batch_size"]), "--grad-accum", str(SETTINGS["grad_accum"]),
        "--world-seeds", *map(str, SETTINGS["world_seeds"]),
        "--save-every", str(SETTINGS["save_every"]), "--validate-every", str(SETTINGS["validate_every"]),
    ] + (["--resume"] if resume else [])  # fmt: skip
    src = str(Path(fourdistill.__file__).resolve().parents[1])
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def mappers(out) -> dict:
    return load_file(str(Path(out) / "checkpoint" / "mappers.safetensors"))


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (Path(out) / "loss.jsonl").read_text().splitlines()]


def assert_same_mappers(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=key)


def test_process_rows_split_a_batch_into_contiguous_shares():
    assert process_rows(4, 1, 0) == slice(0, 4)
    assert [process_rows(5, 2, p) for p in range(2)] == [slice(0, 3), slice(3, 5)]
    assert [process_rows(7, 3, p) for p in range(3)] == [slice(0, 3), slice(3, 5), slice(5, 7)]
    with pytest.raises(ValueError, match="at least the number of processes"):
        process_rows(1, 2, 0)


def test_two_processes_with_half_the_batch_each_match_one_process_and_resume(tmp_path):
    stack = tiny_stack_folder(tmp_path)
    one = lambda steps, name: run(DistillConfig(model=str(stack), out=str(tmp_path / name), steps=steps, **SETTINGS), progress=False)  # noqa: E731
    one(2, "one_2")
    straight = one(4, "one_4")

    # two processes, interrupted after 2 of 4 steps: the same first half of the run
    two = tmp_path / "two"
    launch_two_processes(stack, two, steps=2)
    assert json.loads((two / "checkpoint" / "mappers.json").read_text())["step"] == 2
    np.testing.assert_allclose(losses(two), straight["losses"][:2], rtol=1e-5)
    assert_same_mappers(mappers(two), mappers(tmp_path / "one_2"))

    # resumed under two processes: the uninterrupted single-process run
    launch_two_processes(stack, two, steps=4, resume=True)
    assert json.loads((two / "checkpoint" / "mappers.json").read_text())["step"] == 4
    np.testing.assert_allclose(losses(two), straight["losses"], rtol=1e-5)
    assert_same_mappers(mappers(two), mappers(tmp_path / "one_4"))
