"""What a new user meets: bad input in, one clear line out (naming the file, field or flag), and
nothing on disk changed. One section per class of fault; every case goes through the command
line (`fourdistill.cli.main`) where the user would meet it."""

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from source_fixtures import write_dnerf, write_nerfstudio
from tiny_models import tiny_stack_folder

from fourdistill.cli import main
from fourdistill.world import EVAL_SEEDS, export_dnerf, make_scene

HELD_OUT = EVAL_SEEDS[0]


# ----------------------------------------------------------------------------- helpers
def tree_hash(folder) -> str:
    """Hash of every file's relative path and bytes under `folder` (hidden files included);
    a missing folder hashes as such."""
    folder = Path(folder)
    h = hashlib.sha256()
    if not folder.exists():
        return "missing"
    if folder.is_file():
        return hashlib.sha256(folder.read_bytes()).hexdigest()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


# A library logger's handler made during an earlier test writes to that test's closed capture,
# and logging reports that on stderr: a test artefact, not what a user sees; dropped here.
LOGGING_ERROR = re.compile(r"--- Logging error ---\n.*?\nArguments: [^\n]*\n?", re.DOTALL)


def refused(capsys, argv, *needles, unchanged=(), absent=()):
    """Run the command line; it must exit 2 with its error as the last line of stderr (before
    it only argparse's usage or progress bars), no traceback, every needle in that line, each
    `unchanged` path as it was, and none of `absent` created. Returns the error line."""
    before = {str(p): tree_hash(p) for p in unchanged}
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage line + "error:" line
        rc = exc.code
    err = LOGGING_ERROR.sub("", capsys.readouterr().err).strip()
    assert rc == 2, err
    assert "Traceback" not in err
    line = err.splitlines()[-1].split("\r")[-1]
    assert line.startswith("fourdistill ") and ": error: " in line, err
    for needle in needles:
        assert str(needle) in line, (needle, line)
    for p in unchanged:
        assert tree_hash(p) == before[str(p)], f"{p} changed"
    for p in absent:
        assert not Path(p).exists(), f"{p} was created"
    return line


def fake_run(folder: Path) -> Path:
    """A folder that holds a run as the engine sees it: config.json and a checkpoint/."""
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text(json.dumps({"config": {"steps": 5}, "command": None}) + "\n")
    (folder / "loss.jsonl").write_text('{"step": 1, "wall_s": 0.1, "loss": 0.5}\n')
    return folder


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header announces width x height pixels (and holds no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return tiny_stack_folder(tmp_path_factory.mktemp("stack"))


DISTILL_FLAGS = ["--batch-size", "1", "--grad-accum", "1", "--world-seeds", "0", "4", "--validate-every", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory):
    """A distillation run of one step with the tiny stack, through the command line."""
    out = tmp_path_factory.mktemp("run") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["distill", "--model", str(stack), "--out", str(out), "--steps", "1", *DISTILL_FLAGS]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.fixture(scope="module")
def held_out_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held") / "dnerf"
    export_dnerf(make_scene(HELD_OUT), folder, resolution=12, n_train=3, n_val=1, n_test=1)
    return folder


# ----------------------------------------------------------------------------- 1. a run is lost
@pytest.mark.parametrize(
    "command",
    [["distill"], ["reconstruct", "world:5"], ["judge", "train"]],
    ids=["distill", "reconstruct", "judge-train"],
)
def test_every_trainer_refuses_an_out_holding_a_run(command, tmp_path, capsys):
    out = fake_run(tmp_path / "run")
    refused(capsys, [*command, "--out", out, "--steps", "3"], out, "--resume", unchanged=[out])


def test_an_interrupted_checkpoint_write_keeps_the_whole_previous_checkpoint(tmp_path):
    from fourdistill.engine.checkpoint import load_checkpoint, save_checkpoint

    folder = tmp_path / "checkpoint"
    model = {"w": torch.ones(3)}
    save_checkpoint(folder, step=1, model=model, optimizer={"state": {}, "param_groups": []}, extra={"a": 1})
    before = tree_hash(folder)

    def killed(tmp):  # the process dies after the weights, before the optimizer state is whole
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, step=2, model=model, optimizer={"state": {}, "param_groups": []}, write=killed)
    assert tree_hash(folder) == before
    assert load_checkpoint(folder).optimizer is not None
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


# What the writers raise when the disk fills under them (seen on a full tmpfs).
FULL_DISK = [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 38528 vs 38420"), "torch could not write the file"),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), "torch could not write the file"),
]


@pytest.mark.parametrize("error, cause", FULL_DISK, ids=["oserror", "torch-pos", "torch-writer"])
def test_a_full_disk_while_saving_a_checkpoint_is_named_and_loses_nothing(error, cause, tmp_path, monkeypatch):
    from fourdistill.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    folder = tmp_path / "checkpoint"
    save_checkpoint(folder, step=1, model={"w": torch.ones(3)}, optimizer={"state": {}, "param_groups": []}, extra={})
    before = tree_hash(folder)

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=cause) as info:
        save_checkpoint(folder, step=2, model={"w": torch.zeros(3)}, optimizer={"state": {}, "param_groups": []}, extra={})
    assert str(folder) in str(info.value)
    monkeypatch.undo()
    assert tree_hash(folder) == before and load_checkpoint(folder).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_an_error_that_is_not_the_disk_still_raises_as_itself(tmp_path, monkeypatch):
    from fourdistill.engine.checkpoint import save_checkpoint

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in the caller")

    monkeypatch.setattr(torch, "save", bug)
    with pytest.raises(RuntimeError, match="a bug in the caller"):
        save_checkpoint(tmp_path / "checkpoint", step=1, optimizer={"state": {}, "param_groups": []})


def test_temporary_files_of_killed_writers_are_cleaned_up(tmp_path):
    from fourdistill.io import atomic_dir, save_image, write_json

    dead = 2**22 + 12345  # above the default pid_max: no process has it
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    stale_file = tmp_path / f".grid.png.tmp-{dead}-abc123.png"
    stale_file.write_bytes(b"half a png")
    live_file = tmp_path / f".grid.png.tmp-{os.getppid()}-def456.png"  # a writer still running
    live_file.write_bytes(b"being written")
    save_image(tmp_path / "grid.png", np.zeros((4, 4, 3), np.float32))
    assert not stale_file.exists() and live_file.exists()

    stale_dir = tmp_path / f".dnerf.tmp-{dead}-xyz"
    stale_dir.mkdir()
    (stale_dir / "r_000.png").write_bytes(b"half")
    with atomic_dir(tmp_path / "dnerf") as tmp:
        write_json(tmp / "transforms_train.json", {"frames": []})
    assert not stale_dir.exists() and (tmp_path / "dnerf" / "transforms_train.json").is_file()

    # killed between the two renames of an overwrite: the previous folder is moved back
    os.replace(tmp_path / "dnerf", tmp_path / ".dnerf.old")
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "dnerf"):
            pass
    assert (tmp_path / "dnerf" / "transforms_train.json").is_file() and not (tmp_path / ".dnerf.old").exists()


def test_stale_checkpoint_folders_are_cleaned_by_the_next_save(tmp_path):
    from fourdistill.engine.checkpoint import save_checkpoint

    (tmp_path / ".checkpoint.tmp-killed").mkdir()
    (tmp_path / ".checkpoint.tmp-killed" / "model.safetensors").write_bytes(b"half")
    save_checkpoint(tmp_path / "checkpoint", step=1, model={"w": torch.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# ----------------------------------------------------------------------------- 2. held-out scenes
def test_distill_refuses_a_held_out_world_seed(tmp_path, capsys):
    out = tmp_path / "d"
    refused(capsys, ["distill", "--source", f"world:{HELD_OUT}", "--out", out], "--source", str(HELD_OUT), "held out", absent=[out])


def test_distill_refuses_a_d_nerf_export_of_a_held_out_scene(held_out_export, tmp_path, capsys):
    out = tmp_path / "d"
    line = refused(capsys, ["distill", "--source", held_out_export, "--out", out], held_out_export, str(HELD_OUT), absent=[out])
    assert "export of" in line


def test_distill_refuses_a_field_fitted_to_a_held_out_scene(held_out_export, tmp_path, capsys):
    """End to end: reconstruction records the scene its source shows; distillation reads it."""
    from test_reconstruct import tiny_config

    from fourdistill.field.reconstruct import open_for_reconstruction, reconstruct

    fitted = tmp_path / "fit"
    train, ti, test, tei = open_for_reconstruction(held_out_export)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reconstruct(train, fitted, tiny_config(steps=2), ti, test, tei, progress=False, write_video=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert json.loads((fitted / "checkpoint" / "field.json").read_text())["world_seed"] == HELD_OUT
    out = tmp_path / "d"
    line = refused(capsys, ["distill", "--source", fitted, "--out", out], fitted, str(HELD_OUT), unchanged=[fitted], absent=[out])
    assert "field fitted to" in line
    # a field of an older version names its source as world:SEED
    old = tmp_path / "old"
    shutil.copytree(fitted, old)
    meta = json.loads((old / "checkpoint" / "field.json").read_text())
    meta.pop("world_seed")
    meta["source"] = f"world:{HELD_OUT + 7}"
    (old / "checkpoint" / "field.json").write_text(json.dumps(meta))
    refused(capsys, ["distill", "--source", old, "--out", out], str(HELD_OUT + 7), absent=[out])


def test_distill_refuses_world_seeds_reaching_into_the_held_out_range(tmp_path, capsys):
    out = tmp_path / "d"
    refused(capsys, ["distill", "--world-seeds", "999990", "1000010", "--out", out], "--world-seeds", "1000000..1000009", absent=[out])
    refused(capsys, ["distill", "--world-seeds", "10", "10", "--out", out], "--world-seeds", "START must be below STOP", absent=[out])


def test_a_config_file_cannot_bring_a_held_out_source(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"source": f"world:{HELD_OUT + 3}"}))
    out = tmp_path / "d"
    refused(capsys, ["distill", "--config", cfg, "--out", out], str(HELD_OUT + 3), absent=[out])


def test_a_training_export_is_accepted_and_the_card_names_the_seeds_used(tmp_path):
    from fourdistill.mappers.checkpoint import training_data
    from fourdistill.sources.world_seed import check_train_source, world_seed_of

    export = tmp_path / "five"
    export_dnerf(make_scene(5), export, resolution=8, n_train=2, n_val=0, n_test=0)
    check_train_source(export)  # a training scene passes
    assert world_seed_of(export) == 5 and world_seed_of("world:12") == 12 and world_seed_of(tmp_path) is None
    assert training_data({"source": "world", "world_seeds": [0, 20]}) == "source world, seeds 0..19 (20 scenes)"
    assert training_data({"source": str(export), "world_seeds": [0, 2000]}) == f"source {export} (world scene 5)"


def test_the_card_of_a_run_names_its_seed_range(run):
    card = (run / "checkpoint" / "README.md").read_text()
    assert "source world, seeds 0..3 (4 scenes)" in card


def test_the_source_and_field_file_names_agree():
    from fourdistill import field
    from fourdistill.engine.flags import HELD_OUT_SCENES
    from fourdistill.sources import world_seed

    assert world_seed.FIELD_META == field.META_NAME
    assert HELD_OUT_SCENES == len(EVAL_SEEDS)


def test_a_source_that_does_not_open_leaves_no_run_folder_behind(tmp_path, capsys):
    """Otherwise the next try, with the path fixed, would be refused as a run already there."""
    out = tmp_path / "d"
    refused(capsys, ["distill", "--source", tmp_path / "missing", "--out", out], tmp_path / "missing", "no such file", absent=[out])
    junk = tmp_path / "junk.txt"
    junk.write_text("not a source\n")
    refused(capsys, ["distill", "--source", junk, "--out", out], junk, "not a known 4D source", absent=[out])


# ----------------------------------------------------------------------------- 3. unwritable output
@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["distill", "--out", "{file}"], "--out"),
        (["distill", "--out", "{file}/run"], "--out"),
        (["reconstruct", "world:5", "--out", "{file}/run"], "--out"),
        (["judge", "train", "--out", "{file}"], "--out"),
        (["evaluate", "--out", "{file}/report"], "--out"),
        (["generate", "--prompt", "x", "--time", "0.1", "--out", "{file}/x.png"], "--out"),
        (["world", "show", "--out", "{file}/grid.png"], "--out"),
        (["world", "export", "--dnerf", "{file}/scene"], "--dnerf"),
        (["world", "export", "--video", "{file}/scene.mp4"], "--video"),
        (["demo", "--out", "{file}"], "--out"),
    ],
    ids=["distill-file", "distill-under-file", "reconstruct", "judge-train", "evaluate", "generate", "world-show", "export-dnerf", "export-video", "demo"],
)
def test_output_under_a_file_is_refused_before_work(argv, flag, a_file, capsys):
    argv = [a.replace("{file}", str(a_file)) for a in argv]
    line = refused(capsys, argv, flag, str(a_file), unchanged=[a_file])
    assert "is a file" in line or "not a folder" in line


@pytest.mark.parametrize(
    "argv",
    [["distill", "--out", "/sys/fourdistill-run"], ["generate", "--prompt", "x", "--time", "0.1", "--out", "/sys/x.png"],
     ["world", "export", "--dnerf", "/sys/fourdistill-scene"]],
    ids=["distill", "generate", "export"],
)
def test_output_the_system_refuses_is_named_with_its_cause(argv, capsys):
    if os.access("/sys", os.W_OK) and not os.path.isdir("/sys/kernel"):
        pytest.skip("no sysfs here")
    line = refused(capsys, argv, "/sys", "cannot write", absent=[argv[-1]])
    assert "(" in line  # the operating system's cause, e.g. "(Permission denied)"


def test_generate_out_naming_a_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "x.png"
    folder.mkdir()
    refused(capsys, ["generate", "--prompt", "x", "--time", "0.1", "--out", folder], "--out", "is a folder", unchanged=[tmp_path])


def test_a_full_disk_while_writing_an_image_is_named(tmp_path, monkeypatch):
    from fourdistill.io import OutputError, save_image

    path = tmp_path / "grid.png"
    save_image(path, np.zeros((4, 4, 3), np.float32))
    before = tree_hash(tmp_path)

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(OutputError, match="No space left on device") as info:
        save_image(path, np.ones((4, 4, 3), np.float32))
    assert str(path) in str(info.value)
    assert tree_hash(tmp_path) == before


# ----------------------------------------------------------------------------- 4. corrupt files
DAMAGED = [
    ("checkpoint/mappers.safetensors", "safetensors"),
    ("checkpoint/optimizer.pt", "optimizer state"),
    ("checkpoint/train_state.pt", "training state"),
    ("checkpoint/mappers.json", "not valid JSON"),
    ("config.json", "damaged run configuration"),
]


@pytest.mark.parametrize("name, what", DAMAGED, ids=[d[0].split("/")[-1] for d in DAMAGED])
def test_resume_from_a_damaged_file_names_it(name, what, stack, run_copy, capsys):
    truncate(run_copy / name)
    argv = ["distill", "--model", stack, "--out", run_copy, "--resume", "--steps", "2", *DISTILL_FLAGS]
    threads = torch.get_num_threads()
    try:
        refused(capsys, argv, run_copy / name, what, unchanged=[run_copy])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name, what", [("mappers.safetensors", "safetensors"), ("mappers.json", "not valid JSON")])
def test_generate_and_evaluate_with_damaged_mappers_name_the_file(name, what, stack, run_copy, tmp_path, capsys):
    mappers = run_copy / "checkpoint"
    truncate(mappers / name)
    out = tmp_path / "g.png"
    refused(capsys, ["generate", "--model", stack, "--mappers", mappers, "--prompt", "x", "--time", "0.1", "--steps", "1", "--out", out],
            mappers / name, what, unchanged=[run_copy], absent=[out])
    report = tmp_path / "report"
    refused(capsys, ["evaluate", "--model", stack, "--mappers", mappers, "--pairs", "2", "--scenes", "1", "--steps", "1", "--out", report],
            mappers / name, what, unchanged=[run_copy], absent=[report])


@pytest.mark.parametrize("name, what", [("judge.safetensors", "safetensors"), ("config.json", "not valid JSON")])
def test_judge_eval_with_a_damaged_judge_names_the_file(name, what, tmp_path, capsys):
    from fourdistill.evaluate.judge import SHIPPED_JUDGE

    judge = tmp_path / "judge"
    shutil.copytree(SHIPPED_JUDGE, judge)
    truncate(judge / name)
    refused(capsys, ["judge", "eval", "--judge", judge, "--scenes", "1", "--views", "1"], judge / name, what, unchanged=[judge])


def _field_folder(folder: Path, **meta) -> Path:
    from test_field import small_config

    from fourdistill.field.field import Field4D
    from fourdistill.field.checkpoint import field_metadata, save_checkpoint
    from fourdistill.field.render import OccupancyConfig, OccupancyGrid, RenderConfig

    field = Field4D(small_config())
    grid = OccupancyGrid(OccupancyConfig(resolution=8, time_bins=2), 1.0, 0.05)
    save_checkpoint(folder, field, grid, field_metadata(field.config, RenderConfig(n_samples=16), grid.config, orbit=None, **meta))
    return folder


def test_reconstruct_and_judge_resume_from_a_damaged_checkpoint_name_the_file(tmp_path, capsys):
    from fourdistill.evaluate.judge import SHIPPED_JUDGE

    run = tmp_path / "fit"
    _field_folder(run / "checkpoint")
    (run / "config.json").write_text(json.dumps({"config": {}, "command": None}))
    truncate(run / "checkpoint" / "field.safetensors")
    refused(capsys, ["reconstruct", "world:5", "--out", run, "--resume"], run / "checkpoint" / "field.safetensors", "damaged", unchanged=[run])
    judge = tmp_path / "judge"
    shutil.copytree(SHIPPED_JUDGE, judge / "checkpoint")
    (judge / "config.json").write_text(json.dumps({"config": {}, "command": None}))
    truncate(judge / "checkpoint" / "judge.safetensors")
    refused(capsys, ["judge", "train", "--out", judge, "--resume"], judge / "checkpoint" / "judge.safetensors", "damaged", unchanged=[judge])


def test_inspect_a_field_with_damaged_weights_names_the_file(tmp_path, capsys):
    folder = _field_folder(tmp_path / "field")
    assert main(["inspect", str(folder)]) == 0
    truncate(folder / "field.safetensors")
    refused(capsys, ["inspect", folder], folder / "field.safetensors", "damaged", unchanged=[folder])


# ----------------------------------------------------------------------------- 5. nonsense values
NONSENSE = [
    (["distill", "--lr", "0"], "--lr"),
    (["distill", "--lr", "nan"], "--lr"),
    (["distill", "--nested-dropout", "2"], "--nested-dropout"),
    (["distill", "--batch-size", "0"], "--batch-size"),
    (["distill", "--grad-accum", "-1"], "--grad-accum"),
    (["distill", "--save-every", "0"], "--save-every"),
    (["distill", "--threads", "-1"], "--threads"),
    (["distill", "--steps", "0"], "--steps"),
    (["distill", "--time-alpha", "inf"], "--time-alpha"),
    (["distill", "--ip-scale", "-0.5"], "--ip-scale"),
    (["distill", "--seed", "-3"], "--seed"),
    (["generate", "--azimuth", "nan"], "--azimuth"),
    (["generate", "--guidance", "nan"], "--guidance"),
    (["generate", "--time", "nan"], "--time"),
    (["generate", "--elevation", "120"], "--elevation"),
    (["generate", "--radius", "inf"], "--radius"),
    (["generate", "--fps", "0"], "--fps"),
    (["generate", "--frames", "0"], "--frames"),
    (["generate", "--steps", "0"], "--steps"),
    (["generate", "--guidance-rescale", "2"], "--guidance-rescale"),
    (["generate", "--ref-time", "1.5"], "--ref-time"),
    (["evaluate", "--scenes", "5000", "--out", "r"], "--scenes"),
    (["evaluate", "--pairs", "1", "--out", "r"], "--pairs"),
    (["evaluate", "--batch", "0", "--out", "r"], "--batch"),
    (["judge", "eval", "--scenes", "1001"], "--scenes"),
    (["judge", "train", "--eval-scenes", "2000", "--out", "j"], "--eval-scenes"),
    (["judge", "train", "--batch-size", "0", "--out", "j"], "--batch-size"),
    (["reconstruct", "world:5", "--out", "r", "--time-scale", "0"], "--time-scale"),
    (["reconstruct", "world:5", "--out", "r", "--holdout-every", "1"], "--holdout-every"),
    (["reconstruct", "world:5", "--out", "r", "--samples", "0"], "--samples"),
    (["inspect", "world:5", "--stride", "0"], "--stride"),
    (["inspect", "world:5", "--max-frames", "-2"], "--max-frames"),
    (["world", "export", "--fps", "0", "--video", "v.mp4"], "--fps"),
    (["world", "export", "--resolution", "0", "--video", "v.mp4"], "--resolution"),
    (["world", "show", "--times", "0"], "--times"),
    (["world", "export", "--frames", "0", "--video", "v.mp4"], "--frames"),
]


@pytest.mark.parametrize("argv, flag", NONSENSE, ids=[" ".join(a) for a, _ in NONSENSE])
def test_nonsense_values_are_refused_naming_the_flag(argv, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(capsys, argv, f"argument {flag}", unchanged=[tmp_path])


@pytest.mark.parametrize(
    "command, settings, key",
    [(["distill"], {"lr": 0}, "lr"), (["distill"], {"nested_dropout_p": 2.0}, "nested_dropout_p"), (["distill"], {"save_every": 0}, "save_every"),
     (["reconstruct", "world:5"], {"holdout_every": 1}, "holdout_every"), (["reconstruct", "world:5"], {"field": {"time_scale": 0.0}}, "time_scale"),
     (["judge", "train"], {"eval_scenes": 5000}, "1000 evaluation scenes"), (["judge", "train"], {"checkpoint_every": 0}, "checkpoint_every")],
    ids=["distill-lr", "distill-dropout", "distill-save-every", "reconstruct-holdout", "reconstruct-time-scale", "judge-eval-scenes", "judge-checkpoint-every"],
)
def test_nonsense_values_in_a_config_file_are_refused_naming_file_and_key(command, settings, key, tmp_path, capsys):
    cfg = tmp_path / "settings.json"
    cfg.write_text(json.dumps(settings))
    out = tmp_path / "run"
    refused(capsys, [*command, "--config", cfg, "--out", out], "settings.json", key, absent=[out])


def test_a_time_displacement_outside_its_range_is_refused_naming_the_flag(tmp_path, capsys):
    out = tmp_path / "g.png"
    refused(capsys, ["generate", "--prompt", "x", "--time", "2", "--out", out], "--time 2", "[-1, 1]", absent=[out])


def test_a_radius_change_that_would_put_the_camera_behind_the_object_is_refused(stack, run, tmp_path, capsys):
    out = tmp_path / "g.png"
    argv = ["generate", "--model", stack, "--mappers", run / "checkpoint", "--world", HELD_OUT, "--radius", "-100", "--steps", "1", "--out", out]
    refused(capsys, argv, "--radius -100", "must stay positive", absent=[out])


def test_an_image_reference_announcing_a_huge_size_is_named(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    png_header(bomb, 100000, 100000)
    out = tmp_path / "g.png"
    refused(capsys, ["generate", "--prompt", "x", "--time", "0.1", "--image", bomb, "--out", out], bomb, "decompression bomb", absent=[out])


# ----------------------------------------------------------------------------- 6. inputs that pass but should not
def _dnerf(tmp_path):
    scene = tmp_path / "scene"
    write_dnerf(scene)
    return scene, scene / "transforms_train.json"


def _edit(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "matrix, problem",
    [
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], "singular"),
        ([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 4], [0, 0, 0, 1]], "scaled or sheared"),
        ([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]], "scaled or sheared"),
        ([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]], "reflection"),
    ],
    ids=["singular", "scaled", "sheared", "reflection"],
)
def test_camera_matrices_that_are_not_rigid_are_refused(matrix, problem, tmp_path, capsys):
    scene, path = _dnerf(tmp_path)
    _edit(path, lambda m: m["frames"][1].update(transform_matrix=matrix))
    refused(capsys, ["inspect", scene], path, "[frames[1].transform_matrix]", problem, unchanged=[scene])


def test_nerfstudio_camera_that_is_not_rigid_is_refused(tmp_path, capsys):
    write_nerfstudio(tmp_path / "cap")
    path = tmp_path / "cap" / "transforms.json"
    _edit(path, lambda m: m["frames"][0].update(transform_matrix=[[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]]))
    refused(capsys, ["inspect", tmp_path / "cap"], path, "[frames[0].transform_matrix]", "rigid", unchanged=[tmp_path / "cap"])


def test_a_frame_listed_twice_is_refused(tmp_path, capsys):
    scene, path = _dnerf(tmp_path)
    _edit(path, lambda m: m["frames"].append(dict(m["frames"][0])))
    refused(capsys, ["inspect", scene], path, "[frames[3].file_path]", "listed twice", "frames[0]", unchanged=[scene])
    write_nerfstudio(tmp_path / "cap")
    ns = tmp_path / "cap" / "transforms.json"
    _edit(ns, lambda m: m["frames"].append(dict(m["frames"][1])))
    refused(capsys, ["inspect", ns], ns, "listed twice", unchanged=[tmp_path / "cap"])


@pytest.mark.parametrize("escape", ["../outside/r_000", "{abs}"], ids=["dot-dot", "absolute"])
def test_file_paths_leaving_the_dataset_folder_are_refused(escape, tmp_path, capsys):
    scene, path = _dnerf(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(scene / "train" / "r_000.png", outside / "r_000.png")
    file_path = escape.replace("{abs}", str(outside / "r_000"))
    _edit(path, lambda m: m["frames"][0].update(file_path=file_path))
    refused(capsys, ["inspect", scene], path, "[frames[0].file_path]", "leaves the dataset folder", unchanged=[tmp_path])


def test_an_image_header_announcing_a_huge_image_is_refused(tmp_path, capsys):
    scene, _ = _dnerf(tmp_path)
    png_header(scene / "train" / "r_001.png", 100000, 100000)
    refused(capsys, ["inspect", scene], scene / "train" / "r_001.png", "[frames[1].file_path]", "100000", unchanged=[scene])
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(frames / f"f_{i}.png")
    png_header(frames / "f_2.png", 100000, 100000)
    refused(capsys, ["inspect", frames], frames / "f_2.png", "too large", unchanged=[frames])


def test_an_image_too_large_for_pil_is_named(tmp_path, monkeypatch):
    """PIL's own decompression-bomb error, from a bound lower than the reader's."""
    from PIL import Image as PILImage

    from fourdistill.sources import SourceError
    from fourdistill.sources.images import image_size

    path = tmp_path / "big.png"
    PILImage.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(SourceError, match="too large to decode") as info:
        image_size(path)
    assert info.value.path == str(path)


def test_json_nested_deeply_enough_to_overflow_the_parser_is_named(tmp_path, capsys):
    scene, path = _dnerf(tmp_path)
    deep = "[" * 200000 + "]" * 200000
    path.write_text('{"frames": ' + deep + "}")
    refused(capsys, ["inspect", scene], path, "nested too deeply", unchanged=[scene])
    cfg = tmp_path / "deep.json"
    cfg.write_text('{"steps": ' + deep + "}")
    refused(capsys, ["distill", "--config", cfg, "--out", tmp_path / "d"], cfg, "nested too deeply", absent=[tmp_path / "d"])


def test_a_field_whose_json_is_nested_too_deeply_is_named(tmp_path, capsys):
    folder = _field_folder(tmp_path / "field")
    (folder / "field.json").write_text('{"format": ' + "[" * 200000 + "]" * 200000 + "}")
    for argv in (["inspect", folder], ["distill", "--source", folder, "--out", tmp_path / "d"]):
        refused(capsys, argv, folder, "not a field checkpoint", unchanged=[folder], absent=[tmp_path / "d"])


def test_inspect_decodes_every_image_so_a_truncated_png_is_found(tmp_path, capsys):
    scene, _ = _dnerf(tmp_path)
    big = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    for split, n in (("train", 3), ("val", 3), ("test", 2)):
        for i in range(n):
            Image.fromarray(big, "RGBA").save(scene / split / f"r_{i:03d}.png")
    assert main(["inspect", str(scene)]) == 0
    truncate(scene / "train" / "r_002.png", 0.6)
    refused(capsys, ["inspect", scene], scene / "train" / "r_002.png", "[frames[2].file_path]", "damaged", unchanged=[scene])


# ----------------------------------------------------------------------------- 7. an RGBA reference
def test_generate_composites_an_rgba_reference_over_white(stack, run, tmp_path, capsys):
    from fourdistill.generate import reference_to_pil

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (200, 40, 40, 255)  # an opaque red square on a transparent ground
    path = tmp_path / "r_000.png"
    Image.fromarray(rgba, "RGBA").save(path)
    rgb = np.asarray(reference_to_pil(str(path), (64, 64)))
    assert rgb.shape == (64, 64, 3) and tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[32, 32]) == (200, 40, 40)
    out = tmp_path / "g.png"
    capsys.readouterr()
    argv = ["generate", "--model", stack, "--mappers", run / "checkpoint", "--image", path, "--prompt", "a red cube",
            "--time", "0.2", "--steps", "1", "--out", out]
    assert main([str(a) for a in argv]) == 0
    text = capsys.readouterr().out
    assert "alpha channel: composited over white" in text and out.is_file()
    gray = tmp_path / "gray.png"
    Image.new("L", (64, 64)).save(gray)
    refused(capsys, [*argv[:5], "--image", gray, *argv[7:]], gray, "mode 'L'")


# ----------------------------------------------------------------------------- 8. resume that is not exact
@pytest.mark.parametrize(
    "flags, setting",
    [(["--world-seeds", "0", "5"], "world_seeds"), (["--time-alpha", "0.3"], "time_alpha"), (["--ip-scale", "0.3"], "ip_adapter_scale"),
     (["--lr", "0.5"], "lr")],
    ids=["world-seeds", "time-alpha", "ip-scale", "lr"],
)
def test_resume_with_a_changed_setting_is_refused_naming_it(flags, setting, stack, run_copy, capsys):
    argv = ["distill", "--model", stack, "--out", run_copy, "--resume", "--steps", "2", *DISTILL_FLAGS, *flags]
    refused(capsys, argv, "cannot resume", setting, unchanged=[run_copy])


def test_the_no_network_message_is_not_cut_mid_word():
    from fourdistill.teachers.image.load import NO_NETWORK, StackLoadError, from_hub

    detail = "Cannot find an appropriate cached snapshot folder for the specified revision on the local disk " * 4

    def offline():
        raise OSError(detail)

    with pytest.raises(StackLoadError) as info:
        from_hub(offline, "owner/model")
    text = str(info.value)
    assert text.startswith("owner/model: " + NO_NETWORK)
    inner = text[text.index("(") + 1 : -1]
    assert inner.endswith(" ...") and detail.startswith(inner[: -len(" ...")]) and detail[len(inner) - 4] == " "
