"""Train the referee (``itc tiny-zoo --only referee``): a small CNN that reads scenes back into captions.

Training sees only *original* scenes, a fresh batch of train-split seeds at
every step (rendering costs ~0.2 ms a scene), half of them lightly degraded
(JPEG, downscale-upscale, blur, noise, a small colour gain) so the referee
reads imperfect images fairly. It never sees an LIC or restorer output: it
judges them. The report holds exact-scene and per-attribute accuracy on
1,000 held-out val and 1,000 test originals (targets ≥ 99 % per attribute,
≥ 97 % exact) and on degraded test originals.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .checkpoint import command_line, load_checkpoint, save_checkpoint
from .referee import CELL_HEADS, SCENE_HEADS, Referee, RefereeNet, scene_targets
from .scenes import SPLITS, batch, generate_scene, split_seeds
from .train_clip import warmup_cosine

__all__ = ["RefereeRecipe", "degrade", "train_referee", "export_referee", "evaluate_originals"]


@dataclass
class RefereeRecipe:
    """Sizes, degradations and schedule of the referee (defaults are the shipped model's)."""

    widths: tuple[int, ...] = (16, 32, 64, 96)
    cell_hidden: int = 128
    steps: int = 5000
    batch_size: int = 32
    lr: float = 1.5e-3
    weight_decay: float = 1e-4
    share_degraded: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 95)
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    noise_sigma: tuple[float, float] = (0.005, 0.04)
    gain: float = 0.05
    eval_scenes: int = 1000
    seed: int = 0


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, round(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.pad(x[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.array(Image.open(buf).convert("RGB"))


def degrade(images: np.ndarray, gen: torch.Generator, recipe: RefereeRecipe) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 originals -> (N, 3, 64, 64) floats in [0, 1], a ``share_degraded`` of them degraded.

    A degraded image gets each of JPEG, downscale-upscale (to 32 or 48 px), Gaussian blur, noise and a
    per-channel gain with probability 0.3-0.5; all draws come from ``gen``.
    """
    out = []
    for image in images:
        if float(torch.rand((), generator=gen)) >= recipe.share_degraded:
            out.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
            continue
        p = torch.rand(5, generator=gen).tolist()
        if p[0] < 0.3:
            image = _jpeg(image, round(_uniform(gen, *recipe.jpeg_quality)))
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        if p[1] < 0.3:
            small = 32 if float(torch.rand((), generator=gen)) < 0.5 else 48
            x = F.interpolate(F.interpolate(x[None], size=small, mode="bilinear", antialias=True),
                              size=x.shape[-1], mode="bilinear")[0]
        if p[2] < 0.4:
            x = _gaussian_blur(x, _uniform(gen, *recipe.blur_sigma))
        if p[3] < 0.5:
            x = x + _uniform(gen, *recipe.noise_sigma) * torch.randn(x.shape, generator=gen)
        if p[4] < 0.3:
            x = x * (1 + recipe.gain * (2 * torch.rand(3, 1, 1, generator=gen) - 1))
        out.append(x.clamp(0, 1))
    return torch.stack(out)


def _loss(net: RefereeNet, x: torch.Tensor, scenes) -> torch.Tensor:
    """Sum of the cross-entropies of every head (object attributes only where a cell holds an object)."""
    cells, scene = net(x)
    target_cells, target_scene = (t.to(x.device) for t in scene_targets(scenes))
    loss = 0
    for j, logits in enumerate(cells.split(list(CELL_HEADS.values()), dim=-1)):
        loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_cells[..., j].reshape(-1),
                                      ignore_index=-100)
    background, pattern = scene.split(list(SCENE_HEADS.values()), dim=-1)
    return loss + F.cross_entropy(background, target_scene[:, 0]) + F.cross_entropy(pattern, target_scene[:, 1])


def train_referee(out_dir: Path, workdir: Path, recipe: RefereeRecipe | None = None, device: str | None = None) -> dict:
    """Train (resuming from ``workdir``) and save the referee to ``out_dir``; returns the manifest.

    ``device`` (default ``cpu``) only moves the network's steps; scenes and degradations are drawn on the
    CPU from the same generator, so a run on ``cuda`` sees the same data as one on the CPU.
    """
    recipe = recipe or RefereeRecipe()
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    device = torch.device(device or "cpu")
    net = RefereeNet(recipe.widths, recipe.cell_hidden).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = warmup_cosine(opt, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    ckpt, parts = workdir / "referee.pt", dict(model=net, opt=opt, sched=sched)
    start = load_checkpoint(ckpt, gen, **parts)
    low, high = SPLITS["train"]
    t0 = time.time()
    net.train()
    bar = tqdm(range(start, recipe.steps), desc="referee", initial=start, total=recipe.steps, mininterval=5)
    for step in bar:
        seeds = torch.randint(low, high, (recipe.batch_size,), generator=gen).tolist()
        loss = _loss(net, degrade(batch(seeds), gen, recipe).to(device), [generate_scene(s) for s in seeds])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 250 == 0 or step + 1 == recipe.steps:
            save_checkpoint(ckpt, step + 1, gen, **parts)
    return export_referee(net.cpu(), recipe, out_dir, time.time() - t0, recipe.steps, str(device))


def export_referee(net: RefereeNet, recipe: RefereeRecipe, out_dir: Path, seconds: float, trained_steps: int,
                   device: str = "cpu") -> dict:
    """Save ``net`` (safetensors) and its manifest (SHA-256, recipe, test figures) to ``out_dir``; returns the manifest."""
    from safetensors.torch import save_file

    net.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    manifest = {
        "file": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "bytes": weights.stat().st_size,
        "architecture": {"class": "RefereeNet", "widths": list(recipe.widths), "cell_hidden": recipe.cell_hidden,
                         "image_size": 64},
        "parameters": sum(p.numel() for p in net.parameters()),
        "recipe": asdict(recipe),
        "trained_steps": trained_steps,
        "train_seconds_this_run": round(seconds, 1),
        "command": command_line(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "device": device},
    }
    manifest["test"] = evaluate_originals(Referee(net, manifest), recipe)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def evaluate_originals(referee: Referee, recipe: RefereeRecipe) -> dict:
    """Accuracy on ``eval_scenes`` val and test originals, and on the same test scenes degraded (fixed seed)."""
    val, test = split_seeds("val", recipe.eval_scenes), split_seeds("test", recipe.eval_scenes)
    test_images = batch(test)
    degraded = degrade(test_images, torch.Generator().manual_seed(12345), replace(recipe, share_degraded=1.0))
    return {
        "val_originals": referee.accuracy(batch(val), val),
        "test_originals": referee.accuracy(test_images, test),
        "test_degraded": referee.accuracy(degraded, test),
        "seeds": {"val": [val[0], val[-1]], "test": [test[0], test[-1]]},
    }
