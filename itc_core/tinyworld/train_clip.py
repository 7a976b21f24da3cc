"""Train the tiny CLIP (``itc tiny-zoo --only clip``): a transformers ``CLIPModel`` on tiny-world scene/caption pairs.

It is the vision tower of the tiny LMM and, later, the text encoder of the tiny
restorer and the CLIP of the fine-tuning loss. Training is the symmetric
InfoNCE loss of CLIP on seeded scenes; the report is zero-shot image→caption
retrieval top-1 on held-out val scenes, each against 100 candidate captions.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from .checkpoint import load_checkpoint, save_checkpoint
from .scenes import batch, caption, generate_scene, split_seeds
from .tokenizer import train_tokenizer

__all__ = ["ClipRecipe", "train_clip", "pixel_tensor", "retrieval_top1", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipRecipe:
    """Sizes and schedule of the tiny CLIP (defaults are the shipped model's)."""

    hidden: int = 128
    layers: int = 3
    heads: int = 4
    patch: int = 8
    projection: int = 128
    max_text_tokens: int = 48
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    train_scenes: int = 30000
    eval_scenes: int = 1000
    candidates: int = 100
    seed: int = 0


def pixel_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 scenes as CLIP-normalised (N, 3, H, W) float pixel values."""
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return (x - mean) / std


def _text_batch(tokenizer, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    ids = [tokenizer(t, add_special_tokens=False).input_ids[: max_tokens - 1] + [tokenizer.eos_token_id] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, warmup: float = 0.05):
    """Linear warm-up over the first ``warmup`` share of ``steps``, then cosine decay to zero."""
    import math

    ramp = max(1, int(steps * warmup))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / ramp if s < ramp else 0.5 * (1 + math.cos(math.pi * (s - ramp) / max(1, steps - ramp))))


def build_clip(recipe: ClipRecipe, tokenizer) -> CLIPModel:
    """A randomly initialised tiny CLIPModel sized by ``recipe`` for ``tokenizer``."""
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden, intermediate_size=2 * recipe.hidden,
                          num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                          max_position_embeddings=recipe.max_text_tokens, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = CLIPVisionConfig(image_size=64, patch_size=recipe.patch, hidden_size=recipe.hidden,
                              intermediate_size=2 * recipe.hidden, num_hidden_layers=recipe.layers,
                              num_attention_heads=recipe.heads)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=recipe.projection)
    return CLIPModel(config)


def _features(out) -> torch.Tensor:
    """Projected embeddings: transformers 5.x returns an output object (``pooler_output``), 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def retrieval_top1(model: CLIPModel, tokenizer, seeds, candidates: int = 100, max_tokens: int = 48) -> float:
    """Share of scenes whose own caption ranks first among itself and ``candidates - 1`` other scenes' captions."""
    model.eval()
    seeds = list(seeds)
    texts = [caption(generate_scene(s)) for s in seeds]
    img = F.normalize(_features(model.get_image_features(pixel_values=pixel_tensor(batch(seeds)))), dim=-1)
    txt = F.normalize(_features(model.get_text_features(**_text_batch(tokenizer, texts, max_tokens))), dim=-1)
    hits = 0
    rng = np.random.default_rng(0)
    for i in range(len(seeds)):
        others = rng.choice([j for j in range(len(seeds)) if texts[j] != texts[i]], candidates - 1, replace=False)
        pool = np.concatenate([[i], others])
        hits += int(torch.argmax(img[i] @ txt[pool].T) == 0)
    return hits / len(seeds)


def train_clip(out_dir: Path, workdir: Path, recipe: ClipRecipe | None = None) -> dict:
    """Train (resuming from ``workdir``) and save the tokenizer + CLIPModel to ``out_dir``; returns the report."""
    recipe = recipe or ClipRecipe()
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    tokenizer = train_tokenizer()
    model = build_clip(recipe, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
    sched = warmup_cosine(opt, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    ckpt, parts = workdir / "clip.pt", dict(model=model, opt=opt, sched=sched)
    start = load_checkpoint(ckpt, gen, **parts)
    cache = workdir / f"scenes_{recipe.train_scenes}.npy"
    if not cache.exists():
        np.save(cache, batch(split_seeds("train", recipe.train_scenes)))
    images = np.load(cache)
    texts = [caption(generate_scene(s)) for s in split_seeds("train", recipe.train_scenes)]
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, recipe.steps), desc="clip", initial=start, total=recipe.steps, mininterval=5)
    for step in bar:
        idx = torch.randint(len(texts), (recipe.batch_size,), generator=gen).numpy()
        out = model(pixel_values=pixel_tensor(images[idx]),
                    **_text_batch(tokenizer, [texts[i] for i in idx], recipe.max_text_tokens))
        # Scenes with identical captions are true pairs too: mask them out of the negatives.
        same = torch.tensor([[texts[i] == texts[j] for j in idx] for i in idx])
        logits = out.logits_per_image.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e4)
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 250 == 0 or step + 1 == recipe.steps:
            save_checkpoint(ckpt, step + 1, gen, **parts)
    seconds = time.time() - t0
    top1 = retrieval_top1(model, tokenizer, split_seeds("val", recipe.eval_scenes), recipe.candidates, recipe.max_text_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    report = {"recipe": asdict(recipe), "parameters": sum(p.numel() for p in model.parameters()),
              "train_seconds_this_run": round(seconds, 1), "threads": torch.get_num_threads(),
              "retrieval_top1": top1, "retrieval": f"val seeds, {recipe.eval_scenes} scenes x {recipe.candidates} candidates",
              "command": "itc tiny-zoo --only clip"}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
