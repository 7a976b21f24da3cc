"""Train the tiny LMM (``itc tiny-zoo --only lmm``): a LLaVA-architecture captioner and caption coder.

``LlavaForConditionalGeneration`` = the tiny CLIP's vision tower + a projector +
a tiny Llama, with a ``LlavaProcessor`` (CLIP image processor + the byte-level
tokenizer with an ``<image>`` token). It learns to write a scene's caption from
the original scene, from the shipped LIC's reconstructions at every rate (the
context the caption *coder* gets, since the decoder has only those), and from a
blank image (the text-only mode of ``lm-ac``). Needs ``data/tiny/clip`` and
``data/tiny/lic`` first.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPModel, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)

from ..caption_codec import BLANK_GRAY  # the text-only context: a mid-gray image both coder ends can make
from ..config import load_config
from ..image_codec import ImageCodec
from .checkpoint import load_checkpoint, save_checkpoint
from .scenes import batch, caption, caption_accuracy, generate_scene, split_seeds
from .train_clip import CLIP_MEAN, CLIP_STD, pixel_tensor, warmup_cosine

__all__ = ["LmmRecipe", "PROMPT", "train_lmm", "build_processor", "generate_captions"]

PROMPT = "<image>\nCaption:"


@dataclass
class LmmRecipe:
    """Sizes, data mix and schedule of the tiny LMM (defaults are the shipped model's)."""

    hidden: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 8192  # RoPE: no parameters, but room for long user captions in the coder
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    train_scenes: int = 30000
    share_original: float = 0.35
    share_blank: float = 0.15  # the rest: LIC reconstructions, all rate points equally
    eval_scenes: int = 1000
    seed: int = 0


def build_processor(tokenizer) -> LlavaProcessor:
    """The tiny LMM's processor: 64×64 CLIP preprocessing and ``<image>`` expanded to 64 patch tokens."""
    images = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _build_model(recipe: LmmRecipe, clip: CLIPModel, tokenizer) -> LlavaForConditionalGeneration:
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden, intermediate_size=3 * recipe.hidden,
                       num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                       num_key_value_heads=recipe.kv_heads, max_position_embeddings=recipe.max_positions,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=clip.config.vision_config.to_dict(), text_config=text.to_dict(),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=64,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(config)
    tower = model.model.vision_tower
    getattr(tower, "vision_model", tower).load_state_dict(clip.vision_model.state_dict())  # 4.x nests it, 5.x not
    return model


def _reconstructions(images: np.ndarray, lic_cfg, cache: Path) -> np.ndarray:
    """(Q, N, 64, 64, 3) uint8 LIC reconstructions of ``images`` at every shipped rate point, cached in ``cache``."""
    if cache.exists():
        return np.load(cache)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    out = []
    for q in lic_cfg.qualities:
        net = ImageCodec.from_config(lic_cfg, q).net
        with torch.no_grad():  # eval-mode forward of mbt2018-mean equals its decompress (rounds y - mu, adds mu)
            x_hat = torch.cat([net(x[i:i + 256])["x_hat"].clamp(0, 1) for i in range(0, len(x), 256)])
        out.append((x_hat * 255).round().byte().permute(0, 2, 3, 1).numpy())
    np.save(cache, np.stack(out))
    return np.stack(out)


def _prompt_ids(processor) -> list[int]:
    blank = Image.new("RGB", (64, 64), (BLANK_GRAY,) * 3)
    return processor(images=blank, text=PROMPT, return_tensors="pt")["input_ids"][0].tolist()


def _batch(prompt: list[int], captions: list[list[int]], pad: int) -> tuple[torch.Tensor, ...]:
    width = len(prompt) + max(map(len, captions))
    ids = torch.full((len(captions), width), pad)
    labels = torch.full((len(captions), width), -100)
    mask = torch.zeros((len(captions), width), dtype=torch.long)
    for i, cap in enumerate(captions):
        row = prompt + cap
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, len(prompt): len(row)] = torch.tensor(cap)
        mask[i, : len(row)] = 1
    return ids, labels, mask


@torch.no_grad()
def generate_captions(model, processor, images: np.ndarray, max_new_tokens: int = 48, batch_size: int = 100) -> list[str]:
    """Greedy captions for (N, 64, 64, 3) uint8 scenes."""
    model.eval()
    prompt = torch.tensor(_prompt_ids(processor))
    texts = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        ids = prompt.repeat(len(chunk), 1)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_tensor(chunk),
                             max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=processor.tokenizer.eos_token_id, pad_token_id=processor.tokenizer.pad_token_id)
        texts += processor.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return texts


def train_lmm(out_dir: Path, clip_dir: Path, workdir: Path, recipe: LmmRecipe | None = None,
              lic_dir: Path | None = None) -> dict:
    """Train (resuming from ``workdir``) and save the tiny LMM with its processor to ``out_dir``; returns the report.

    The LIC reconstructions come from the tiny preset's weights, or from ``lic_dir`` when given.
    """
    recipe = recipe or LmmRecipe()
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    processor = build_processor(tokenizer)
    model = _build_model(recipe, CLIPModel.from_pretrained(clip_dir), tokenizer)
    lic_cfg = load_config("tiny").image_codec
    if lic_dir is not None:
        lic_cfg.weights = str(Path(lic_dir).resolve() / Path(lic_cfg.weights).name)
    seeds = split_seeds("train", recipe.train_scenes)
    cache = workdir / f"scenes_{recipe.train_scenes}.npy"
    if not cache.exists():
        np.save(cache, batch(seeds))
    images = np.load(cache)
    recon = _reconstructions(images, lic_cfg, workdir / f"recon_train_{recipe.train_scenes}.npy")
    blank = np.full((64, 64, 3), BLANK_GRAY, np.uint8)
    captions = [tokenizer(caption(generate_scene(s)), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
                for s in seeds]
    prompt = _prompt_ids(processor)

    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = warmup_cosine(opt, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    ckpt, parts = workdir / "lmm.pt", dict(model=model, opt=opt, sched=sched)
    start = load_checkpoint(ckpt, gen, **parts)
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, recipe.steps), desc="lmm", initial=start, total=recipe.steps, mininterval=5)
    for step in bar:
        idx = torch.randint(len(seeds), (recipe.batch_size,), generator=gen).numpy()
        source = torch.rand(recipe.batch_size, generator=gen).numpy()
        quality = torch.randint(len(recon), (recipe.batch_size,), generator=gen).numpy()
        pixels = np.stack([
            images[i] if u < recipe.share_original else blank if u < recipe.share_original + recipe.share_blank
            else recon[q, i] for i, u, q in zip(idx, source, quality)])
        ids, labels, mask = _batch(prompt, [captions[i] for i in idx], tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_tensor(pixels)).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 250 == 0 or step + 1 == recipe.steps:
            save_checkpoint(ckpt, step + 1, gen, **parts)
    seconds = time.time() - t0

    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    eval_seeds = split_seeds("val", recipe.eval_scenes)
    eval_images = batch(eval_seeds)
    report = {"recipe": asdict(recipe), "parameters": sum(p.numel() for p in model.parameters()),
              "train_seconds_this_run": round(seconds, 1), "threads": torch.get_num_threads(),
              "prompt": PROMPT, "command": "itc tiny-zoo --only lmm",
              "captioning_original": caption_accuracy(generate_captions(model, processor, eval_images), eval_seeds)}
    eval_recon = _reconstructions(eval_images, lic_cfg, workdir / f"recon_val_{recipe.eval_scenes}.npy")
    for q, rec in zip(lic_cfg.qualities, eval_recon):
        report[f"captioning_lic_q{q}"] = caption_accuracy(generate_captions(model, processor, rec), eval_seeds)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
