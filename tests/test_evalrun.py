"""Evaluation runs: the misc pixel mode, resumable results files, kill/resume and accelerate sharding."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from itc_core.cli import main
from itc_core.errors import ItcError
from itc_core.evalrun import EvalSettings, misc_decode, misc_encode, read_rows, run_eval
from itc_core.tinyworld import sample

# Cheap but real: two scenes, the LIC alone and with caption + restorer (itc_eval's default methods), JPEG; two
# rate points each.
SMALL = ["--limit", "2", "--qualities", "1,2", "--pillow-qualities", "10,50", "--boot", "20", "--quiet"]
SMALL_ROWS = 2 * 3 * 2


def small_settings(methods=("lic", "ours", "jpeg"), **kw):
    return EvalSettings(limit=2, methods=methods, qualities=(1, 2), pillow_qualities=(10, 50), boot=20, **kw)


def itc_eval(out, *extra, launcher=(), methods="lic,ours,jpeg"):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, *launcher, "-m", "itc_core.cli", "eval", *SMALL, "--methods", methods, "--out", str(out),
           *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process run (in this process, one torch thread as ``itc eval``'s default):
    (summary.json text, results.jsonl text, the folder)."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_eval(small_settings(), out, progress=False)
    assert summary["images"] == 2 and list(summary["means"]) == ["lic", "ours", "jpeg"]
    return (out / "summary.json").read_text(), (out / "results.jsonl").read_text(), out


@pytest.fixture(scope="module")
def image_only_reference(tmp_path_factory):
    """As ``reference``, without ``ours``: the sharding tests' yardstick. Sharding decides only which process codes
    which image, and the kill/resume tests already hold ``ours`` to the same rows in a fresh process; leaving out
    the LMM and the restorer here saves each launched process a third of its time."""
    out = tmp_path_factory.mktemp("reference-image-only")
    run_eval(small_settings(methods=("lic", "jpeg")), out, progress=False)
    return (out / "summary.json").read_text(), (out / "results.jsonl").read_text(), out


def test_misc_pixel_map_round_trip_and_rate():
    image = sample(2_000_000)[0]
    data = misc_encode(image, 8, 4)
    decoded, rest = misc_decode(data + b"caption")
    assert rest == b"caption" and decoded.size == image.size
    assert len(misc_encode(image, 16, 4)) < len(data) < len(misc_encode(image, 4, 16))
    assert len(decoded.getcolors(4096)) > 4  # bilinear upsampling of a 4-colour 8×8 map
    with pytest.raises(ItcError, match="does not decode"):
        misc_decode(data[:-3])


def test_read_rows_drops_a_torn_last_line_and_refuses_a_damaged_one(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert read_rows(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text().endswith('"b"')  # reading alone changes nothing
    assert read_rows(path, repair=True) == [{"a": 1}, {"a": 2}]
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ItcError, match="line 2 is damaged"):
        read_rows(path)


def test_resume_after_a_torn_last_line_equals_the_uninterrupted_run(tmp_path, reference):
    rows = reference[1].splitlines(keepends=True)
    assert len(rows) == SMALL_ROWS
    ours = [json.loads(r) for r in rows if '"method": "ours"' in r]
    assert all(r["caption"] and r["bpp_text"] > 0 and r["bpp"] > r["bpp_image"] for r in ours)
    # A run killed while writing its fourth row: three complete lines and half of one; no summary yet.
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(reference[2] / "run.json", out)
    (out / "results.jsonl").write_text("".join(rows[:3]) + rows[3][: len(rows[3]) // 2])
    run_eval(small_settings(), out, progress=False)
    assert (out / "summary.json").read_text() == reference[0]
    assert (out / "results.jsonl").read_text() == reference[1]


@pytest.mark.slow
def test_killed_three_times_then_resumed_equals_the_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "run"
    rng = random.Random(10)
    for _ in range(3):
        target = rng.randrange(SMALL_ROWS)  # kill once the file holds this many rows, after a random delay
        proc = itc_eval(out)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            path = out / "results.jsonl"
            if path.is_file() and path.read_bytes().count(b"\n") >= target:
                time.sleep(rng.uniform(0, 0.3))
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    proc = itc_eval(out)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "BD-rate vs lic on referee_distance, ours" in stdout and "summary.json" in stdout
    assert "Loading" not in stderr and "it/s" not in stderr  # --quiet: neither our bars nor the libraries'
    assert (out / "summary.json").read_text() == reference[0]
    assert (out / "results.jsonl").read_text() == reference[1]


@pytest.mark.slow
def test_accelerate_two_processes_equal_one(tmp_path, image_only_reference, main_process_port, communicate):
    """``accelerate launch`` with 2 processes writes what one process writes.

    accelerate 1.15 starts several CPU processes in two ways: ``--multi_gpu`` (torchrun; it works without
    GPUs, the processes meet over gloo), run here, and ``--cpu --num_processes N``, which launches through
    mpirun and a hostfile (without MPI, ``--cpu`` starts one process that runs everything). The MPI launch
    runs in test_finetune (the same accelerate state under mpirun); how ``itc eval`` knows it was launched
    several times, under either, is ``test_launched_processes_are_read_from_torchrun_or_mpi``.
    """
    pytest.importorskip("accelerate")
    flags = ["--multi_gpu", "--num_processes", "2", "--main_process_port", main_process_port]
    out = tmp_path / "run"
    proc = itc_eval(out, launcher=("-m", "accelerate.commands.launch", *flags), methods="lic,jpeg")
    stdout, stderr = communicate(proc, 300)
    assert proc.returncode == 0, stderr[-2000:]
    assert "(2 processes)" in stdout
    assert (out / "summary.json").read_text() == image_only_reference[0]
    assert (out / "results.jsonl").read_text() == image_only_reference[1]
    assert not list(out.glob("results.rank*"))


def test_launched_processes_are_read_from_torchrun_or_mpi():
    from itc_core.cli import _launched_processes

    assert _launched_processes({}) == 1
    assert _launched_processes({"WORLD_SIZE": "2"}) == 2  # torchrun (accelerate --multi_gpu)
    assert _launched_processes({"PMI_SIZE": "3"}) == 3  # MPICH's mpirun (accelerate --cpu, the mpich wheel)
    assert _launched_processes({"OMPI_COMM_WORLD_SIZE": "2", "WORLD_SIZE": ""}) == 2  # Open MPI


def test_unknown_method_and_dataset_are_one_line_errors(tmp_path, capsys):
    assert main(["eval", "--methods", "lic,bpg", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("itc: error: unknown method 'bpg'") and "\n" not in err
    assert main(["eval", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("itc: error:") and "\n" not in err
    assert main(["eval", "--methods", "jpeg", "--out", str(tmp_path / "c")]) == 2  # anchor lic not run
    assert "anchor 'lic' is not among" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_semantic_lic_is_reported_not_invented(tmp_path):
    preset = tmp_path / "nosemantic.yaml"
    preset.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"variants": None}}))
    settings = EvalSettings(preset=str(preset), limit=1, methods=("lic", "ours-full", "jpeg"), qualities=(1,),
                            pillow_qualities=(10,), boot=0)
    summary = run_eval(settings, tmp_path / "run", progress=False)
    assert "semantic" in summary["missing_methods"]["ours-full"]
    assert "ours-full" not in summary["means"] and "ours-full" not in summary["methods"]
    assert all(json.loads(r)["method"] != "ours-full" for r in (tmp_path / "run/results.jsonl").open())


def test_a_results_folder_of_other_settings_is_refused(tmp_path):
    run_eval(EvalSettings(limit=1, methods=("jpeg",), anchor="jpeg", pillow_qualities=(10,), boot=0),
             tmp_path, progress=False)
    with pytest.raises(ItcError, match="pick another --out"):
        run_eval(EvalSettings(limit=1, methods=("jpeg",), anchor="jpeg", steps=2, boot=0), tmp_path, progress=False)


def test_method_runner_gives_decoded_images_and_rows_per_point():
    from itc_core.data import open_dataset
    from itc_core.evalrun import MethodRunner

    dataset = open_dataset("tiny", 1)
    runner = MethodRunner(EvalSettings(limit=1, methods=("jpeg", "misc"), anchor="jpeg", pillow_qualities=(10, 90),
                                       misc_points=((16, 4),), boot=0), dataset[0])
    runner.begin_image(dataset[0])
    decoded = runner.decoded("jpeg")
    assert [p for p, _ in decoded] == ["q10", "q90"] and decoded[0][1].size == (64, 64)
    rows = runner.rows("jpeg")
    assert rows[0]["bpp"] < rows[1]["bpp"] and rows[0]["psnr"] < rows[1]["psnr"]
    misc = runner.rows("misc")[0]
    assert misc["caption"] == runner.caption() and misc["bpp_text"] > 0
    assert misc["bytes"] * 8 / 64 ** 2 == pytest.approx(misc["bpp"])
    assert misc["bpp"] == pytest.approx(misc["bpp_image"] + misc["bpp_text"])


def test_retrained_weights_make_another_identity(tmp_path):
    from itc_core.evalrun import _check_identity, weights_sha256

    weights = tmp_path / "lic" / "q{quality}.safetensors"
    weights.parent.mkdir()
    for q in (1, 2):
        (tmp_path / "lic" / f"q{q}.safetensors").write_bytes(bytes([q]) * 10)
    config = {"image_codec": {"weights": str(weights), "qualities": [1, 2]}, "caption": {"lmm": "hub-org/some-lmm"}}
    before = weights_sha256(config)
    (tmp_path / "lic" / "q2.safetensors").write_bytes(b"retrained")
    after = weights_sha256(config)
    assert after != before
    config["image_codec"]["qualities"] = [1]  # fewer rate points: fewer files
    assert weights_sha256(config) not in (before, after)

    # A results folder made with other weights is refused with a message that says so; one from before
    # weights were recorded is taken as made with today's and upgraded in place.
    settings = small_settings()
    identity = settings.identity()
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({**identity, "weights_sha256": "0" * 16}))
    with pytest.raises(ItcError, match="retrained or other model weights"):
        _check_identity(out, settings)
    legacy = {k: v for k, v in identity.items() if k != "weights_sha256"}
    (out / "run.json").write_text(json.dumps(legacy))
    _check_identity(out, settings)
    assert json.loads((out / "run.json").read_text()) == identity
