"""Train the tiny CLIP (``itc tiny-zoo --only clip``): a transformers ``CLIPModel`` on tiny-world scene/caption pairs.

It is the vision tower of the tiny LMM and, later, the text encoder of the tiny
restorer and the CLIP of the fine-tuning loss. Training is the symmetric
InfoNCE loss of CLIP on seeded scenes; the report is zero-shot image→caption
retrieval top-1 on held-out val scenes, each against 100 candidate captions,
and how often the true caption beats every variant with one object's shape
(colour, size) changed.

Random in-batch captions almost never differ from the true one in a single
shape, so the shipped CLIP never learnt shapes (11 % on that check). For a CLIP
that ranks caption candidates (``caption.clip``), ``hard_negatives`` adds, per
image, that many one-attribute variants of its caption as extra negatives::

    python -m itc_core.tinyworld.train_clip --patch 4 --hard-negatives 4 --device cuda --out data/tiny/clip-rerank

From scratch on a CPU that reached only 19 % on the shape check after 22
minutes. The shipped reranker (``itc tiny-zoo --only clip-rerank``) therefore
starts from towers that already know the world: the vision tower of the tiny
LMM (4-px patches; the LMM names shapes right 97 % of the time) and the text
tower of the tiny CLIP (``vision_from`` / ``text_from``). The LMM's layers stay
frozen (their outputs are computed once per training scene and cached), and
``extra_vision_layers`` new layers on top learn, with hard negatives, to pool
them into one embedding. ``unfrozen_vision_layers`` lets the tower's top layers
train too (features are then cached below them). It is a CLIPModel like any
other: the decoder never sees it, and only the encoder ranks captions with it.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from .checkpoint import add_recipe_arguments, command_line, load_checkpoint, recipe_from_arguments, save_checkpoint
from .scenes import COLOURS, SHAPES, SIZES, batch, caption, generate_scene, split_seeds
from .tokenizer import train_tokenizer

__all__ = ["ClipRecipe", "RERANK_RECIPE", "train_clip", "pixel_tensor", "retrieval_top1", "attribute_discrimination",
           "variant_caption", "text_batch", "CLIP_MEAN", "CLIP_STD"]

VARIED = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES)}

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
    hard_negatives: int = 0  # per image, one-attribute variants of its caption added as negatives (0: plain CLIP)
    vision_from: str = ""  # an LMM folder (e.g. tiny/lmm) whose vision tower starts the vision side (sizes follow it)
    text_from: str = ""  # a CLIP folder (e.g. tiny/clip): its text tower, text projection and scale start the text side
    extra_vision_layers: int = 0  # with vision_from: new layers trained on top of the frozen LMM tower
    unfrozen_vision_layers: int = 0  # with vision_from: the LMM tower's top layers that train too (0: all frozen)
    init_from: str = ""  # a CLIP folder of this recipe's shape whose weights start every part (a second schedule)
    minutes: float = 0.0  # >0: a fresh run times its first 50 steps and cuts ``steps`` to fit this budget


# The shipped caption reranker (``itc tiny-zoo --only clip-rerank``, after the LMM): the LMM's frozen vision tower,
# two new layers on top, the tiny CLIP's text tower, six one-attribute variants of each caption as hard negatives.
RERANK_RECIPE = ClipRecipe(vision_from="tiny/lmm", text_from="tiny/clip", extra_vision_layers=2, hard_negatives=6,
                           steps=3000, batch_size=128, lr=1e-3)


def pixel_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 scenes as CLIP-normalised (N, 3, H, W) float pixel values."""
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return (x - mean) / std


def text_batch(tokenizer, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """``texts`` as the tiny CLIP reads them: token ids cut to ``max_tokens`` with EOS last, padded, with a mask."""
    ids = [row[: max_tokens - 1] + [tokenizer.eos_token_id] for row in tokenizer(texts, add_special_tokens=False).input_ids]
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


def fit_schedule(opt: torch.optim.Optimizer, step: int, seconds: float, minutes: float, steps: int,
                 warmup_steps: int | None = None):
    """``(steps, scheduler)`` for a run that took ``seconds`` for its first ``step`` steps and has ``minutes``
    in all: the steps that fit at that pace and a :func:`warmup_cosine` over them, continued at ``step``; None
    when ``steps`` fit already. A time-boxed run (a lent GPU) so ends its schedule, the learning rate decayed,
    instead of being cut off half-way. ``warmup_steps``: a warm-up of that many steps (default 5 %)."""
    fit = max(step + 1, int(minutes * 60 / (seconds / step)))
    if fit >= steps:
        return None
    sched = warmup_cosine(opt, fit, 0.05 if warmup_steps is None else warmup_steps / fit)
    sched.last_epoch = step - 1
    sched.step()
    return fit, sched


def time_box(step: int, start: int, seconds: float, recipe, parts: dict, bar, warmup_steps: int | None = None):
    """The scheduler to step with from ``step`` on: at step 50 of a fresh run whose ``recipe.minutes`` is set,
    ``recipe.steps`` and ``parts["sched"]`` are fitted to the minutes (:func:`fit_schedule`; ``seconds``: the
    time the run has taken so far); otherwise ``parts["sched"]`` as it is."""
    if step == 50 and start == 0 and recipe.minutes > 0:
        fitted = fit_schedule(parts["opt"], step, seconds, recipe.minutes, recipe.steps, warmup_steps)
        if fitted:  # a shorter cosine schedule, keeping the steps already taken
            recipe.steps, parts["sched"] = fitted
            bar.total = recipe.steps
    return parts["sched"]


def build_clip(recipe: ClipRecipe, tokenizer) -> CLIPModel:
    """A randomly initialised tiny CLIPModel sized by ``recipe`` for ``tokenizer``."""
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=recipe.hidden, intermediate_size=2 * recipe.hidden,
                          num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                          max_position_embeddings=recipe.max_text_tokens, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = CLIPVisionConfig(image_size=64, patch_size=recipe.patch, hidden_size=recipe.hidden,
                              intermediate_size=2 * recipe.hidden, num_hidden_layers=recipe.layers,
                              num_attention_heads=recipe.heads)
    if (recipe.extra_vision_layers or recipe.unfrozen_vision_layers) and not recipe.vision_from:
        raise ValueError("extra_vision_layers and unfrozen_vision_layers work on a vision_from tower; set vision_from too")
    if recipe.extra_vision_layers < 0 or recipe.unfrozen_vision_layers < 0:
        raise ValueError("extra_vision_layers and unfrozen_vision_layers count layers: 0 or more")
    tower = _lmm_vision_tower(recipe.vision_from) if recipe.vision_from else None
    source = CLIPModel.from_pretrained(_resolve(recipe.text_from)) if recipe.text_from else None
    if tower is not None:
        vision = copy.deepcopy(tower.config)
        vision.num_hidden_layers += recipe.extra_vision_layers
    if source is not None:
        text = source.config.text_config
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=recipe.projection)
    model = CLIPModel(config)
    if tower is not None:
        missing, unexpected = model.vision_model.load_state_dict(tower.state_dict(), strict=False)
        new = {f"encoder.layers.{i}." for i in range(vision.num_hidden_layers - recipe.extra_vision_layers,
                                                     vision.num_hidden_layers)}
        if unexpected or any(not any(k.startswith(n) for n in new) for k in missing):
            raise ValueError(f"vision_from {recipe.vision_from!r}: its tower does not fit ({missing or unexpected})")
    if source is not None:
        if source.config.projection_dim != recipe.projection or len(tokenizer) != source.config.text_config.vocab_size:
            raise ValueError(f"text_from {recipe.text_from!r}: projection {source.config.projection_dim} and vocabulary "
                             f"{source.config.text_config.vocab_size} must match the recipe's {recipe.projection} and "
                             f"the tokenizer's {len(tokenizer)}")
        model.text_model.load_state_dict(source.text_model.state_dict())
        model.text_projection.load_state_dict(source.text_projection.state_dict())
        model.logit_scale.data.copy_(source.logit_scale.data)
    if recipe.init_from:
        start = CLIPModel.from_pretrained(_resolve(recipe.init_from), dtype=torch.float32)
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as err:
            raise ValueError(f"init_from {recipe.init_from!r} does not fit this recipe: {str(err).splitlines()[0]}") from None
    return model


def _resolve(ref: str) -> Path:
    from ..config import resolve_model

    return Path(resolve_model(ref))


def _lmm_vision_tower(ref: str):
    """The ``CLIPVisionModel`` inside the LLaVA folder ``ref`` (a ``tiny/…`` name or a path)."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(_resolve(ref), dtype=torch.float32).model.vision_tower


def _features(out) -> torch.Tensor:
    """Projected embeddings: transformers 5.x returns an output object (``pooler_output``), 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def variant_caption(scene, rng: random.Random, attribute: str | None = None) -> str:
    """The caption of ``scene`` with one random object's ``attribute`` (random: shape 3/5, colour, size) changed."""
    attribute = attribute or rng.choice(("shape", "shape", "shape", "colour", "size"))
    i = rng.randrange(len(scene.objects))
    obj = scene.objects[i]
    value = rng.choice([v for v in VARIED[attribute] if v != getattr(obj, attribute)])
    return caption(replace(scene, objects=scene.objects[:i] + (replace(obj, **{attribute: value}),) + scene.objects[i + 1:]))


@torch.no_grad()
def attribute_discrimination(model: CLIPModel, tokenizer, seeds, max_tokens: int = 48) -> dict[str, float]:
    """Per attribute, the share of scenes whose true caption the CLIP ranks above every variant of it with one
    object's shape (colour, size) changed: the ceiling of caption reranking when candidates differ so."""
    model.eval()
    device = next(model.parameters()).device
    seeds = list(seeds)
    img = F.normalize(_features(model.get_image_features(pixel_values=pixel_tensor(batch(seeds)).to(device))), dim=-1)
    wins = {attr: 0 for attr in VARIED}
    for k, seed in enumerate(seeds):
        scene = generate_scene(seed)
        for attr, options in VARIED.items():
            texts = [caption(scene)] + [
                caption(replace(scene, objects=scene.objects[:i] + (replace(o, **{attr: v}),) + scene.objects[i + 1:]))
                for i, o in enumerate(scene.objects) for v in options if v != getattr(o, attr)]
            txt = _features(model.get_text_features(**{n: t.to(device) for n, t in text_batch(tokenizer, texts, max_tokens).items()}))
            sims = F.normalize(txt, dim=-1) @ img[k]
            wins[attr] += int(sims[0] > sims[1:].max())
    return {attr: w / len(seeds) for attr, w in wins.items()}


@torch.no_grad()
def retrieval_top1(model: CLIPModel, tokenizer, seeds, candidates: int = 100, max_tokens: int = 48) -> float:
    """Share of scenes whose own caption ranks first among itself and ``candidates - 1`` other scenes' captions."""
    model.eval()
    device = next(model.parameters()).device
    seeds = list(seeds)
    texts = [caption(generate_scene(s)) for s in seeds]
    img = F.normalize(_features(model.get_image_features(pixel_values=pixel_tensor(batch(seeds)).to(device))), dim=-1)
    inputs = {n: t.to(device) for n, t in text_batch(tokenizer, texts, max_tokens).items()}
    txt = F.normalize(_features(model.get_text_features(**inputs)), dim=-1).cpu()
    img = img.cpu()
    hits = 0
    rng = np.random.default_rng(0)
    for i in range(len(seeds)):
        others = rng.choice([j for j in range(len(seeds)) if texts[j] != texts[i]], candidates - 1, replace=False)
        pool = np.concatenate([[i], others])
        hits += int(torch.argmax(img[i] @ txt[pool].T) == 0)
    return hits / len(seeds)


def _sources_tag(recipe: ClipRecipe) -> str:
    """``-<12 hex>``: SHA-256 of the weights ``vision_from`` / ``text_from`` / ``init_from`` start from ("" when none
    is set)."""
    import hashlib

    refs = [ref for ref in (recipe.vision_from, recipe.text_from, recipe.init_from) if ref]
    files = [f for ref in refs for f in sorted(_resolve(ref).glob("*.safetensors"))]
    if not files:
        return ""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return "-" + digest.hexdigest()[:12]


def _freeze_lmm_layers(model: CLIPModel, recipe: ClipRecipe) -> int:
    """With ``vision_from``: freeze the vision embeddings and the LMM's layers but the top ``unfrozen_vision_layers``;
    returns how many layers are frozen (else 0)."""
    if not recipe.vision_from:
        return 0
    tower = model.vision_model
    frozen = len(tower.encoder.layers) - recipe.extra_vision_layers - recipe.unfrozen_vision_layers
    if frozen < 1:
        raise ValueError(f"unfrozen_vision_layers {recipe.unfrozen_vision_layers}: the LMM tower has only "
                         f"{len(tower.encoder.layers) - recipe.extra_vision_layers} layers; keep at least one frozen")
    for module in (tower.embeddings, tower.pre_layrnorm, *tower.encoder.layers[:frozen]):
        module.requires_grad_(False)
    return frozen


@torch.no_grad()
def _frozen_features(model: CLIPModel, frozen: int, images: np.ndarray, workdir: Path, device,
                     tag: str = "") -> torch.Tensor:
    """Hidden states after the first ``frozen`` vision layers for every training image (float16, cached on disk
    under a name that carries ``tag``, the fingerprint of the source weights)."""
    cache = workdir / f"features_{len(images)}_{frozen}{tag}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    tower, chunks = model.vision_model, []
    for start in tqdm(range(0, len(images), 500), desc="frozen LMM tower", mininterval=5):
        h = tower.pre_layrnorm(tower.embeddings(pixel_tensor(images[start:start + 500]).to(device)))
        for layer in tower.encoder.layers[:frozen]:
            h = _layer(layer, h)
        chunks.append(h.half().cpu())
    features = torch.cat(chunks)
    torch.save(features, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)
    return features


def _layer(layer, h: torch.Tensor) -> torch.Tensor:
    out = layer(h, None)
    return out[0] if isinstance(out, tuple) else out


def _embed_from_layer(model: CLIPModel, frozen: int, h: torch.Tensor) -> torch.Tensor:
    """The projected image embedding from hidden states after layer ``frozen`` (what get_image_features computes)."""
    tower = model.vision_model
    for layer in tower.encoder.layers[frozen:]:
        h = _layer(layer, h)
    return model.visual_projection(tower.post_layernorm(h[:, 0]))


def train_clip(out_dir: Path, workdir: Path, recipe: ClipRecipe | None = None, device: str = "cpu",
               command: str | None = None) -> dict:
    """Train (resuming from ``workdir``) and save the tokenizer + CLIPModel to ``out_dir``; returns the report."""
    recipe = recipe or ClipRecipe()
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    tokenizer = train_tokenizer()
    model = build_clip(recipe, tokenizer).to(device)
    frozen = _freeze_lmm_layers(model, recipe)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr, weight_decay=0.05)
    sched = warmup_cosine(opt, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    tag = _sources_tag(recipe)  # a retrained LMM or CLIP upstream starts afresh instead of resuming on stale state
    unfrozen = f"-u{recipe.unfrozen_vision_layers}" if recipe.unfrozen_vision_layers else ""  # other trained parts
    ckpt, parts = workdir / f"clip{tag}{unfrozen}.pt", dict(model=model, opt=opt, sched=sched)
    start = load_checkpoint(ckpt, gen, **parts)
    cache = workdir / f"scenes_{recipe.train_scenes}.npy"
    if not cache.exists():
        np.save(cache, batch(split_seeds("train", recipe.train_scenes)))
    images = np.load(cache)
    tower_tag = _sources_tag(replace(recipe, text_from="", init_from=""))  # the frozen features depend on it alone
    features = _frozen_features(model, frozen, images, workdir, device, tower_tag) if frozen else None
    scenes = [generate_scene(s) for s in split_seeds("train", recipe.train_scenes)]
    texts = [caption(scene) for scene in scenes]
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, recipe.steps), desc="clip", initial=start, total=recipe.steps, mininterval=5)
    for step in bar:
        sched = time_box(step, start, time.time() - t0, recipe, parts, bar)
        if step >= recipe.steps:
            break
        idx = torch.randint(len(texts), (recipe.batch_size,), generator=gen).numpy()
        rng = random.Random(recipe.seed * 1_000_003 + step)  # the hard negatives of a step, the same after a resume
        batch_texts = [texts[i] for i in idx] + [variant_caption(scenes[i], rng) for i in idx
                                                 for _ in range(recipe.hard_negatives)]
        inputs = {n: t.to(device) for n, t in text_batch(tokenizer, batch_texts, recipe.max_text_tokens).items()}
        if frozen:
            image_embeds = _embed_from_layer(model, frozen, features[idx].to(device).float())
        else:
            image_embeds = _features(model.get_image_features(pixel_values=pixel_tensor(images[idx]).to(device)))
        text_embeds = _features(model.get_text_features(**inputs))
        logits_per_image = model.logit_scale.exp() * F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
        # Scenes with identical captions are true pairs too (and a variant may equal another scene's caption):
        # mask them out of the negatives.
        codes = {t: k for k, t in enumerate(dict.fromkeys(batch_texts))}
        text_code = torch.tensor([codes[t] for t in batch_texts])
        same = text_code[None, :] == text_code[: len(idx), None]
        same[torch.arange(len(idx)), torch.arange(len(idx))] = False
        logits = logits_per_image.masked_fill(same.to(device), -1e4)  # (images, captions + variants)
        target = torch.arange(len(idx), device=device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(idx)].T, target)) / 2
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
    discrimination = attribute_discrimination(model, tokenizer, split_seeds("val", min(200, recipe.eval_scenes)),
                                              recipe.max_text_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.cpu().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    vision, text = model.config.vision_config, model.config.text_config  # with vision_from/text_from, not the recipe's
    towers = {"vision": {k: getattr(vision, k) for k in ("patch_size", "num_hidden_layers", "hidden_size")},
              "text": {k: getattr(text, k) for k in ("num_hidden_layers", "hidden_size")}}
    report = {"recipe": asdict(recipe), "towers": towers, "sources": tag.lstrip("-") or None,
              "parameters": sum(p.numel() for p in model.parameters()),
              "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "train_seconds_this_run": round(seconds, 1), "threads": torch.get_num_threads(),
              "retrieval_top1": top1, "retrieval": f"val seeds, {recipe.eval_scenes} scenes x {recipe.candidates} candidates",
              "true_caption_beats_every_variant": discrimination, "device": str(device), "command": command or command_line()}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    """``python -m itc_core.tinyworld.train_clip``: any recipe field as ``--field value``, plus device and folders."""
    from ..config import data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser, ClipRecipe)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", default=str(data_dir() / "tiny" / "clip-rerank"), help="where the model goes")
    parser.add_argument("--workdir", default="outputs/tiny-zoo/clip-rerank", help="checkpoints for resuming")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = recipe_from_arguments(args, ClipRecipe)
    command = "python -m itc_core.tinyworld.train_clip " + " ".join(argv if argv is not None else sys.argv[1:])
    report = train_clip(Path(args.out), Path(args.workdir), recipe, args.device, command)
    print(json.dumps({k: report[k] for k in ("retrieval_top1", "true_caption_beats_every_variant")}))


if __name__ == "__main__":
    main()
