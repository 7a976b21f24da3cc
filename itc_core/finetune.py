"""Train or fine-tune any CompressAI image codec: ``itc finetune --config FILE``.

A run is one YAML file (recipes under version control in ``itc_core/recipes/``)::

    model:  {architecture: mbt2018-mean, N: 64, M: 96}        # or quality + pretrained, or init: ckpt
    loss:   {lmbda: 0.006, kappa: {mse: 1.0}}                  # or the semantic-perceptual terms
    data:   {kind: tiny, train_scenes: 50000, val_scenes: 20}   # or folder (+ captions CSV), or coco
    train:  {steps: 20000, batch_size: 32, lr: 5e-4, schedule: cosine, warmup: 500}
    out_dir: outputs/finetune/my-run

and ``itc finetune --config run.yaml`` trains it with CompressAI's two
optimisers (main, and auxiliary for the entropy bottleneck's quantiles),
gradient clipping and a warm-up + cosine (or step) learning-rate schedule.
Every ``val_every`` steps the codec is validated with **real bytes**
(``compress``/``decompress``), not only likelihoods; train and validation
figures go to ``out_dir/metrics.csv``, tqdm shows progress.

Resuming: the randomness of step ``s`` (batch, augmentation, quantisation
noise) derives from ``(seed, s)`` alone, so a run that restarts from its last
checkpoint repeats exactly what an uninterrupted run does. Checkpoints are
written every ``checkpoint_every`` steps and, on SIGTERM or Ctrl-C, right
after the step in flight; rerunning the same command resumes.

Several processes or GPUs: the same command under ``accelerate launch``
(e.g. ``accelerate launch --multi_gpu --num_processes 2 -m itc_core.cli finetune
--config run.yaml``, which starts torchrun processes with the gloo backend on a machine without
GPUs); each process takes its share of every global batch. accelerate 1.15's ``--cpu
--num_processes 2`` starts several processes only through ``mpirun`` (with ``--mpirun_hostfile``);
without it, it silently starts one.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import build_dataclass, merge_dicts, read_yaml
from .errors import ConfigError, ItcError
from .losses import PIXEL_TERMS, TERMS, CodecLoss, PeriodicErrorTerm

__all__ = ["FinetuneConfig", "load_finetune_config", "train", "export_lic", "TrainingInterrupted"]

RECIPE_DIR = Path(__file__).parent / "recipes"


@dataclass
class ModelSpec:
    """Which codec to start from: a zoo architecture (custom-sized with N/M), optionally zoo or checkpoint weights."""

    architecture: str = "mbt2018-mean"
    quality: int = 1
    N: int | None = None
    M: int | None = None
    pretrained: bool = False
    metric: str = "mse"
    init: str | None = None  # a safetensors or weights_only checkpoint to start from
    widen: bool = False  # init may have fewer latent channels M than this model (mbt2018-mean): widen_latents


@dataclass
class LossSpec:
    """``bpp + lmbda·Σ kappa[t]·term_t``; terms other than ``mse`` and ``l1`` need ``clip`` (a CLIPModel folder or hub id)."""

    lmbda: float = 0.01
    kappa: dict = field(default_factory=lambda: {"mse": 1.0})
    clip: str | None = None
    lpips: str = "clip"  # "clip": LPIPS-style distance on the CLIP vision tower; or "alex"/"vgg" (lpips package)
    mse_scale: float = 65025.0  # 255²: λ on CompressAI's scale; 1: MSE on [0, 1] pixels as in the paper
    period: int = 8  # the ``periodic`` term's tile, in pixels (8: the tiny world's patterns; 16: mbt2018's latent stride)
    periodic_target_max: float | None = None  # the ``periodic`` term counts 0 for targets that repeat more than this
    # themselves (their own folded energy; in the tiny world plain and checkered backgrounds, whose 16-px period folds
    # away on an 8-px tile, stay under 25; dotted and striped ones exceed 100); the term is still a mean over the batch


@dataclass
class DataSpec:
    """Training images: ``tiny`` (seeded scenes), ``folder`` (images + optional captions CSV) or ``coco``."""

    kind: str = "tiny"
    train_scenes: int = 20000
    val_scenes: int = 20
    root: str | None = None           # folder: images; coco: the image folder
    val_root: str | None = None       # folder/coco: validation images (default: the first images of root)
    captions: str | None = None       # folder: a captions CSV (paper format); coco: the annotations JSON
    val_captions: str | None = None
    patch: int = 64                   # random crop size for folder/coco images


@dataclass
class TrainSpec:
    """Optimisation and bookkeeping."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 5e-4
    aux_lr: float = 1e-3
    clip_grad: float = 1.0
    schedule: str = "cosine"  # cosine | step | constant
    warmup: int = 0
    min_lr_ratio: float = 0.02
    seed: int = 0
    log_every: int = 50
    val_every: int = 1000
    checkpoint_every: int = 250
    device: str = "auto"  # auto | cpu | cuda
    augment: bool = True  # flips and quarter turns (tiny scenes and crops)
    max_minutes: float | None = None  # stop early (checkpointed, reported as such) after this much training time
    compile: bool = False  # torch.compile the model's forward: about 25 % more steps/s on one CPU thread
    # (CPU only, as measured: on an H200 with torch 2.11 the compiled backward failed a stride check)


@dataclass
class FinetuneConfig:
    """A whole training run."""

    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    out_dir: str = "outputs/finetune/run"


class TrainingInterrupted(ItcError):
    """Raised after SIGTERM/SIGINT once the step in flight is checkpointed; rerun the command to resume."""


def load_finetune_config(source: str | Path | dict, overrides: dict | None = None) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from a YAML path, a recipe name under ``itc_core/recipes`` or a dict."""
    if isinstance(source, dict):
        values = source
    else:
        path = Path(source)
        if not path.is_file() and (RECIPE_DIR / f"{source}.yaml").is_file():
            path = RECIPE_DIR / f"{source}.yaml"
        if not path.is_file():
            raise ConfigError(f"{source}: no such config file (a run YAML; the docstring of itc_core/finetune.py "
                              "shows one)")
        values = read_yaml(path)
        zoo_keys = sorted({"rate_points", "qualities", "lambda", "test_scenes"} & set(values))
        if zoo_keys:
            raise ConfigError(f"{source} is a tiny-zoo recipe ({', '.join(zoo_keys)}: several runs): train it with "
                              "`itc tiny-zoo --only lic` or `--only lic-semantic`")
    cfg = build_dataclass(FinetuneConfig, merge_dicts(values, overrides or {}), str(source) if not isinstance(source, dict) else "config")
    if cfg.train.schedule not in ("cosine", "step", "constant"):
        raise ConfigError(f"train.schedule {cfg.train.schedule!r}; valid: cosine, step, constant")
    if cfg.data.kind not in ("tiny", "folder", "coco"):
        raise ConfigError(f"data.kind {cfg.data.kind!r}; valid: tiny, folder, coco")
    if cfg.train.steps < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.steps and train.batch_size must be positive")
    limit = cfg.loss.periodic_target_max
    if not isinstance(cfg.loss.period, int) or isinstance(cfg.loss.period, bool) or cfg.loss.period < 1 or (
            limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0)):
        raise ConfigError(f"loss.period must be a positive integer (pixels) and loss.periodic_target_max a number "
                          f">= 0 or null, got {cfg.loss.period!r} and {limit!r}")
    return cfg


# ------------------------------------------------------------------ data

class TinyScenes:
    """Seeded tiny-world scenes held in memory as uint8, with their captions."""

    def __init__(self, split: str, count: int):
        from .tinyworld.scenes import batch, caption, generate_scene, split_seeds

        seeds = split_seeds(split, count)
        self.images = torch.from_numpy(batch(seeds)).permute(0, 3, 1, 2).contiguous()
        self.captions = [caption(generate_scene(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.images)

    def get(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """The images ``idx`` as float (B, 3, 64, 64) in [0, 1] and their captions."""
        return self.images[idx].float() / 255, [self.captions[i] for i in idx.tolist()]


class ImageFiles:
    """Images from a folder (captions from a CSV, optional) or COCO captions; random crops of ``patch`` pixels."""

    SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")

    def __init__(self, kind: str, root: str, captions: str | None, patch: int):
        if not root or not Path(root).is_dir():
            raise ConfigError(f"data.root {root!r} is not a folder of images")
        self.patch = patch
        if kind == "coco":
            from torchvision.datasets import CocoCaptions

            if not captions:
                raise ConfigError("data.kind coco needs data.captions: the annotations JSON (captions_train2017.json)")
            self.coco = CocoCaptions(root, captions)
            self.files, self.csv = None, None
        else:
            self.coco = None
            self.files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in self.SUFFIXES)
            if not self.files:
                raise ConfigError(f"data.root {root}: no images ({', '.join(self.SUFFIXES)})")
            from .captioner import CsvCaptions

            self.csv = CsvCaptions(captions) if captions else None

    def __len__(self) -> int:
        return len(self.coco) if self.coco is not None else len(self.files)

    def _item(self, i: int, gen: torch.Generator):
        from .data import load_image

        if self.coco is not None:
            image, texts = self.coco[i]
            image = image.convert("RGB")
            text = texts[int(torch.randint(len(texts), (1,), generator=gen))] if texts else ""
        else:
            image = load_image(self.files[i])[0]
            text = self.csv[self.files[i].name] if self.csv is not None else ""
        return image, text

    def get(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """Random ``patch``-pixel crops (replicate-padded when smaller) of images ``idx`` and their captions."""
        from .data import image_to_tensor

        crops, texts = [], []
        for i in idx.tolist():
            image, text = self._item(i, gen)
            x = image_to_tensor(image)
            pad_h, pad_w = max(0, self.patch - x.shape[2]), max(0, self.patch - x.shape[3])
            if pad_h or pad_w:
                x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            top = int(torch.randint(x.shape[2] - self.patch + 1, (1,), generator=gen))
            left = int(torch.randint(x.shape[3] - self.patch + 1, (1,), generator=gen))
            crops.append(x[0, :, top:top + self.patch, left:left + self.patch])
            texts.append(text)
        return torch.stack(crops), texts


def build_datasets(spec: DataSpec):
    """(train, validation) datasets of ``spec``."""
    if spec.kind == "tiny":
        return TinyScenes("train", spec.train_scenes), TinyScenes("test", spec.val_scenes)
    train_set = ImageFiles(spec.kind, spec.root, spec.captions, spec.patch)
    val_set = ImageFiles(spec.kind, spec.val_root or spec.root, spec.val_captions or spec.captions, spec.patch)
    return train_set, val_set


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if torch.rand(1, generator=gen) < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, int(torch.randint(4, (1,), generator=gen)), dims=(-2, -1))


# ------------------------------------------------------------------ model, loss, schedule

def build_codec_model(spec: ModelSpec) -> torch.nn.Module:
    """The CompressAI network of ``spec``, with ``init`` weights when given."""
    from .image_codec import build_model, load_weights

    net = build_model(spec.architecture, spec.quality, pretrained=spec.pretrained and not spec.init,
                      metric=spec.metric, N=spec.N, M=spec.M)
    if spec.init:
        from .config import resolve_path

        load_weights(net, resolve_path(spec.init), widen=spec.widen)
    return net


def build_loss(spec: LossSpec) -> CodecLoss:
    """The loss of ``spec``; the semantic terms load their models here (errors name the missing weights)."""
    unknown = sorted(set(spec.kappa) - set(TERMS))
    if unknown:  # before any model is loaded for the others
        raise ConfigError(f"loss.kappa names unknown terms {unknown}; valid: {', '.join(TERMS)}")
    terms = {}
    semantic = [t for t, k in spec.kappa.items() if k and t not in PIXEL_TERMS]
    if semantic:
        from .semantic_losses import build_semantic_terms

        terms = build_semantic_terms(semantic, clip=spec.clip, lpips=spec.lpips)
    if spec.kappa.get("periodic"):
        terms["periodic"] = PeriodicErrorTerm(spec.period, target_max=spec.periodic_target_max)
    return CodecLoss(spec.lmbda, spec.kappa, terms, mse_scale=spec.mse_scale)


def lr_factor(spec: TrainSpec, step: int) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine (or ×0.1 at 80 %) down to ``min_lr_ratio``."""
    if step < spec.warmup:
        return (step + 1) / spec.warmup
    if spec.schedule == "constant":
        return 1.0
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    if spec.schedule == "step":
        return 1.0 if progress < 0.8 else 0.1
    return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# ------------------------------------------------------------------ validation and export

@torch.no_grad()
def validate(net: torch.nn.Module, dataset, architecture: str, max_images: int = 64) -> dict:
    """Real-bytes figures of ``net`` (a copy is coded on the CPU): bpp of the entropy-coded strings, PSNR."""
    from .image_codec import ImageCodec
    from .metrics import psnr

    coder = copy.deepcopy(net).float().cpu()
    coder.update(force=True)  # tables from the current weights, never stale ones from a loaded checkpoint
    codec = ImageCodec(coder, architecture, 0)
    gen = torch.Generator().manual_seed(0)
    bits, pixels, psnrs = 0, 0, []
    for i in range(min(len(dataset), max_images)):
        x, _ = dataset.get(torch.tensor([i]), gen)
        payload = codec.compress(x)
        x_hat = codec.decompress(payload.strings, payload.height, payload.width)
        bits += payload.bits
        pixels += x.shape[2] * x.shape[3]
        psnrs.append(psnr(x, x_hat))
    return {"bpp_real": bits / pixels, "psnr_db": float(np.mean(psnrs))}


def export_lic(net: torch.nn.Module, path: Path) -> Path:
    """Save ``net`` for shipping: float16 weights, CDF tables built from exactly those rounded weights
    (the GaussianConditional's, derived from its scale table alone, as a checksum: ``strip_gaussian_tables``)."""
    from safetensors.torch import save_file

    from .image_codec import strip_gaussian_tables

    net = copy.deepcopy(net).float().cpu()
    params = {name for name, _ in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.half().float())
    net.eval().update(force=True)
    state = {k: (v.half() if k in params else v).contiguous() for k, v in net.state_dict().items()}
    state, checksums = strip_gaussian_tables(state)  # rebuilt (and checked) by load_weights
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    save_file(state, str(tmp), metadata=checksums)
    tmp.replace(path)
    return path


# ------------------------------------------------------------------ the loop

class _Csv:
    """``metrics.csv``: one row per logged step; on resume, rows past the checkpoint are dropped."""

    FIELDS = ["step", "split", "loss", "bpp", "distortion", "mse", "l1", "periodic", "lpips", "clip_iqa", "clip_i2t",
              "lr", "aux_loss", "bpp_real", "psnr_db", "seconds"]

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists() and resume_step:
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.FIELDS, extrasaction="ignore").writerow(row)


def _init_tag(spec: ModelSpec) -> str:
    """What the run starts from, as the checkpoint records it: the digest of ``model.init`` ("" when none)."""
    if not spec.init:
        return ""
    from .config import resolve_path
    from .tinyworld.checkpoint import files_tag

    return files_tag([resolve_path(spec.init)])


def _save(path: Path, step: int, net, opt, aux_opt, init: str = "") -> None:
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(), "step": step,
             "init": init}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


class _Segments:
    """``segments.json`` in a run folder: where and how each stretch of steps was trained.

    A resumed run can span machines (a lent GPU, then a CPU), so the exporting process's own environment
    says nothing about the training. Each process's stretch is rewritten at every checkpoint; stretches
    past the checkpoint it resumed from were lost and are cut there.
    """

    def __init__(self, path: Path, start: int, acc, t: "TrainSpec"):
        import platform

        prior = json.loads(path.read_text()) if path.exists() else []
        self.path, self.t0 = path, time.time()
        self.prior = [{**s, "to_step": min(s["to_step"], start)} for s in prior if s["from_step"] < start]
        cuda = acc.device.type == "cuda"
        self.entry = {"from_step": start, "to_step": start, "seconds": 0.0, "device": acc.device.type,
                      "gpu": torch.cuda.get_device_name(acc.device) if cuda else None,
                      "processes": acc.num_processes, "threads": torch.get_num_threads(), "compile": t.compile,
                      "torch": torch.__version__, "python": sys.version.split()[0], "platform": platform.platform()}

    def update(self, step: int) -> None:
        """Record that this process has trained (and checkpointed) up to ``step``."""
        self.entry.update(to_step=step, seconds=round(time.time() - self.t0, 1))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.prior + [self.entry], indent=1) + "\n")
        tmp.replace(self.path)


def read_segments(run_dir: Path) -> list[dict]:
    """The training stretches of the run in ``run_dir`` (see :class:`_Segments`); empty for older runs."""
    path = Path(run_dir) / "segments.json"
    return json.loads(path.read_text()) if path.exists() else []


def _load(path: Path, net, opt, aux_opt, init: str = "") -> int:
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("init", init) != init:  # (checkpoints from before this record are taken as they are)
        raise ConfigError(f"{path} belongs to a run that started from other weights than model.init (retrained "
                          "since?): pick another out_dir, or delete that folder to start again")
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    aux_opt.load_state_dict(state["aux_opt"])
    return int(state["step"])


def train(cfg: FinetuneConfig, *, quiet: bool = False, stop_after: int | None = None) -> dict:
    """Train ``cfg`` (resuming from ``out_dir/checkpoint.pt``); returns the last validation figures.

    The final weights are ``out_dir/final.safetensors`` (float32, CDF tables built);
    :func:`export_lic` makes the float16 file the presets ship. ``stop_after`` stops
    (checkpointed, as SIGTERM would) after that step: training in chunks.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from compressai.optimizers import net_aux_optimizer

    t = cfg.train
    cpu = t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available())
    acc = Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"

    torch.manual_seed(t.seed)  # the initial weights
    net = build_codec_model(cfg.model)
    criterion = build_loss(cfg.loss).to(acc.device)
    optimizers = net_aux_optimizer(net, {"net": {"type": "Adam", "lr": t.lr}, "aux": {"type": "Adam", "lr": t.aux_lr}})
    opt, aux_opt = optimizers["net"], optimizers["aux"]
    train_set, val_set = build_datasets(cfg.data)
    if t.compile and acc.num_processes > 1:
        raise ConfigError("train.compile is for single-process runs (a CPU thread's speed-up); "
                          "leave it out under accelerate launch")
    if t.batch_size % acc.num_processes:
        raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by {acc.num_processes} processes")
    net = net.to(acc.device)
    model, opt = acc.prepare(net, opt)
    inner = acc.unwrap_model(model)
    forward = torch.compile(model) if t.compile else model  # shares the weights: checkpoints stay plain
    init = _init_tag(cfg.model)
    start = _load(ckpt, inner, getattr(opt, "optimizer", opt), aux_opt, init)  # after prepare: resumes bit-exactly
    aux_params = [p for n, p in inner.named_parameters() if n.endswith(".quantiles")]
    # Clip only what the main optimiser steps: the quantiles still hold the last auxiliary gradient.
    main_params = [p for n, p in inner.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    for state in aux_opt.state.values():  # resumed Adam moments live on the CPU
        for k, v in state.items():
            if torch.is_tensor(v) and k != "step":
                state[k] = v.to(acc.device)

    log = _Csv(out / "metrics.csv", start) if acc.is_main_process else None
    segments = _Segments(out / "segments.json", start, acc, t) if acc.is_main_process and start < t.steps else None
    if acc.num_processes > 1 and acc.is_main_process:
        print(f"{out.name}: {acc.num_processes} processes, {t.batch_size // acc.num_processes} samples each per step",
              file=sys.stderr)
    stop = {"signal": None}
    handlers = {s: signal.signal(s, lambda sig, _: stop.update(signal=sig)) for s in (signal.SIGTERM, signal.SIGINT)}
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc=Path(cfg.out_dir).name,
               disable=quiet or not acc.is_main_process, mininterval=2)
    t0, last_val, stopped_early = time.time(), {}, None
    try:
        model.train()
        for step in bar:
            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
            idx = torch.randint(len(train_set), (t.batch_size,), generator=gen)
            x, captions = train_set.get(idx, gen)
            if t.augment:
                x = _augment(x, gen)
            share = slice(acc.process_index, None, acc.num_processes)
            x, captions = x[share].to(acc.device), captions[share]
            torch.manual_seed(t.seed * 7_919 + step * acc.num_processes + acc.process_index)  # quantisation noise
            for group in opt.param_groups:
                group["lr"] = t.lr * lr_factor(t, step)
            losses = criterion(forward(x), x, captions)
            opt.zero_grad()
            acc.backward(losses["loss"])
            if t.clip_grad:
                acc.clip_grad_norm_(main_params, t.clip_grad)
            opt.step()
            aux_loss = inner.aux_loss()
            aux_opt.zero_grad()
            aux_loss.backward()
            if acc.num_processes > 1:  # the quantiles sit outside DDP's gradient averaging
                for p in aux_params:
                    p.grad = acc.reduce(p.grad, "mean")
            aux_opt.step()
            done = step + 1
            if log is not None and (done % t.log_every == 0 or done == t.steps):
                row = {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v)}
                log.write({**row, "step": done, "split": "train", "lr": opt.param_groups[0]["lr"],
                           "aux_loss": float(aux_loss.detach()), "seconds": round(time.time() - t0, 1)})
                bar.set_postfix(bpp=f"{row['bpp']:.3f}", loss=f"{row['loss']:.3f}")
            if done % t.checkpoint_every == 0 or done == t.steps or stop["signal"]:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    _save(ckpt, done, inner, opt, aux_opt, init)
                    segments.update(done)
            if done % t.val_every == 0 or done == t.steps:
                if acc.is_main_process:
                    last_val = validate(inner, val_set, cfg.model.architecture)
                    log.write({"step": done, "split": "val", **last_val, "seconds": round(time.time() - t0, 1)})
                model.train()
            if t.max_minutes and time.time() - t0 > 60 * t.max_minutes and done < t.steps:
                if acc.is_main_process:
                    _save(ckpt, done, inner, opt, aux_opt, init)
                    segments.update(done)
                    last_val = validate(inner, val_set, cfg.model.architecture)
                    log.write({"step": done, "split": "val", **last_val, "seconds": round(time.time() - t0, 1)})
                stopped_early = done
                break
            if stop["signal"] or done == stop_after:
                if done == stop_after and acc.is_main_process:
                    _save(ckpt, done, inner, opt, aux_opt, init)
                    segments.update(done)
                    return {"steps": done, "planned_steps": t.steps, "stopped": True}
                raise TrainingInterrupted(f"stopped after step {done} of {t.steps} (checkpoint {ckpt}); "
                                          "rerun the same command to resume")
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if acc.is_main_process:
        from safetensors.torch import save_file

        final = copy.deepcopy(inner).float().cpu().eval()
        final.update(force=True)
        save_file({k: v.contiguous() for k, v in final.state_dict().items()}, str(out / "final.safetensors"))
        if not last_val:  # resumed a finished run
            last_val = validate(inner, val_set, cfg.model.architecture)
    acc.wait_for_everyone()
    acc.end_training()
    steps_done = stopped_early or t.steps
    return {"steps": steps_done, "planned_steps": t.steps, "config": asdict(cfg), **last_val}


# ------------------------------------------------------------------ comparing LIC variants

@torch.no_grad()
def compare_lic_variants(codecs: dict, seeds, qualities: list[int]) -> list[dict]:
    """Base against fine-tuned (or any variants) on tiny-world scenes ``seeds``, whole ``.itc`` files.

    Args:
        codecs: name → :class:`~itc_core.codec.ImageTextCodec` (e.g. the ``tiny`` preset and its
            ``semantic`` variant).
        qualities: the rate points to compare (each codec must offer them).

    Returns one row per (variant, quality): real bpp, PSNR, the tiny CLIP's image-text
    similarity with the true caption and its LPIPS-style distance (both are *training*
    terms of the semantic loss, so they show what was optimised, not an independent
    verdict), and the referee's distance and exact-scene / per-attribute accuracy, the
    independent judge (``referee_*`` columns need the shipped referee).
    """
    from .data import image_to_tensor
    from .metrics import psnr
    from .semantic_losses import ClipFeatures, LpipsStyle, load_clip
    from .tinyworld.referee import Referee
    from .tinyworld.scenes import sample

    seeds = list(seeds)
    originals, captions = zip(*(sample(s) for s in seeds))
    x = torch.cat([image_to_tensor(im) for im in originals])
    clip = ClipFeatures(*load_clip("tiny/clip"))
    lpips_style = LpipsStyle(clip)
    referee = Referee.load()
    text = clip.text_embeddings(list(captions))
    rows = []
    for name, codec in codecs.items():
        for q in qualities:
            results = [codec.encode(im, q, caption=False) for im in originals]
            decoded = [codec.decode(r.data, restore=False).reconstruction for r in results]
            x_hat = torch.cat([image_to_tensor(im) for im in decoded])
            acc = referee.accuracy(x_hat, seeds)
            rows.append({
                "variant": name, "quality": q, "scenes": len(seeds),
                "bpp": float(np.mean([r.bpp for r in results])),
                "psnr_db": float(np.mean([psnr(a[None], b[None]) for a, b in zip(x, x_hat)])),
                "clip_i2t": float((clip.image_embeddings(x_hat) * text).sum(-1).mean()),
                "lpips_clip": float(torch.stack([lpips_style(b[None], a[None]) for a, b in zip(x, x_hat)]).mean()),
                "referee_distance": float(referee.distance(x_hat, x).mean()),
                "referee_exact": acc["exact"],
                **{f"referee_{k}": v for k, v in acc.items() if k != "exact"},
            })
    return rows
