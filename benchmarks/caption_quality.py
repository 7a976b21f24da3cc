"""Caption quality benchmark: the LMM's captioning accuracy, and what each caption-selection mode buys.

    python benchmarks/caption_quality.py [--scenes 1000] [--select-scenes 1000] [--select-split val|test]
                                         [--rank-lm-weight W] [--json out.json]

1. Accuracy: greedy captions (with the preset's length limit and repetition
   guard) of held-out val scenes: the originals, and the LIC reconstruction at
   every rate point (real compress/decompress round trips), judged against the
   scene's true caption (exact match and per attribute, ``caption_accuracy``).
2. CLIP check: how often the preset's ranking CLIP (``caption.rank_clip``,
   else ``caption.clip``) prefers a scene's true caption to every variant
   with one object's shape (colour, size) changed, the ceiling of ``rerank``
   when candidates differ in that attribute.
3. Selection: for each mode of ``caption.select`` and each number of beam
   candidates N (ranked as the preset says: CLIP, weighed with the LMM's belief
   by ``caption.rank_lm_weight``), the exact accuracy of the caption the encoder would code and
   its mean real ``lmm-ac`` bits given the reconstruction at the lowest rate,
   how often the true caption is among the candidates at all (what a
   perfect ranker would reach), and each mode's commonest mistakes.
   Each wrong caption is drawn again with its scene's seed (the tiny world's
   renderer, which no real encoder has) and compared with the original: how
   many pixels differ by more than 16 levels, and whether every wrong object
   is small. Few pixels would mean scenes that could go either way; many mean
   the models miss what the image shows.

Prints tables; this is a benchmark, not a test. The figures depend on the
shipped LMM and CLIP, so rerun it after retraining either.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from itc_core.captioner import generation_kwargs
from itc_core.codec import ImageTextCodec
from itc_core.evaluate import selection_rows, selection_summary
from itc_core.tinyworld import (COLOURS, SHAPES, SIZES, caption, caption_accuracy, generate_scene, parse_caption, render,
                                sample, split_seeds)
from itc_core.tinyworld.scenes import ATTRIBUTES as SCENE_ATTRIBUTES
from itc_core.tinyworld.train_lmm import generate_captions

ATTRIBUTES = ("exact", *SCENE_ATTRIBUTES)


def accuracy_table(codec: ImageTextCodec, n: int) -> dict:
    """Greedy captioning accuracy on ``n`` val originals and on their reconstructions at each rate point."""
    lm, kwargs = codec.lmm, generation_kwargs(codec.config.caption)
    seeds = split_seeds("val", n)
    originals = [sample(s)[0] for s in seeds]
    sources = {"original": originals}
    for q in codec.config.image_codec.qualities:
        sources[f"lic_q{q}"] = [codec.reconstruct(im, q) for im in tqdm(originals, desc=f"LIC q{q}", mininterval=5)]
    table = {}
    for name, images in sources.items():
        pixels = np.stack([np.asarray(im.convert("RGB")) for im in images])
        texts = generate_captions(lm.model, lm.processor, pixels, **dict(kwargs))
        table[name] = caption_accuracy(texts, seeds)
    return table


def selection_table(codec: ImageTextCodec, n: int, modes, split: str = "val") -> dict:
    """Exact accuracy and mean lmm-ac bits (lowest-rate context) of the caption each selection mode keeps."""
    t0 = time.time()
    rows = selection_rows(codec, split_seeds(split, n), modes)
    table = selection_summary(rows)
    for mode, summary in table.items():
        summary["misses"] = miss_report([r for r in rows if r["mode"] == mode])
    cfg = codec.config.caption
    table["_info"] = {"scenes": n, "split": split, "context": f"lic_q{min(codec.config.image_codec.qualities)}",
                      "clip": cfg.rank_clip or cfg.clip, "clip_margin": cfg.clip_margin,
                      "rank_lm_weight": cfg.rank_lm_weight, "seconds": round(time.time() - t0, 1)}
    return table


def miss_report(rows: list[dict], level: int = 16) -> dict:
    """The wrong captions of ``rows`` drawn with their scene's seed against the original: the number of pixels
    that differ by more than ``level`` (min / median / max over the misses) and how many misses get only small
    objects wrong. Captions outside the grammar count as unparsable."""
    pixels, small_only, unparsable = [], 0, 0
    for r in rows:
        if r["exact"]:
            continue
        scene = generate_scene(r["seed"])
        try:
            kept = parse_caption(r["caption"])
        except ValueError:
            unparsable += 1
            continue
        original = np.asarray(render(scene, seed=r["seed"]), dtype=np.int16)
        drawn = np.asarray(render(kept, seed=r["seed"]), dtype=np.int16)
        pixels.append(int((np.abs(drawn - original).max(axis=2) > level).sum()))
        same_count = len(kept.objects) == len(scene.objects)
        wrong = [o for o, k in zip(scene.objects, kept.objects) if o != k] if same_count else list(scene.objects)
        small_only += bool(wrong) and all(o.size == "small" for o in wrong)
    summary = {"count": len(pixels) + unparsable, "unparsable": unparsable, "small_objects_only": small_only}
    if pixels:
        summary.update(pixels_min=min(pixels), pixels_median=float(np.median(pixels)), pixels_max=max(pixels))
    return summary


def clip_discrimination(codec: ImageTextCodec, n: int) -> dict:
    """How often the preset's ranking CLIP ranks a val original's true caption above every one-attribute variant of it
    (one object's shape, colour or size changed): the ceiling of ``rerank`` when the LMM's candidates differ so."""
    clip = codec.rank_clip
    wins = {"shape": [], "colour": [], "size": []}
    values = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES)}
    for seed in tqdm(split_seeds("val", n), desc="CLIP", mininterval=5):
        scene = generate_scene(seed)
        image = render(scene, seed=seed)
        for attr, options in values.items():
            variants = [caption(replace(scene, objects=scene.objects[:i] + (replace(o, **{attr: v}),) + scene.objects[i + 1:]))
                        for i, o in enumerate(scene.objects) for v in options if v != getattr(o, attr)]
            sims = clip.similarity(image, [caption(scene)] + variants)
            wins[attr].append(bool(sims[0] > sims[1:].max()))
    return {attr: float(np.mean(w)) for attr, w in wins.items()}


def _print_accuracy(table: dict, n: int) -> None:
    print(f"captioning accuracy, {n} held-out val scenes (greedy, preset guard)")
    print(f"{'image':>10} " + " ".join(f"{a:>10}" for a in ATTRIBUTES))
    for name, acc in table.items():
        print(f"{name:>10} " + " ".join(f"{100 * acc[a]:9.1f}%" for a in ATTRIBUTES))


def _print_selection(table: dict) -> None:
    info = table["_info"]
    print(f"caption selection, {info['scenes']} {info['split']} originals; bits: lmm-ac given {info['context']}; "
          f"CLIP {info['clip']}, LMM weight {info['rank_lm_weight']}, margin {info['clip_margin']}")
    print(f"{'mode':>16} {'exact':>7} {'shape':>7} {'colour':>7} {'size':>7} {'bits':>7} {'cands':>6} {'truth in':>8}")
    for key, r in table.items():
        if key != "_info":
            print(f"{key:>16} {100 * r['exact']:6.1f}% {100 * r['shape']:6.1f}% {100 * r['colour']:6.1f}% "
                  f"{100 * r['size']:6.1f}% {r['mean_bits']:7.1f} {r['mean_candidates']:6.2f} "
                  f"{100 * r['truth_in_candidates']:7.1f}%")
    print("commonest mistakes (truth→caption, count):")
    for key, r in table.items():
        if key != "_info":
            print(f"{key:>16}  " + ", ".join(f"{what} ×{n}" for what, n in r["confusions"]))
    print("the wrong captions drawn with their scene's seed: pixels off by > 16 levels (min / median / max), "
          "misses with only small objects wrong")
    for key, r in table.items():
        m = r.get("misses") if key != "_info" else None
        if m and m["count"] > m["unparsable"]:
            print(f"{key:>16}  {m['pixels_min']} / {m['pixels_median']:.0f} / {m['pixels_max']} pixels; "
                  f"{m['small_objects_only']} of {m['count']} small only ({m['unparsable']} unparsable)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1000, help="val scenes for the accuracy table (0: skip)")
    parser.add_argument("--select-scenes", type=int, default=1000, help="scenes for the selection table (0: skip)")
    parser.add_argument("--select-split", default="val", choices=["val", "test"], help="their split")
    parser.add_argument("--rank-lm-weight", type=float, help="override caption.rank_lm_weight (0: CLIP alone)")
    parser.add_argument("--clip-scenes", type=int, default=200, help="val scenes for the CLIP check (0: skip)")
    parser.add_argument("--beams", type=int, nargs="+", default=[2, 4, 8], help="N for rerank")
    parser.add_argument("--rate-aware-beams", type=int, nargs="+", default=[4, 8], help="N for rate-aware")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = ImageTextCodec.from_preset(args.preset)
    if args.rank_lm_weight is not None:
        codec.config.caption.rank_lm_weight = args.rank_lm_weight
    results = {}
    if args.scenes:
        results["accuracy"] = accuracy_table(codec, args.scenes)
        _print_accuracy(results["accuracy"], args.scenes)
    if args.clip_scenes:
        results["clip_discrimination"] = clip_discrimination(codec, args.clip_scenes)
        print(f"CLIP ranks the true caption above every one-attribute variant ({args.clip_scenes} val originals):",
              {k: f"{100 * v:.1f}%" for k, v in results["clip_discrimination"].items()})
    if args.select_scenes:
        modes = [("greedy", 1)] + [("rerank", b) for b in args.beams] + [("rate-aware", b) for b in args.rate_aware_beams]
        results["selection"] = selection_table(codec, args.select_scenes, modes, args.select_split)
        _print_selection(results["selection"])
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
