"""Train the tiny world's learned image codecs (``itc tiny-zoo --only lic``).

A recipe of the training loop (:mod:`itc_core.finetune`): the YAML
``itc_core/recipes/tiny-lic.yaml`` holds one ``itc finetune`` run and a λ per
rate point; each rate point is trained from scratch with plain rate-distortion
loss (so the points can train in parallel processes or on a GPU), then
exported (float16 safetensors with CDF tables built from the rounded weights)
into ``data/tiny/lic/`` and measured with *real* entropy-coded bytes on
held-out test scenes, which is what the rate points are named by. Every run
checkpoints into ``workdir`` and resumes where it stopped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..config import read_yaml
from ..errors import WeightsError
from ..finetune import RECIPE_DIR, export_lic, load_finetune_config, read_segments, train
from ..image_codec import ImageCodec, build_model, load_weights
from ..metrics import psnr
from .checkpoint import command_line, files_tag
from .scenes import batch, split_seeds

__all__ = ["load_lic_recipe", "train_lic_zoo", "train_semantic_zoo", "semantic_run", "matched_lambda", "measure_lic", "RECIPE"]

RECIPE = RECIPE_DIR / "tiny-lic.yaml"


def _widths(run: dict, sizes: dict, quality: int) -> dict:
    """Rate point ``quality``'s N and M: its own ``sizes`` over the run's model."""
    return {**{k: run.get("model", {}).get(k) for k in ("N", "M")}, **sizes.get(quality, {})}


def _widens(source: dict, target: dict) -> bool:
    """Whether weights of widths ``source`` can start a model of widths ``target`` (same N, M kept or widened)."""
    return source["N"] == target["N"] and (source["M"] or 0) <= (target["M"] or 0)


def load_lic_recipe(overrides: dict | None = None, path: str | Path = RECIPE) -> dict:
    """The zoo recipe: ``run`` (a finetune config dict), ``rate_points`` {quality: λ}, ``sizes`` {quality: {N, M}}
    for rate points whose widths differ from ``run.model``'s, ``starts`` {quality: quality it starts from} and
    ``train`` {quality: ``train`` keys of its own} for rate points fine-tuned from another, ``then`` {quality:
    {loss: .., train: ..}} for rate points trained again after their schedule with a loss and schedule of their
    own (from the first stage's weights, at the same λ; the second stage is what ships), and ``test_scenes``."""
    values = read_yaml(Path(path))
    rate_points, sizes, starts, trains, thens = {}, {}, {}, {}, {}
    for q, point in values.pop("rate_points").items():
        if isinstance(point, dict):  # {lambda: λ, N: .., M: .., from: q', train: {..}, then: {loss: {..}, train: {..}}}
            own = {k: v for k, v in point.items() if k in ("N", "M")}
            then = point.get("then", {})
            if "lambda" not in point or set(point) - {"lambda", "N", "M", "from", "train", "then"} or not all(
                    isinstance(v, int) and v > 0 for v in own.values()) or not isinstance(point.get("train", {}), dict) \
                    or not isinstance(then, dict) or set(then) - {"loss", "train"} \
                    or not all(isinstance(v, dict) for v in then.values()) or "lmbda" in then.get("loss", {}):
                raise ValueError(f"{path}: rate point {q} takes lambda, N, M, from, train and then (lambda required, N "
                                 f"and M positive integers, train a mapping, then {{loss: .., train: ..}} without a λ of its own), got {point}")
            if own:
                sizes[int(q)] = own
            if "from" in point:
                starts[int(q)] = int(point["from"])
            if point.get("train"):
                trains[int(q)] = dict(point["train"])
            if then:
                thens[int(q)] = {k: dict(v) for k, v in then.items()}
            point = point["lambda"]
        rate_points[int(q)] = float(point)
    for q, source in starts.items():
        if source not in rate_points or source >= q or not _widens(_widths(values, sizes, source),
                                                                  _widths(values, sizes, q)):
            raise ValueError(f"{path}: rate point {q} starts from {source}, which must be a lower rate point "
                             "of the same N and at most as many latent channels M")
    test_scenes = int(values.pop("test_scenes", 100))
    recipe = {"run": values, "rate_points": rate_points, "sizes": sizes, "starts": starts, "train": trains,
              "then": thens, "test_scenes": test_scenes}
    for key, value in (overrides or {}).items():
        if key in ("rate_points", "sizes", "starts", "then", "test_scenes"):
            recipe[key] = value
        elif isinstance(value, dict):
            recipe["run"].setdefault(key, {}).update(value)
            if key == "train":  # e.g. --steps: for every rate point, own schedules and second stages included
                for own in recipe["train"].values():
                    own.update(value)
                for stage in recipe["then"].values():
                    stage.setdefault("train", {}).update(value)
        else:
            recipe["run"][key] = value
    return recipe


def measure_lic(codec: ImageCodec, seeds) -> dict:
    """Mean real bits, estimated bits (per string), bpp and PSNR of ``codec`` on scenes ``seeds``."""
    images = torch.from_numpy(batch(seeds)).permute(0, 3, 1, 2).float() / 255
    real, est, psnrs = [], [], []
    for x in images:
        x = x[None]
        payload = codec.compress(x)
        x_hat = codec.decompress(payload.strings, payload.height, payload.width)
        real.append([8 * len(s) for s in payload.strings])
        est.append(payload.estimated_bits)
        psnrs.append(psnr(x, x_hat))
    real, est = np.array(real, float), np.array(est, float)
    pixels = images.shape[2] * images.shape[3]
    return {
        "scenes": len(images),
        "bpp_real": float(real.sum(1).mean() / pixels),
        "bpp_estimated": float(est.sum(1).mean() / pixels),
        "bits_real_per_string": dict(zip(codec.latent_names, real.mean(0).round(2).tolist())),
        "bits_estimated_per_string": dict(zip(codec.latent_names, est.mean(0).round(2).tolist())),
        "psnr_db": float(np.mean(psnrs)),
    }


@contextmanager
def _locked(path: Path):
    """An exclusive lock on the file ``path`` + ".lock": rate points may finish at once in parallel processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _export(run_dir: Path, quality: int, lmbda: float, run: dict, test_scenes: int, out_dir: Path,
            seconds: float) -> dict:
    cfg = load_finetune_config({k: v for k, v in run.items() if k not in ("loss", "out_dir")})
    spec = cfg.model
    net = build_model(spec.architecture, N=spec.N, M=spec.M)
    load_weights(net, run_dir / "final.safetensors")
    path = export_lic(net, out_dir / f"{spec.architecture}-q{quality}.safetensors")
    shipped = build_model(spec.architecture, N=spec.N, M=spec.M)
    load_weights(shipped, path)
    codec = ImageCodec(shipped, spec.architecture, quality)
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "lambda": lmbda,
        "N": spec.N,
        "M": spec.M,
        "train_seconds": round(seconds, 1),
        "test": measure_lic(codec, split_seeds("test", test_scenes)),
    }


def _update_manifest(path: Path, lock: Path, quality: int, entry: dict, fields: dict | None = None,
                     spread_environment: bool = False) -> None:
    """Put rate point ``quality``'s ``entry`` into the manifest ``path`` (points in order, top-level ``fields`` set),
    under the lock ``lock``, written whole or not at all. ``spread_environment``: an older manifest's one
    environment for all points goes into each point's entry."""
    with _locked(lock):
        manifest = json.loads(path.read_text()) if path.exists() else {"models": {}}
        manifest["models"][str(quality)] = entry
        manifest["models"] = dict(sorted(manifest["models"].items(), key=lambda kv: int(kv[0])))
        shared = manifest.pop("environment", None) if spread_environment else None
        for other in manifest["models"].values() if shared else ():
            other.setdefault("environment", shared)
        manifest.update(fields or {})
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.replace(path)


def export_point(run_dir: Path, quality: int, run: dict, out_dir: Path, config: str, test_scenes: int = 100) -> dict:
    """Ship an ``itc finetune`` run's final weights as rate point ``quality`` of the LIC folder ``out_dir``: the
    float16 file, measured on ``test_scenes`` test scenes, and its entry (with the run) merged into the manifest."""
    segments = read_segments(run_dir)
    entry = _export(run_dir, quality, run["loss"]["lmbda"], run, test_scenes, out_dir,
                    sum(s["seconds"] for s in segments))
    entry.update(segments=segments, run=run, command=f"itc finetune --config {config} --export {out_dir} "
                                                     f"--quality {quality}")
    _update_manifest(out_dir / "manifest.json", out_dir / "manifest", quality, entry)
    return entry


def _shipped_file(out_dir: Path, source: int, quality: int) -> Path:
    """The exported weights of rate point ``source`` in ``out_dir``, which rate point ``quality`` starts from."""
    manifest = out_dir / "manifest.json"
    entry = json.loads(manifest.read_text())["models"].get(str(source)) if manifest.exists() else None
    if entry is None or not (out_dir / entry["file"]).is_file():
        raise WeightsError(f"rate point {quality} starts from rate point {source}, which is not in {out_dir} "
                                f"yet: train it first (itc tiny-zoo --only lic --qualities {source})")
    return out_dir / entry["file"]


def _then_run(run: dict, run_dir: Path, then: dict) -> tuple[dict, Path]:
    """The finetune config and folder of a rate point's second stage (``then``): its own ``loss`` keys over the
    point's (but λ stays the point's: ``then.loss.lmbda`` is refused when the recipe is read), its own ``train``
    keys over the point's, starting from the first stage's final weights (float32, not the shipped float16 file);
    the folder is named after those weights, so a retrained first stage starts the second afresh."""
    final = (run_dir / "final.safetensors").resolve()
    then_dir = run_dir / f"then{files_tag([final])}"
    loss = {**run.get("loss", {}), **then.get("loss", {}), "lmbda": run["loss"]["lmbda"]}
    model = {**run["model"], "init": str(final), "widen": False}
    return dict(run, model=model, loss=loss, train={**run.get("train", {}), **then.get("train", {})},
                out_dir=str(then_dir)), then_dir


def train_lic_zoo(out_dir: Path, workdir: Path, recipe: dict | None = None, qualities: list[int] | None = None,
                  device: str | None = None, max_minutes: float | None = None, compile: bool = False) -> dict:
    """Train (or resume) the rate points ``qualities`` and export them with a manifest into ``out_dir``.

    ``compile`` runs the training step through ``torch.compile`` (a CPU run's speed-up). The run is as
    seeded and resumable as without it, but not the same numbers: inductor draws the quantisation noise
    with its own generator. The manifest records it.
    """
    recipe = recipe or load_lic_recipe()
    qualities = qualities or sorted(recipe["rate_points"])
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    for q in qualities:
        lmbda = recipe["rate_points"][q]
        widths = "".join(f"-{k}{v}" for k, v in sorted(recipe.get("sizes", {}).get(q, {}).items()))
        run_dir = workdir / f"q{q}{widths}"  # a point's own widths name its run: other widths start afresh
        run = dict(recipe["run"], model={**recipe["run"]["model"], **recipe.get("sizes", {}).get(q, {})},
                   loss={**recipe["run"].get("loss", {}), "lmbda": lmbda},
                   train={**recipe["run"].get("train", {}), **recipe.get("train", {}).get(q, {})})
        if q in recipe.get("starts", {}):
            start = _shipped_file(out_dir, recipe["starts"][q], q).resolve()
            run["model"]["init"] = str(start)
            source = _widths(recipe["run"], recipe.get("sizes", {}), recipe["starts"][q])
            if source != {k: run["model"].get(k) for k in ("N", "M")}:
                run["model"]["widen"] = True  # more latent channels than the point below (widen_latents)
            run_dir = workdir / f"q{q}{widths}{files_tag([start])}"  # a retrained point below starts it afresh
        run["out_dir"] = str(run_dir)
        if device or max_minutes or compile:
            run["train"] = {**run.get("train", {}), **({"device": device} if device else {}),
                            **({"max_minutes": max_minutes} if max_minutes else {}),
                            **({"compile": True} if compile else {})}
        t0 = time.time()
        result = train(load_finetune_config(run))
        segments = read_segments(run_dir)  # a resumed run's stretches may come from other machines
        first, then = result, None
        if q in recipe.get("then", {}) and result["steps"] < result["planned_steps"]:
            print(f"rate point {q}: its schedule stopped at step {result['steps']} of {result['planned_steps']}; "
                  "the second stage (then) waits until it is finished (rerun to resume)", file=sys.stderr)
        elif q in recipe.get("then", {}):  # a second stage with its own loss and schedule, from the first's weights
            run, run_dir = _then_run(run, run_dir, recipe["then"][q])
            result = train(load_finetune_config(run))
            then = {"steps": result["steps"], "planned_steps": result["planned_steps"], "loss": run["loss"],
                    "train": run["train"], "segments": read_segments(run_dir)}
        entry = _export(run_dir, q, lmbda, run, recipe["test_scenes"], out_dir, time.time() - t0)
        entry["steps"], entry["planned_steps"] = first["steps"], first["planned_steps"]
        if then:
            entry["then"] = then
        if segments:
            entry["train_seconds"] = round(sum(s["seconds"] for s in segments), 1)
            entry["segments"] = segments
        entry["environment"] = {  # where this point was exported and measured (segments: where it was trained)
            "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "device": device or "auto", "threads": torch.get_num_threads(), "compile": compile,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        _update_manifest(manifest_path, workdir / "manifest", q, entry, spread_environment=True, fields={
            "recipe": {"run": recipe["run"], "rate_points": recipe["rate_points"],
                       "sizes": recipe.get("sizes", {}), "starts": recipe.get("starts", {}),
                       "train": recipe.get("train", {}), "then": recipe.get("then", {}),
                       "test_scenes": recipe["test_scenes"]},
            "command": command_line(),
            "data": {"test_seeds": [split_seeds("test", recipe["test_scenes"])[0],
                                    split_seeds("test", recipe["test_scenes"])[-1]]},
        })
    return json.loads(manifest_path.read_text())


SEMANTIC_RECIPE = RECIPE_DIR / "tiny-lic-semantic.yaml"


@torch.no_grad()
def matched_lambda(net, loss_spec, lmbda_rd: float, scenes: int = 64) -> tuple[float, dict]:
    """λ for the semantic loss so that the base ``net``'s distortion keeps the weight it had in training.

    The base minimised ``bpp + λ_rd·255²·MSE``; the semantic loss is ``bpp + λ·Σκ·D``; on ``scenes``
    training scenes, λ = λ_rd·255²·MSE / Σκ·D makes both distortion terms equal at the start.
    """
    from ..finetune import TinyScenes, build_loss

    data = TinyScenes("train", scenes)
    x, captions = data.get(torch.arange(scenes), torch.Generator())
    loss = build_loss(loss_spec)
    out = loss(net.eval()(x), x, captions)
    mse = float(torch.nn.functional.mse_loss(net(x)["x_hat"], x))
    terms = {name: float(out[name]) for name in loss.terms}
    return lmbda_rd * 255 ** 2 * mse / float(out["distortion"]), {"mse": mse, **terms}


def semantic_run(quality: int, base_dir: Path | None = None, out_dir: str | Path = "outputs/finetune/semantic",
                 kappa: dict | None = None, **train_overrides):
    """The fine-tune config of base rate point ``quality`` from the semantic recipe, with its matched λ.

    ``kappa`` replaces the recipe's term weights (ablations); ``train_overrides`` its ``train`` keys.
    The run folder is ``out_dir`` with the base weights' :func:`files_tag` appended, so that a retrained base
    starts a new fine-tune there instead of meeting the old one's checkpoint.
    Returns ``(config, base manifest entry, base terms at the start)``.
    """
    from ..config import data_dir

    base_dir = Path(base_dir) if base_dir else data_dir() / "tiny" / "lic"
    base = json.loads((base_dir / "manifest.json").read_text())["models"][str(quality)]
    values = read_yaml(SEMANTIC_RECIPE)
    for key in ("qualities", "lambda", "test_scenes"):
        values.pop(key, None)
    values["model"]["init"] = str(base_dir / base["file"])
    out_dir = Path(out_dir)
    out_dir = out_dir.with_name(out_dir.name + files_tag([base_dir / base["file"]]))
    values["model"].update({k: base[k] for k in ("N", "M") if k in base})  # a base point with its own widths
    values["out_dir"] = str(out_dir)
    if kappa is not None:
        values["loss"]["kappa"] = dict(kappa)
    values["train"].update({k: v for k, v in train_overrides.items() if v is not None})
    cfg = load_finetune_config(values)
    start_net = build_model(cfg.model.architecture, N=cfg.model.N, M=cfg.model.M)
    load_weights(start_net, base_dir / base["file"])
    cfg.loss.lmbda, at_start = matched_lambda(start_net, cfg.loss, base["lambda"])
    return cfg, base, at_start


def train_semantic_zoo(out_dir: Path, base_dir: Path, workdir: Path, qualities: list[int] | None = None,
                       device: str | None = None, max_minutes: float | None = None, steps: int | None = None) -> dict:
    """Fine-tune the base rate points in ``base_dir`` with the semantic-perceptual loss; export into ``out_dir``."""
    recipe_values = read_yaml(SEMANTIC_RECIPE)
    qualities = qualities or recipe_values["qualities"]
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    for q in qualities:
        cfg, base, at_start = semantic_run(q, base_dir, workdir / f"q{q}", device=device, max_minutes=max_minutes,
                                           steps=steps)
        run_dir = Path(cfg.out_dir)  # q{q}-<base tag>
        t0 = time.time()
        result = train(cfg)
        entry = _export(run_dir, q, cfg.loss.lmbda, asdict(cfg), recipe_values["test_scenes"], out_dir,
                        time.time() - t0)
        entry.update(steps=result["steps"], planned_steps=result["planned_steps"], base_lambda=base["lambda"],
                     base_terms=at_start)
        _update_manifest(manifest_path, workdir / "manifest", q, entry, fields={
            "recipe": SEMANTIC_RECIPE.name, "base": "tiny/lic", "command": command_line(),
            "environment": {"python": sys.version.split()[0], "torch": torch.__version__, "device": device or "auto",
                            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}})
    return json.loads(manifest_path.read_text())
