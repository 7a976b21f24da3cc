"""Train the tiny restorer (``itc tiny-zoo --only restorer``): a :class:`~itc_core.restorer.TinyRestorerPipeline`.

Data: seeded training scenes, their reconstructions by every LIC rate point of
the preset (read through the preset's config, so a retrained LIC only needs a
rerun), and the captions. A share of samples is *recoloured*: one object takes
another colour in the target and the caption while the reconstruction stays the
original's, so the model learns to trust the caption over the blur's colours.
Everything is precomputed into tensors once; a training step only indexes them.

Model: x0-prediction of ``residual_scale × (original − reconstruction)`` on the
16×16×48 space-to-depth view, a ``UNet2DConditionModel`` with cross-attention to
the frozen tiny-CLIP text tower at every level, caption dropout (the empty caption)
for classifier-free guidance, AdamW with warm-up and cosine decay, EMA weights
exported. Runs on CPU by default; ``--device cuda`` with a large batch on a GPU::

    python -m itc_core.tinyworld.train_restorer --device cuda --steps 3000 --batch-size 256 --out data/tiny/restorer

``--minutes M`` (a time-boxed GPU) times the first 50 steps of a fresh run and shortens
``steps`` to fit M minutes, so the cosine schedule ends in time; ``--max-minutes`` only
stops the run (and exports) when the time is up, wherever the schedule is.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import AutoTokenizer, CLIPModel, CLIPTextModel

from ..config import resolve_path
from ..image_codec import ImageCodec
from ..metrics import psnr
from ..restorer import TinyRestorerPipeline
from .checkpoint import command_line, files_tag, lic_config, lic_files, load_checkpoint, save_checkpoint
from .scenes import COLOURS, Scene, caption, generate_scene, render, split_seeds
from .train_clip import time_box, warmup_cosine

__all__ = ["RestorerRecipe", "train_restorer", "recolour_scene", "recoloured", "build_unet", "main"]


@dataclass
class RestorerRecipe:
    """Sizes, data and schedule of the tiny restorer (defaults: the CPU run a user gets)."""

    channels: tuple[int, int, int] = (64, 128, 128)
    heads: tuple[int, int, int] = (2, 4, 4)
    patch: int = 4
    residual_scale: float = 5.0
    max_text_tokens: int = 48
    steps: int = 3000
    batch_size: int = 24
    lr: float = 7e-4
    warmup: int = 100
    ema: float = 0.995
    caption_dropout: float = 0.1
    recolour_share: float = 0.25
    train_scenes: int = 12000
    eval_scenes: int = 100
    preset: str = "tiny"
    seed: int = 0
    max_minutes: float | None = None  # stop early (then export) after this much training time
    minutes: float = 0.0  # >0: a fresh run times its first 50 steps and cuts ``steps`` to fit this budget
    init_from: str = ""  # a restorer folder of this recipe's shape to start from (a second schedule, e.g. on a new LIC)


def recolour_scene(seed: int) -> tuple[Scene, int]:
    """Scene ``seed`` with one object (index returned, picked by the seed) in another colour, not the background's."""
    scene = generate_scene(seed)
    rng = random.Random(seed ^ 0xC010)
    k = rng.randrange(len(scene.objects))
    obj = scene.objects[k]
    colour = rng.choice([c for c in COLOURS if c not in (scene.background, obj.colour)])
    objects = scene.objects[:k] + (replace(obj, colour=colour),) + scene.objects[k + 1:]
    return replace(scene, objects=objects), k


def recoloured(seed: int) -> tuple[np.ndarray, str]:
    """Pixels and caption of :func:`recolour_scene` (the same jitter as the original scene)."""
    scene = recolour_scene(seed)[0]
    return np.asarray(render(scene, seed=seed)), caption(scene)


def build_unet(recipe: RestorerRecipe, cross_attention_dim: int) -> UNet2DConditionModel:
    """The denoiser: 16×16 input of 48 noisy + 48 reconstruction + 2 coordinate channels, 48 out."""
    c = 3 * recipe.patch ** 2
    return UNet2DConditionModel(
        sample_size=64 // recipe.patch, in_channels=2 * c + 2, out_channels=c,
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        block_out_channels=tuple(recipe.channels), layers_per_block=1, attention_head_dim=tuple(recipe.heads),
        norm_num_groups=16, cross_attention_dim=cross_attention_dim)


def _text_tower(clip_dir: Path):
    """The tiny CLIP's tokenizer and text tower (a standalone ``CLIPTextModel``, frozen)."""
    clip = CLIPModel.from_pretrained(clip_dir)
    text = CLIPTextModel(clip.config.text_config)
    getattr(text, "text_model", text).load_state_dict(clip.text_model.state_dict())  # 4.x nests it, 5.x not
    return AutoTokenizer.from_pretrained(clip_dir), text.eval().requires_grad_(False)


def _token_ids(tokenizer, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(texts), max_tokens), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(texts), max_tokens), dtype=torch.long)
    for i, row in enumerate(tokenizer(texts, add_special_tokens=False).input_ids):
        row = row[: max_tokens - 1] + [tokenizer.eos_token_id]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.no_grad()
def _reconstructions(codecs: list[ImageCodec], images: torch.Tensor, device: str, chunk: int = 500) -> torch.Tensor:
    """(Q, N, 3, 64, 64) uint8 LIC reconstructions, batched ``forward`` (the same rounding as ``decompress``)."""
    out = torch.empty((len(codecs),) + tuple(images.shape), dtype=torch.uint8)
    for qi, codec in enumerate(codecs):
        net = copy.deepcopy(codec.net).to(device)
        for i in range(0, len(images), chunk):
            x = images[i:i + chunk].to(device).float() / 255
            out[qi, i:i + chunk] = (net(x)["x_hat"].clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return out


def _dataset(recipe: RestorerRecipe, tokenizer, workdir: Path, device: str, cfg) -> dict[str, torch.Tensor]:
    """Originals, recoloured originals, reconstructions per rate of the LIC ``cfg``, token ids; cached in ``workdir``."""
    cache = workdir / f"data_{recipe.train_scenes}_q{'-'.join(map(str, cfg.qualities))}{files_tag(lic_files(cfg))}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    seeds = split_seeds("train", recipe.train_scenes)
    images = torch.from_numpy(np.stack([np.asarray(render(generate_scene(s), seed=s)) for s in seeds]))
    recolour = [recoloured(s) for s in tqdm(seeds, desc="recolour", mininterval=5)]
    images = images.permute(0, 3, 1, 2).contiguous()
    codecs = [ImageCodec.from_config(cfg, q) for q in cfg.qualities]
    data = {"images": images,
            "recoloured": torch.from_numpy(np.stack([r[0] for r in recolour])).permute(0, 3, 1, 2).contiguous(),
            "recons": _reconstructions(codecs, images, device)}
    data["ids"], data["mask"] = _token_ids(tokenizer, [caption(generate_scene(s)) for s in seeds], recipe.max_text_tokens)
    data["recolour_ids"], data["recolour_mask"] = _token_ids(tokenizer, [r[1] for r in recolour], recipe.max_text_tokens)
    torch.save(data, cache)
    return data


def _batch(data, recipe: RestorerRecipe, gen: torch.Generator, empty: tuple[torch.Tensor, torch.Tensor]):
    """One training batch (target, reconstruction in [0, 1], token ids, mask), all from index tensors."""
    b, device = recipe.batch_size, data["images"].device
    idx = torch.randint(len(data["images"]), (b,), generator=gen).to(device)
    q = torch.randint(len(data["recons"]), (b,), generator=gen).to(device)
    recolour = (torch.rand(b, generator=gen) < recipe.recolour_share).to(device)
    drop = (torch.rand(b, generator=gen) < recipe.caption_dropout).to(device)
    target = torch.where(recolour[:, None, None, None], data["recoloured"][idx], data["images"][idx])
    ids = torch.where(recolour[:, None], data["recolour_ids"][idx], data["ids"][idx])
    mask = torch.where(recolour[:, None], data["recolour_mask"][idx], data["mask"][idx])
    ids = torch.where(drop[:, None], empty[0], ids)
    mask = torch.where(drop[:, None], empty[1], mask)
    return target.float() / 255, data["recons"][q, idx].float() / 255, ids, mask


def _loss(pipe, noise_sched, target, recon, hidden, mask, gen, recipe):
    p = recipe.patch
    r = F.pixel_unshuffle(recon, p)
    x0 = (F.pixel_unshuffle(target, p) - r) * recipe.residual_scale
    t = torch.randint(noise_sched.config.num_train_timesteps, (len(x0),), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    noisy = noise_sched.add_noise(x0, noise, t)
    pred = pipe.unet(pipe.denoiser_input(noisy, r), t, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
    return F.mse_loss(pred, x0)


@torch.no_grad()
def evaluate(pipe: TinyRestorerPipeline, codec: ImageCodec, seeds, guidance: float = 1.0, steps: int = 4) -> dict:
    """PSNR of the reconstruction, and of restorations without and with the true caption, on scenes ``seeds``."""
    images = torch.from_numpy(np.stack([np.asarray(render(generate_scene(s), seed=s)) for s in seeds]))
    x = images.permute(0, 3, 1, 2).float() / 255
    recon = _reconstructions([codec], images.permute(0, 3, 1, 2), "cpu")[0].float() / 255
    texts = [caption(generate_scene(s)) for s in seeds]
    gens = [torch.Generator().manual_seed(0) for _ in seeds]
    blank = pipe([""] * len(seeds), recon.to(pipe.device), steps, 1.0, gens)
    gens = [torch.Generator().manual_seed(0) for _ in seeds]
    with_caption = pipe(texts, recon.to(pipe.device), steps, guidance, gens)
    mean_psnr = lambda y: float(np.mean([psnr(a[None], b[None]) for a, b in zip(x, y)]))  # noqa: E731
    return {"quality": codec.quality, "scenes": len(seeds), "psnr_reconstruction": mean_psnr(recon),
            "psnr_no_caption": mean_psnr(blank), "psnr_true_caption": mean_psnr(with_caption),
            "caption_changes_output": float((with_caption - blank).abs().mean())}


def _start_from(unet: UNet2DConditionModel, recipe: RestorerRecipe) -> list[Path]:
    """Load ``recipe.init_from``'s denoiser into ``unet``; returns its weight files (none without init_from)."""
    if not recipe.init_from:
        return []
    folder = Path(resolve_path(recipe.init_from)) / "unet"
    if not folder.is_dir():
        raise ValueError(f"init_from {recipe.init_from!r} is not a restorer folder (no unet/ in it)")
    start = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)
    try:
        unet.load_state_dict(start.state_dict())
    except RuntimeError as err:
        raise ValueError(f"init_from {recipe.init_from!r} does not fit this recipe: {str(err).splitlines()[0]}") from None
    return sorted(folder.glob("*.safetensors"))


def train_restorer(out_dir: Path, clip_dir: Path, workdir: Path, recipe: RestorerRecipe | None = None,
                   device: str = "cpu", lic_dir: Path | None = None) -> dict:
    """Train (resuming from ``workdir``) and save the pipeline to ``out_dir``; returns the report.

    The reconstructions come from the recipe's preset's LIC, read from ``lic_dir`` when given.
    """
    recipe = recipe or RestorerRecipe()
    lic_cfg = lic_config(recipe.preset, lic_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # training only; no entropy coder sees these numbers
        torch.backends.cudnn.allow_tf32 = True
    tokenizer, text = _text_tower(clip_dir)
    unet = build_unet(recipe, text.config.hidden_size)
    starts = _start_from(unet, recipe)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                              clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    pipe = TinyRestorerPipeline(unet, scheduler, text, tokenizer, patch=recipe.patch,
                                residual_scale=recipe.residual_scale, max_text_tokens=recipe.max_text_tokens)
    pipe.to(device)
    noise_sched = DDPMScheduler.from_config(scheduler.config)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = warmup_cosine(opt, recipe.steps, warmup=recipe.warmup / max(recipe.steps, 1))
    gen = torch.Generator().manual_seed(recipe.seed)
    # Named by the LIC, CLIP (and start) it learns from: after retraining one, a new run starts instead of resuming.
    upstream = lic_files(lic_cfg) + sorted(Path(clip_dir).glob("*.safetensors")) + starts
    ckpt, parts = workdir / f"restorer{files_tag(upstream)}.pt", dict(unet=unet, ema=ema, opt=opt, sched=sched)
    start = load_checkpoint(ckpt, gen, **parts)
    t_data = time.time()
    data = {k: v.to(device) for k, v in _dataset(recipe, tokenizer, workdir, device, lic_cfg).items()}
    data_seconds = time.time() - t_data
    empty = tuple(t[0].to(device) for t in _token_ids(tokenizer, [""], recipe.max_text_tokens))
    unet.train()
    t0, losses, step = time.time(), [], start
    bar = tqdm(range(start, recipe.steps), desc="restorer", initial=start, total=recipe.steps, mininterval=5)
    for step in bar:
        sched = time_box(step, start, time.time() - t0, recipe, parts, bar, recipe.warmup)
        if step >= recipe.steps:
            break
        target, recon, ids, mask = _batch(data, recipe, gen, empty)
        with torch.no_grad():
            hidden = text(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = _loss(pipe, noise_sched, target, recon, hidden, mask, gen, recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - recipe.ema)
        if step % 10 == 0:  # .item() syncs a GPU: not every step
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        out_of_time = recipe.max_minutes is not None and time.time() - t0 > 60 * recipe.max_minutes
        if (step + 1) % 250 == 0 or step + 1 == recipe.steps or out_of_time:
            save_checkpoint(ckpt, step + 1, gen, **parts)
        if out_of_time:
            break
    seconds = time.time() - t0
    final_step = load_checkpoint(ckpt, gen, **parts) if ckpt.exists() else 0
    export = TinyRestorerPipeline(ema.eval().cpu(), scheduler, text.cpu(), tokenizer, patch=recipe.patch,
                                  residual_scale=recipe.residual_scale, max_text_tokens=recipe.max_text_tokens)
    export.set_progress_bar_config(disable=True)
    cfg = lic_cfg
    seeds = split_seeds("val", recipe.eval_scenes)
    codecs = {q: ImageCodec.from_config(cfg, q) for q in cfg.qualities}
    evals = [evaluate(export, codecs[q], seeds) for q in sorted(cfg.qualities)[:2]]
    out_dir.mkdir(parents=True, exist_ok=True)
    export.unet.to(torch.float16)  # shipped in half precision (half the bytes); loaded back as float32
    export.save_pretrained(out_dir)
    report = {"recipe": asdict(recipe), "device": device, "parameters": sum(p.numel() for p in ema.parameters()),
              "steps_done": final_step, "train_seconds_this_run": round(seconds, 1),
              "data_seconds": round(data_seconds, 1), "threads": torch.get_num_threads(),
              "loss_last_100_steps": float(np.mean(losses[-10:])) if losses else None,
              "lic": {q: codec.fingerprint[:12] for q, codec in codecs.items()},
              "val": evals, "command": command_line()}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    """``python -m itc_core.tinyworld.train_restorer``: the recipe with command-line overrides."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-scenes", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--minutes", type=float, help="time the first 50 steps, then fit the schedule to this many minutes")
    p.add_argument("--channels", type=int, nargs=3, help="UNet widths at 16, 8 and 4 px (default 64 128 128)")
    p.add_argument("--heads", type=int, nargs=3, help="attention heads per level (default 2 4 4)")
    p.add_argument("--threads", type=int)
    p.add_argument("--init-from", help="a trained restorer folder to start from (a second schedule, e.g. on a new LIC)")
    p.add_argument("--out", default=str(resolve_path("tiny/restorer")))
    p.add_argument("--clip", default=str(resolve_path("tiny/clip")))
    p.add_argument("--lic", help="a retrained LIC's folder (default: the preset's)")
    p.add_argument("--workdir", default="outputs/tiny-zoo/restorer")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = RestorerRecipe()
    for key in ("steps", "batch_size", "lr", "train_scenes", "max_minutes", "minutes", "channels", "heads",
                "init_from"):
        if getattr(args, key) is not None:
            setattr(recipe, key, tuple(getattr(args, key)) if key in ("channels", "heads") else getattr(args, key))
    try:
        report = train_restorer(Path(args.out), Path(args.clip), Path(args.workdir), recipe, args.device,
                                Path(args.lic) if args.lic else None)
    except ValueError as err:  # e.g. an --init-from that is not a restorer of this shape: one line, not a traceback
        p.error(str(err))
    print(json.dumps({k: report[k] for k in ("steps_done", "train_seconds_this_run", "val")}, indent=1))


if __name__ == "__main__":
    main()
