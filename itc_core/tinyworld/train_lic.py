"""Train the tiny world's learned image codecs (``itc tiny-zoo --only lic``).

One CompressAI ``mbt2018-mean`` model per rate point, trained on seeded
tiny-world scenes with CompressAI's rate-distortion loss
(``λ·255²·MSE + bpp``). A base model is trained once at a middle λ, then each
rate point is fine-tuned from it (much faster than from scratch on 2 cores).
Every stage checkpoints to ``workdir`` and resumes where it stopped. The
export builds the CDF tables, saves safetensors into ``data/tiny/lic/`` and
measures the *real* entropy-coded rate on held-out test scenes, which is what
the rate points are named by (the training-time noisy rate overstates it).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from compressai.losses import RateDistortionLoss
from compressai.optimizers import net_aux_optimizer
from tqdm.auto import tqdm

from ..image_codec import ImageCodec, build_model
from ..metrics import psnr
from .checkpoint import load_checkpoint, save_checkpoint
from .scenes import batch, split_seeds

__all__ = ["LicRecipe", "train_lic_zoo", "measure_lic"]


@dataclass
class LicRecipe:
    """Hyper-parameters of the tiny LIC zoo (the defaults are the shipped models')."""

    architecture: str = "mbt2018-mean"
    N: int = 48
    M: int = 64
    lambdas: dict[int, float] = field(default_factory=lambda: {1: 0.0001, 2: 0.001, 3: 0.008, 4: 0.5})
    base_lambda: float = 0.003
    base_steps: int = 2000
    steps: int = 2000
    batch_size: int = 16
    lr: float = 5e-4
    train_scenes: int = 20000
    test_scenes: int = 100
    seed: int = 0


def _scenes(recipe: LicRecipe, workdir: Path) -> torch.Tensor:
    """The training scenes as a uint8 (N, 3, 64, 64) tensor, cached in ``workdir``."""
    cache = workdir / f"train_scenes_{recipe.train_scenes}.npy"
    if not cache.exists():
        np.save(cache, batch(split_seeds("train", recipe.train_scenes)))
    return torch.from_numpy(np.load(cache)).permute(0, 3, 1, 2).contiguous()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns: cheap extra variety for the codec (captions are not used here)."""
    if torch.rand(1, generator=gen) < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, int(torch.randint(4, (1,), generator=gen)), dims=(-2, -1))


def _train(net, scenes, lmbda: float, steps: int, recipe: LicRecipe, ckpt: Path, label: str) -> None:
    """Train ``net`` for ``steps`` at ``lmbda``, resuming from ``ckpt`` if present, checkpointing every 250 steps."""
    criterion = RateDistortionLoss(lmbda=lmbda)
    optimizers = net_aux_optimizer(net, {"net": {"type": "Adam", "lr": recipe.lr}, "aux": {"type": "Adam", "lr": 1e-3}})
    opt, aux_opt = optimizers["net"], optimizers["aux"]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(steps * 0.8)], gamma=0.2)
    gen = torch.Generator().manual_seed(recipe.seed + int(lmbda * 1e6))
    parts = dict(net=net, opt=opt, aux_opt=aux_opt, sched=sched)
    start = load_checkpoint(ckpt, gen, **parts)
    net.train()
    bar = tqdm(range(start, steps), desc=label, initial=start, total=steps, mininterval=5)
    for step in bar:
        idx = torch.randint(len(scenes), (recipe.batch_size,), generator=gen)
        x = _augment(scenes[idx].float() / 255, gen)
        out = net(x)
        losses = criterion(out, x)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        aux_loss = net.aux_loss()
        aux_opt.zero_grad()
        aux_loss.backward()
        aux_opt.step()
        if step % 50 == 0:
            bar.set_postfix(bpp=f"{losses['bpp_loss'].item():.3f}", mse=f"{losses['mse_loss'].item():.5f}")
        if (step + 1) % 250 == 0 or step + 1 == steps:
            save_checkpoint(ckpt, step + 1, gen, **parts)


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


def _export(net, quality: int, lmbda: float, recipe: LicRecipe, out_dir: Path, seconds: float) -> dict:
    from safetensors.torch import save_file

    # Ship weights in float16 (half the bytes). Round first and build the CDF tables from the rounded
    # weights, so the fp32 model that loads the file is exactly the one whose tables were built.
    params = {name for name, _ in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.half().float())
    net.eval().update(force=True)
    path = out_dir / f"{recipe.architecture}-q{quality}.safetensors"
    state = {k: (v.half() if k in params else v).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path))
    codec = ImageCodec(net, recipe.architecture, quality)
    import hashlib
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
        "lambda": lmbda,
        "train_seconds": round(seconds, 1),
        "test": measure_lic(codec, split_seeds("test", recipe.test_scenes)),
    }


def train_lic_zoo(out_dir: Path, workdir: Path, recipe: LicRecipe | None = None,
                  qualities: list[int] | None = None) -> dict:
    """Train (or resume) the rate points ``qualities`` and export them with a manifest into ``out_dir``."""
    recipe = recipe or LicRecipe()
    qualities = qualities or sorted(recipe.lambdas)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    scenes = _scenes(recipe, workdir)
    base = build_model(recipe.architecture, N=recipe.N, M=recipe.M)
    t0 = time.time()
    _train(base, scenes, recipe.base_lambda, recipe.base_steps, recipe, workdir / "base.pt", "base")
    base_seconds = time.time() - t0
    manifest_path = out_dir / "manifest.json"
    for q in qualities:
        net = build_model(recipe.architecture, N=recipe.N, M=recipe.M)
        net.load_state_dict(base.state_dict())
        t1 = time.time()
        _train(net, scenes, recipe.lambdas[q], recipe.steps, recipe, workdir / f"q{q}.pt", f"q{q} λ={recipe.lambdas[q]}")
        entry = _export(net, q, recipe.lambdas[q], recipe, out_dir, time.time() - t1)
        # Re-read just before writing: rate points may be trained by parallel processes.
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": {}}
        manifest["models"][str(q)] = entry
        manifest["models"] = dict(sorted(manifest["models"].items()))
        manifest.update({
            "recipe": asdict(recipe),
            "base_train_seconds_this_run": round(base_seconds, 1),
            "command": "itc tiny-zoo --only lic",
            "data": {"train_seeds": [split_seeds("train", recipe.train_scenes)[0], split_seeds("train", recipe.train_scenes)[-1]],
                     "test_seeds": [split_seeds("test", recipe.test_scenes)[0], split_seeds("test", recipe.test_scenes)[-1]]},
            "environment": {"python": sys.version.split()[0], "torch": torch.__version__,
                            "platform": platform.platform(), "threads": torch.get_num_threads()},
        })
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
