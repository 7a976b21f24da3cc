"""The training loop: config validation, real-bytes validation, resume after a kill, semantic terms, accelerate."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from itc_core.cli import main
from itc_core.errors import ConfigError, WeightsError
from itc_core.finetune import TinyScenes, build_loss, load_finetune_config, lr_factor, read_segments, train
from itc_core.losses import CodecLoss, PeriodicErrorTerm

ROOT = Path(__file__).resolve().parents[1]


def tiny_run(out_dir, steps=6, **train_overrides) -> dict:
    return {
        "model": {"architecture": "mbt2018-mean", "N": 16, "M": 24},
        "loss": {"lmbda": 0.01},
        "data": {"kind": "tiny", "train_scenes": 32, "val_scenes": 2},
        "train": {"steps": steps, "batch_size": 4, "log_every": 1, "val_every": 3, "checkpoint_every": 2,
                  "warmup": 2, "device": "cpu", **train_overrides},
        "out_dir": str(out_dir),
    }


def test_config_errors_name_the_bad_value(tmp_path):
    with pytest.raises(ConfigError, match="schedule"):
        load_finetune_config(tiny_run(tmp_path, schedule="linear"))
    with pytest.raises(ConfigError, match="unknown key"):
        load_finetune_config({"train": {"stpes": 3}})
    with pytest.raises(ConfigError, match="no such config"):
        load_finetune_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="tiny-zoo recipe"):  # a recipe name resolves, and says how it is run
        load_finetune_config("tiny-lic")
    from itc_core.tinyworld.train_lic import load_lic_recipe

    zoo = load_lic_recipe()  # the shipped LIC recipe is a finetune run plus a λ per rate point
    assert load_finetune_config(zoo["run"]).model.architecture == "mbt2018-mean" and len(zoo["rate_points"]) >= 4


def test_schedule_warms_up_then_decays():
    spec = load_finetune_config({"train": {"steps": 100, "warmup": 10, "min_lr_ratio": 0.1}}).train
    factors = [lr_factor(spec, s) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] >= 0.1


def test_trains_validates_with_real_bytes_and_logs(tmp_path):
    result = train(load_finetune_config(tiny_run(tmp_path / "run")), quiet=True)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["step"] for r in rows if r["split"] == "train"] == [str(s) for s in range(1, 7)]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in val] == ["3", "6"] and float(val[-1]["bpp_real"]) > 0
    assert result["bpp_real"] == pytest.approx(float(val[-1]["bpp_real"]))
    state = load_file(tmp_path / "run" / "final.safetensors")
    assert "entropy_bottleneck._quantized_cdf" in state and state["entropy_bottleneck._quantized_cdf"].numel() > 0


def _cli(config: Path, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", "import torch; torch.set_num_threads(1); "
                             "from itc_core.cli import main; raise SystemExit(main())",
                             "finetune", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    steps = 40
    cfgs = {}
    for name in ("straight", "killed"):
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump(tiny_run(tmp_path / name, steps=steps, checkpoint_every=1000,
                                                      val_every=1000)))
    killed = _cli(cfgs["killed"])  # a user's `itc finetune` in its own process, stopped as a scheduler would
    metrics = tmp_path / "killed" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > 4:  # a few steps in, mid-"epoch"
            break
        time.sleep(0.1)
    killed.send_signal(signal.SIGTERM)
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == 2 and "rerun the same command to resume" in err, err
    stopped_at = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < stopped_at < steps
    assert torch.get_num_threads() == 1  # as in the killed process: the rerun and the straight run go on here
    assert main(["finetune", "--config", str(cfgs["killed"])]) == 0
    assert main(["finetune", "--config", str(cfgs["straight"])]) == 0
    a = load_file(tmp_path / "straight" / "final.safetensors")
    b = load_file(tmp_path / "killed" / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = [int(r["step"]) for r in csv.DictReader(metrics.open()) if r["split"] == "train"]
    assert logged == list(range(1, steps + 1))  # rows past the checkpoint were dropped, none twice


def test_a_run_in_stretches_records_each_stretch(tmp_path):
    cfg = load_finetune_config(tiny_run(tmp_path / "run", steps=6))
    train(cfg, quiet=True, stop_after=3)  # checkpoints at 2 and 3; a kill here would lose nothing more
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the second stretch "on another machine"
    try:
        train(cfg, quiet=True)
    finally:
        torch.set_num_threads(threads)
    segments = read_segments(tmp_path / "run")
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, 3), (3, 6)]
    assert all(s["device"] == "cpu" and s["seconds"] >= 0 and s["torch"] == torch.__version__ for s in segments)
    assert segments[1]["threads"] == 1
    train(cfg, quiet=True)  # a finished run re-read: no new stretch
    assert read_segments(tmp_path / "run") == segments
    (tmp_path / "run" / "checkpoint.pt").unlink()  # start over: the old stretches are gone with their steps
    train(cfg, quiet=True, stop_after=2)
    assert [(s["from_step"], s["to_step"]) for s in read_segments(tmp_path / "run")] == [(0, 2)]


def test_compiled_training_keeps_plain_checkpoints_and_resumes(tmp_path, monkeypatch):
    compiled, real_compile = [], torch.compile

    def eager_compile(model):  # dynamo's tracing with the eager backend: no inductor minutes of compiling
        compiled.append(type(model).__name__)
        return real_compile(model, backend="eager")
    monkeypatch.setattr(torch, "compile", eager_compile)
    cfg = load_finetune_config(tiny_run(tmp_path / "run", steps=2, compile=True))
    train(cfg, quiet=True)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert compiled and state["step"] == 2 and not any("_orig_mod" in k for k in state["net"])
    cfg.train.steps = 3
    train(cfg, quiet=True)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 3


def test_semantic_terms_report_by_name_and_give_gradients():
    spec = load_finetune_config({"loss": {"lmbda": 1.0, "clip": "tiny/clip",
                                          "kappa": {"mse": 0.5, "lpips": 0.2, "clip_iqa": 0.1, "clip_i2t": 0.2}}}).loss
    loss = build_loss(spec)
    x, captions = TinyScenes("train", 2).get(torch.arange(2), torch.Generator())
    x_hat = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_()
    out = loss({"x_hat": x_hat, "likelihoods": {"y": torch.full((2, 4), 0.5)}}, x, captions)
    for name in ("bpp", "mse", "lpips", "clip_iqa", "clip_i2t", "loss"):
        assert torch.isfinite(out[name])
    out["loss"].backward()
    assert x_hat.grad.abs().sum() > 0
    # The LPIPS-style distance of an image to itself is zero, and grows with the damage.
    lp = loss.terms["lpips"]
    gen = torch.Generator().manual_seed(0)
    light, heavy = ((x + s * torch.randn(x.shape, generator=gen)).clamp(0, 1) for s in (0.02, 0.3))
    assert float(lp(x, x)) == pytest.approx(0, abs=1e-6)
    assert 0 < float(lp(light, x)) < float(lp(heavy, x))


def test_l1_term_prefers_the_likelier_signal_where_mse_hedges():
    """Two equally coded targets, one plain and one with a dot in 1 of 10 images: the output that minimises MSE
    is the faint average (the dot grid), the one that minimises the L1 term is the plain background; the L1
    term is in 8-bit levels, needs no model, and ``build_loss`` makes it from the config alone."""
    targets = torch.zeros(10, 3, 4, 4)
    targets[0, :, 1, 1] = 42 / 255

    def best_guess(term, lr):
        guess = torch.zeros(1, 3, 4, 4, requires_grad=True)
        opt = torch.optim.SGD([guess], lr=lr)
        for _ in range(300):
            opt.zero_grad()
            term(guess.expand_as(targets), targets).backward()
            opt.step()
        return guess.detach()

    loss = build_loss(load_finetune_config({"loss": {"kappa": {"l1": 1.0}}}).loss)
    assert float(loss.terms["l1"](targets[:1], torch.zeros(1, 3, 4, 4))) == pytest.approx(42 / 16)
    assert float(best_guess(loss.terms["l1"], 1e-3)[0, 0, 1, 1]) * 255 == pytest.approx(0, abs=0.5)
    assert float(best_guess(CodecLoss(1.0, {"mse": 1.0}).terms["mse"], 1e-5)[0, 0, 1, 1]) * 255 == pytest.approx(4.2, abs=0.2)



def test_periodic_term_sees_a_faint_lattice_that_mse_barely_weighs():
    """A 4-level dot on every 8-px tile (a faint grid over a whole background) lands whole in the periodic term,
    a colour offset not at all, and one 40-level blob in one tile of 64 almost not: the term singles out what
    repeats. ``loss.period`` sets the tile; sides that are not multiples of it are cropped."""
    x = torch.zeros(1, 3, 64, 64)
    grid = x.clone()
    grid[:, :, 4::8, 4::8] = 4 / 255
    blob = x.clone()
    blob[:, :, 4, 4] = 40 / 255
    term = build_loss(load_finetune_config({"loss": {"kappa": {"mse": 1.0, "periodic": 1.0}}}).loss).terms["periodic"]
    mse = CodecLoss(1.0, {"mse": 1.0}).terms["mse"]
    assert float(term(grid, x)) == pytest.approx(float(mse(grid, x)) * 63 / 64, rel=1e-4)  # the tile's mean is an offset
    assert float(term(x + 0.1, x)) == pytest.approx(0, abs=1e-6)
    assert float(term(blob, x)) == pytest.approx(float(mse(blob, x)) / 64 * 63 / 64, rel=1e-4)
    assert float(term(grid[..., :63, :61], x[..., :63, :61])) == pytest.approx(float(term(grid[..., :56, :56], x[..., :56, :56])))
    sixteen = build_loss(load_finetune_config({"loss": {"kappa": {"periodic": 1.0}, "period": 16}}).loss).terms["periodic"]
    assert sixteen.period == 16 and float(sixteen(grid, x)) == pytest.approx(float(term(grid, x)), rel=1e-4)
    with pytest.raises(ValueError, match="smaller than the period 16"):
        sixteen(grid[..., :8, :8], x[..., :8, :8])
    for bad in ({"period": 0}, {"period": 2.5}, {"periodic_target_max": -1}, {"periodic_target_max": "plain"}):
        with pytest.raises(ConfigError, match="loss.period"):
            load_finetune_config({"loss": {"kappa": {"periodic": 1.0}, **bad}})


def test_periodic_term_can_skip_targets_that_repeat_themselves():
    """With ``periodic_target_max`` the term asks a codec not to invent a lattice on a plain target, and leaves
    alone one that is patterned itself (its stripes drawn too faintly are MSE's business)."""
    plain = torch.zeros(2, 3, 64, 64)
    striped = plain.clone()
    striped[:, :, ::8] = 42 / 255
    invented = plain.clone()
    invented[:, :, 4::8, 4::8] = 4 / 255
    spec = {"loss": {"kappa": {"periodic": 1.0}, "periodic_target_max": 50}}
    term = build_loss(load_finetune_config(spec).loss).terms["periodic"]
    every = PeriodicErrorTerm(8)
    assert float(term(invented, plain)) == pytest.approx(float(every(invented, plain)))
    assert float(every(striped / 2, striped)) > 1 and float(term(striped / 2, striped)) == 0
    both = torch.cat([plain[:1], striped[:1]]), torch.cat([invented[:1], striped[:1] / 2])
    assert float(term(both[1], both[0])) == pytest.approx(float(every(invented[:1], plain[:1])) / 2)  # a mean per image

def test_missing_semantic_weights_raise_naming_them(tmp_path):
    with pytest.raises(WeightsError, match="nowhere"):
        build_loss(load_finetune_config({"loss": {"clip": str(tmp_path / "nowhere"),
                                                  "kappa": {"mse": 1.0, "clip_i2t": 0.2}}}).loss)
    with pytest.raises(WeightsError, match="need a CLIP"):
        build_loss(load_finetune_config({"loss": {"kappa": {"mse": 1.0, "lpips": 0.2}}}).loss)
    with pytest.raises(ValueError, match="unknown loss terms"):
        CodecLoss(1.0, {"psnr": 1.0})
    with pytest.raises(ConfigError, match="unknown terms \\['l2'\\]"):
        build_loss(load_finetune_config({"loss": {"kappa": {"mse": 1.0, "l2": 1.0}}}).loss)


@pytest.mark.skipif(sys.platform != "linux", reason="accelerate's CPU multi-process launch")
@pytest.mark.slow
def test_accelerate_two_cpu_processes_run_one_short_epoch(tmp_path, main_process_port, communicate):
    """``accelerate launch --cpu --num_processes 2``: accelerate 1.15 starts the two processes through mpirun
    (the ``mpich`` wheel's) and a hostfile; without one it would start ONE process. test_evalrun launches
    ``--multi_gpu`` (torchrun, gloo), the other way to run several CPU processes."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(tmp_path / "ddp", steps=4, val_every=4)))
    bin_dir = Path(sys.executable).parent
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])  # accelerate runs `mpirun` by name
    if not shutil.which("mpirun", path=path):
        pytest.skip("accelerate launch --cpu --num_processes 2 launches through mpirun, which is not installed")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost\n")  # plain host names: both MPICH (host:n) and Open MPI (slots=n) read it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": path}
    proc = subprocess.Popen([str(bin_dir / "accelerate"), "launch", "--cpu", "--num_processes", "2",
                             "--mpirun_hostfile", str(hostfile), "--num_machines", "1",
                             "--main_process_port", main_process_port, "--mixed_precision", "no",
                             "--dynamo_backend", "no", "-m", "itc_core.cli", "finetune", "--config", str(cfg)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _, stderr = communicate(proc, 300)
    assert proc.returncode == 0, stderr[-2000:]
    assert "ddp: 2 processes, 2 samples each per step" in stderr
    rows = list(csv.DictReader((tmp_path / "ddp" / "metrics.csv").open()))
    assert [r["step"] for r in rows if r["split"] == "train"] == ["1", "2", "3", "4"]  # logged once, by rank 0
    assert (tmp_path / "ddp" / "final.safetensors").exists()


def test_a_finetune_run_exports_as_a_rate_point_of_a_lic_folder(tmp_path, capsys):
    """``itc finetune --export FOLDER --quality Q``: the run's weights ship as float16 with a manifest entry that
    a preset (or ``finetune_compare.py --lic``) reads; a second point merges into the same manifest."""
    import json

    import yaml

    from itc_core.cli import main
    from itc_core.image_codec import ImageCodec

    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump(tiny_run(tmp_path / "out", steps=2)))
    folder = tmp_path / "lic"
    assert main(["finetune", "--config", str(run), "--export", str(folder)]) == 2
    assert "go together" in capsys.readouterr().err and not (tmp_path / "out").exists()  # refused before training
    for q in (2, 3):
        assert main(["finetune", "--config", str(run), "--export", str(folder), "--quality", str(q)]) == 0
    models = json.loads((folder / "manifest.json").read_text())["models"]
    assert sorted(models) == ["2", "3"] and models["3"]["run"]["loss"]["lmbda"] == 0.01
    assert models["3"]["command"].endswith(f"--export {folder} --quality 3") and models["3"]["test"]["scenes"] == 100
    from itc_core.config import ImageCodecConfig

    cfg = ImageCodecConfig(N=16, M=24, qualities=[3], weights=str(folder / "mbt2018-mean-q{quality}.safetensors"))
    codec = ImageCodec.from_config(cfg, 3)
    payload = codec.compress(torch.rand(1, 3, 64, 64))
    assert codec.decompress(payload.strings, 64, 64).shape == (1, 3, 64, 64)
