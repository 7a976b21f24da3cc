"""Train the tiny LMM (``itc tiny-zoo --only lmm``): a LLaVA-architecture captioner and caption coder.

``LlavaForConditionalGeneration`` = a CLIP vision tower + a projector + a tiny
Llama, with a ``LlavaProcessor`` (CLIP image processor + the tiny CLIP's
byte-level tokenizer with an ``<image>`` token). It learns to write a scene's
caption from the original scene, from the LIC's reconstructions at every rate
point of the tiny preset (the context the caption *coder* gets, since the
decoder has only those), and from a blank image (the text-only mode of
``lm-ac``). Shape is the hard attribute (a small star is about 12 pixels wide),
so the vision tower reads 4×4-pixel patches (256 image tokens) and the loss
weighs the tokens of shape words more. Needs ``data/tiny/clip`` (tokenizer, and
the vision tower's weights when its patch and width match the CLIP's) and
``data/tiny/lic`` first.

    itc tiny-zoo --only lmm [--device cuda]                # the defaults: the CPU recipe
    python -m itc_core.tinyworld.train_lmm --device cuda --batch-size 256 --minutes 5 --out DIR   # any field

``--minutes`` makes a fresh run time its first 50 steps and shorten ``steps``
to fit; the report records the steps it took (resume with those and no budget).
The data path is tensors on the training device (scenes, reconstructions and
padded captions gathered by index), so large GPU batches are not held up by
Python loops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPModel, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)

from ..caption_codec import BLANK_GRAY  # the text-only context: a mid-gray image both coder ends can make
from ..config import data_dir, load_config
from ..image_codec import ImageCodec
from .checkpoint import (add_recipe_arguments, command_line, files_tag, lic_config, lic_files, load_checkpoint,
                         recipe_from_arguments, save_checkpoint)
from .scenes import SHAPES, batch, caption, caption_accuracy, generate_scene, split_seeds
from .train_clip import CLIP_MEAN, CLIP_STD, pixel_tensor, time_box, warmup_cosine

__all__ = ["LmmRecipe", "PROMPT", "train_lmm", "build_processor", "generate_captions", "shape_token_weights"]

PROMPT = "<image>\nCaption:"
IMAGE_SIZE = 64


@dataclass
class LmmRecipe:
    """Sizes, data mix and schedule of the tiny LMM (defaults are the shipped model's)."""

    hidden: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 8192  # RoPE: no parameters, but room for long user captions in the coder
    patch: int = 4  # 4×4-pixel patches: 256 image tokens (8×8 patches lost small shapes)
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    shape_weight: float = 3.0  # loss weight of the tokens of shape words (the others weigh 1)
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    train_scenes: int = 30000
    share_original: float = 0.35
    share_blank: float = 0.15  # the rest: LIC reconstructions, all rate points equally
    eval_scenes: int = 1000
    seed: int = 0
    minutes: float = 0.0  # >0: a fresh run times its first 50 steps and cuts ``steps`` to fit this budget
    init_from: str = ""  # an LMM folder of this recipe's shape to start from (a second schedule, e.g. on a new LIC)
    frozen_vision: bool = False  # keep the vision tower as it is (the ranking CLIP is built on it)


def build_processor(tokenizer, patch: int = 4) -> LlavaProcessor:
    """The tiny LMM's processor: 64×64 CLIP preprocessing and ``<image>`` expanded to one token per patch."""
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _vision_config(recipe: LmmRecipe, clip: CLIPModel) -> tuple[dict, bool]:
    """The vision tower's config, and whether the tiny CLIP's vision weights fit it."""
    clip_vision = clip.config.vision_config
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=recipe.patch, hidden_size=recipe.vision_hidden,
                              intermediate_size=2 * recipe.vision_hidden, num_hidden_layers=recipe.vision_layers,
                              num_attention_heads=recipe.vision_heads)
    fits = (clip_vision.patch_size, clip_vision.hidden_size, clip_vision.num_hidden_layers) == (
        recipe.patch, recipe.vision_hidden, recipe.vision_layers)
    return vision.to_dict(), fits


def _build_model(recipe: LmmRecipe, clip: CLIPModel, tokenizer) -> LlavaForConditionalGeneration:
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden, intermediate_size=3 * recipe.hidden,
                       num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                       num_key_value_heads=recipe.kv_heads, max_position_embeddings=recipe.max_positions,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    vision, from_clip = _vision_config(recipe, clip)
    config = LlavaConfig(vision_config=vision, text_config=text.to_dict(),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         image_seq_length=(IMAGE_SIZE // recipe.patch) ** 2,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(config)
    if from_clip:
        tower = model.model.vision_tower
        getattr(tower, "vision_model", tower).load_state_dict(clip.vision_model.state_dict())  # 4.x nests it, 5.x not
    return model


@torch.no_grad()
def _reconstructions(images: np.ndarray, lic_cfg, cache: Path, device: str = "cpu") -> np.ndarray:
    """(Q, N, 64, 64, 3) uint8 LIC reconstructions of ``images`` at every rate point of ``lic_cfg``, cached in ``cache``."""
    if cache.exists():
        return np.load(cache)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    out = []
    for q in lic_cfg.qualities:
        net = ImageCodec.from_config(lic_cfg, q).net.to(device)
        # Eval-mode forward of mbt2018-mean equals its decompress (rounds y - mu, adds mu).
        x_hat = torch.cat([net(x[i:i + 512].to(device).float() / 255)["x_hat"].clamp(0, 1).cpu()
                           for i in range(0, len(x), 512)])
        out.append((x_hat * 255).round().byte().permute(0, 2, 3, 1).numpy())
    np.save(cache, np.stack(out))
    return np.stack(out)


def _prompt_ids(processor) -> list[int]:
    blank = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (BLANK_GRAY,) * 3)
    return processor(images=blank, text=PROMPT, return_tensors="pt")["input_ids"][0].tolist()


def shape_token_weights(tokenizer, text: str, weight: float) -> tuple[list[int], list[float]]:
    """Token ids of ``text`` plus EOS, and per token ``weight`` if it overlaps a shape word, else 1."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = []
    for word in text.split(" "):
        start = spans[-1][1] + 1 if spans else 0
        spans.append((start, start + len(word), word in SHAPES))
    shape_spans = [(a, b) for a, b, is_shape in spans if is_shape]
    weights = [weight if any(a < e and s < b for a, b in shape_spans) else 1.0 for s, e in enc["offset_mapping"]]
    return enc["input_ids"] + [tokenizer.eos_token_id], weights + [1.0]


def _caption_tensors(tokenizer, seeds, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) caption ids padded with -100 (EOS included) and (N, L) loss weights (0 on padding)."""
    rows = [shape_token_weights(tokenizer, caption(generate_scene(s)), weight) for s in seeds]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), -100, dtype=torch.long)
    weights = torch.zeros((len(rows), width))
    for i, (row, w) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        weights[i, : len(w)] = torch.tensor(w)
    return ids, weights


@torch.no_grad()
def generate_captions(model, processor, images: np.ndarray, max_new_tokens: int = 48, batch_size: int = 100,
                      **generate_kwargs) -> list[str]:
    """Captions (greedy unless ``generate_kwargs`` say otherwise) for (N, 64, 64, 3) uint8 scenes.

    ``no_adjacent_repeat`` in ``generate_kwargs`` adds the captioner's repetition guard.
    """
    from ..captioner import guard_processors

    model.eval()
    device = next(model.parameters()).device
    prompt = torch.tensor(_prompt_ids(processor), device=device)
    guard = guard_processors(generate_kwargs.pop("no_adjacent_repeat", None), len(prompt))
    texts = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        ids = prompt.repeat(len(chunk), 1)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             pixel_values=pixel_tensor(chunk).to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=processor.tokenizer.eos_token_id,
                             pad_token_id=processor.tokenizer.pad_token_id, logits_processor=guard,
                             **generate_kwargs)
        texts += processor.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return [t.strip() for t in texts]


def _normalise(pixels_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 64, 64, 3) uint8 on any device → CLIP-normalised (B, 3, 64, 64) float, like :func:`pixel_tensor`."""
    x = pixels_uint8.permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def evaluate_lmm(model, processor, lic_cfg, eval_scenes: int, workdir: Path, device: str = "cpu",
                 **generate_kwargs) -> dict:
    """Greedy captioning accuracy on ``eval_scenes`` val originals and on their LIC reconstructions at each rate.

    ``generate_kwargs``: e.g. the preset's repetition guard (``captioner.generation_kwargs``).
    """
    seeds = split_seeds("val", eval_scenes)
    images = batch(seeds)

    def accuracy(pixels):
        return caption_accuracy(generate_captions(model, processor, pixels, **dict(generate_kwargs)), seeds)
    report = {"captioning_original": accuracy(images)}
    recon = _reconstructions(images, lic_cfg, workdir / f"recon_val_{eval_scenes}{files_tag(lic_files(lic_cfg))}.npy",
                             device)
    for q, rec in zip(lic_cfg.qualities, recon):
        report[f"captioning_lic_q{q}"] = accuracy(rec)
    return report


def _start_from(model: LlavaForConditionalGeneration, recipe: LmmRecipe) -> list[Path]:
    """Load ``recipe.init_from`` into ``model`` and freeze its tower if asked; returns the weight files used."""
    files = []
    if recipe.init_from:
        from ..config import resolve_model

        folder = Path(resolve_model(recipe.init_from))
        start = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as err:
            raise ValueError(f"init_from {recipe.init_from!r} does not fit this recipe: {str(err).splitlines()[0]}") from None
        files = sorted(folder.glob("*.safetensors"))
    if recipe.frozen_vision:
        model.model.vision_tower.requires_grad_(False)
    return files


def train_lmm(out_dir: Path, clip_dir: Path, workdir: Path, recipe: LmmRecipe | None = None,
              lic_dir: Path | None = None, device: str = "cpu", command: str | None = None) -> dict:
    """Train (resuming from ``workdir``) and save the tiny LMM with its processor to ``out_dir``; returns the report.

    The LIC reconstructions come from the tiny preset's weights (its ``image_codec`` config: architecture,
    N/M, rate points, file pattern), read from ``lic_dir`` instead of ``data/tiny/lic`` when given.
    """
    recipe = recipe or LmmRecipe()
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    processor = build_processor(tokenizer, recipe.patch)
    model = _build_model(recipe, CLIPModel.from_pretrained(clip_dir), tokenizer)
    starts = _start_from(model, recipe)
    model.to(device)
    lic_cfg = lic_config("tiny", lic_dir)
    seeds = split_seeds("train", recipe.train_scenes)
    cache = workdir / f"scenes_{recipe.train_scenes}.npy"
    if not cache.exists():
        np.save(cache, batch(seeds))
    images_np = np.load(cache)
    # Caches and checkpoint are named by the LIC and CLIP they come from: retrained ones start a new run.
    lic_tag = files_tag(lic_files(lic_cfg))
    recon_np = _reconstructions(images_np, lic_cfg, workdir / f"recon_train_{recipe.train_scenes}{lic_tag}.npy", device)
    # Source 0 = original, 1..Q = reconstructions: one uint8 tensor indexed by (source, scene); blank images apart.
    pool = torch.from_numpy(np.concatenate([images_np[None], recon_np])).to(device)
    blank = torch.full((IMAGE_SIZE, IMAGE_SIZE, 3), BLANK_GRAY, dtype=torch.uint8, device=device)
    cap_ids, cap_weights = (t.to(device) for t in _caption_tensors(tokenizer, seeds, recipe.shape_weight))
    prompt = torch.tensor(_prompt_ids(processor), device=device)

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr, weight_decay=0.01)
    sched = warmup_cosine(opt, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    ckpt = workdir / f"lmm{files_tag(lic_files(lic_cfg) + sorted(Path(clip_dir).glob('*.safetensors')) + starts)}.pt"
    parts = dict(model=model, opt=opt, sched=sched)
    start = load_checkpoint(ckpt, gen, **parts)
    t0 = time.time()
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda"))
    bar = tqdm(range(start, recipe.steps), desc="lmm", initial=start, total=recipe.steps, mininterval=5)
    for step in bar:
        sched = time_box(step, start, time.time() - t0, recipe, parts, bar)
        if step >= recipe.steps:
            break
        b = recipe.batch_size
        idx = torch.randint(len(seeds), (b,), generator=gen).to(device)
        u = torch.rand(b, generator=gen).to(device)
        quality = (1 + torch.randint(len(recon_np), (b,), generator=gen)).to(device)
        source = torch.where(u < recipe.share_original, 0, quality)
        pixels = pool[source, idx]
        is_blank = (u >= recipe.share_original) & (u < recipe.share_original + recipe.share_blank)
        pixels = torch.where(is_blank[:, None, None, None], blank, pixels)
        caps, weights = cap_ids[idx], cap_weights[idx]
        ids = torch.cat([prompt.expand(b, -1), caps.clamp(min=0)], dim=1)
        ids[:, len(prompt):][caps < 0] = tokenizer.pad_token_id
        mask = torch.cat([torch.ones_like(prompt).expand(b, -1), (caps >= 0).long()], dim=1)
        with autocast:
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=_normalise(pixels)).logits
        # Position P-1+j predicts caption token j.
        pred = logits[:, len(prompt) - 1: -1].float()
        nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), caps.reshape(-1), ignore_index=-100, reduction="none")
        loss = (nll * weights.reshape(-1)).sum() / weights.sum()
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
    model.cpu().save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    report = {"recipe": asdict(recipe), "parameters": sum(p.numel() for p in model.parameters()),
              "train_seconds_this_run": round(seconds, 1), "device": str(device), "threads": torch.get_num_threads(),
              "prompt": PROMPT, "command": command or command_line()}
    from ..captioner import generation_kwargs  # the preset's length limit and repetition guard, as users get them

    guard = generation_kwargs(load_config("tiny").caption)
    report["generation"] = guard
    report.update(evaluate_lmm(model.to(device), processor, lic_cfg, recipe.eval_scenes, workdir, device, **guard))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    """``python -m itc_core.tinyworld.train_lmm``: any recipe field as ``--field value``, plus device and folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser, LmmRecipe)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", default=str(data_dir() / "tiny" / "lmm"), help="where the model goes")
    parser.add_argument("--clip", default=str(data_dir() / "tiny" / "clip"), help="the tiny CLIP (tokenizer)")
    parser.add_argument("--lic", default=str(data_dir() / "tiny" / "lic"), help="the tiny LIC folder")
    parser.add_argument("--workdir", default="outputs/tiny-zoo/lmm", help="checkpoints and caches for resuming")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = recipe_from_arguments(args, LmmRecipe)
    command = "python -m itc_core.tinyworld.train_lmm " + " ".join(argv if argv is not None else sys.argv[1:])
    report = train_lmm(Path(args.out), Path(args.clip), Path(args.workdir), recipe, Path(args.lic), args.device, command)
    print(json.dumps({k: v for k, v in report.items() if k.startswith("captioning")}, indent=1))


if __name__ == "__main__":
    main()
