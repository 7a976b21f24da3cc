"""Issue 8 acceptance: what the restorer buys at the two lowest rates, judged by the referee.

    python benchmarks/restore_acceptance.py [--scenes 200] [--steps N] [--guidance G] [--json out.json]

For held-out test scenes at the first two rate points of the preset: the
referee's exact-scene and per-attribute accuracy, the referee distance to the
original and PSNR for the LIC reconstruction alone and for restorations without
a caption, with the tiny LMM's caption of the original (what a user gets) and
with the true caption (the restorer's ceiling), each without and with the wavelet
colour fix (the same noise, the fix applied after). Caption control: the true
caption with one object's colour word changed; the share of restorations in which
the referee reads the new colour on that object. The referee is trained on
originals only and used by no codec stage. Prints tables; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from itc_core.codec import ImageTextCodec
from itc_core.data import image_to_tensor
from itc_core.metrics import psnr
from itc_core.restorer import wavelet_colour_fix
from itc_core.tinyworld import sample, split_seeds
from itc_core.tinyworld.referee import Referee
from itc_core.tinyworld.scenes import caption, generate_scene
from itc_core.tinyworld.train_restorer import recolour_scene

ATTRIBUTES = ("exact", "shape", "colour", "size", "position", "count", "background", "pattern")


def _score(referee, images: torch.Tensor, originals: torch.Tensor, truths) -> dict:
    acc = referee.accuracy(images, truths)
    return {**{k: 100 * acc[k] for k in ATTRIBUTES},
            "referee_distance": float(referee.distance(images, originals).mean()),
            "psnr": float(np.mean([psnr(a[None], b[None]) for a, b in zip(images, originals)]))}


def _restore(codec, recons, captions, steps, guidance, seed=0) -> torch.Tensor:
    """Restorations without the colour fix, as an (N, 3, H, W) tensor (batched: every image gets seed's noise)."""
    out = codec.restorer.restore_batch(recons, captions, steps=steps, guidance=guidance, seed=seed, colour_fix=False)
    return torch.cat([image_to_tensor(o) for o in out])


def _control(referee, images: torch.Tensor, edits) -> float:
    """Share (%) of images in which the referee reads the edited object's new colour at its position."""
    hits = 0
    for seen, (scene, k) in zip(referee.scenes(images), edits):
        target = scene.objects[k]
        hits += any(o.position == target.position and o.colour == target.colour for o in seen.objects)
    return 100 * hits / len(edits)


def run(scenes: int, steps: int | None, guidance: float | None, preset: str = "tiny") -> dict:
    """All figures of the acceptance table for ``scenes`` test scenes."""
    codec = ImageTextCodec.from_preset(preset)
    codec.restorer.pipeline.set_progress_bar_config(disable=True)
    referee = Referee.load()
    seeds = list(split_seeds("test", scenes))
    originals_pil = [sample(s)[0] for s in seeds]
    originals = torch.cat([image_to_tensor(im) for im in originals_pil])
    true_captions = [caption(generate_scene(s)) for s in seeds]
    t0 = time.time()
    lmm_captions = [codec.caption(im) for im in originals_pil]
    edits = [recolour_scene(s) for s in seeds]
    report = {"scenes": scenes, "steps": steps or codec.config.restorer.steps,
              "guidance": codec.config.restorer.guidance if guidance is None else guidance,
              "lmm_caption_exact": 100 * float(np.mean([a == b for a, b in zip(lmm_captions, true_captions)])),
              "rates": {}}
    for q in codec.config.image_codec.qualities[:2]:
        recons_pil = [codec.reconstruct(im, q) for im in originals_pil]
        recons = torch.cat([image_to_tensor(r) for r in recons_pil])
        rows = {"LIC only": _score(referee, recons, originals, seeds)}
        for name, captions in (("no caption", [""] * scenes), ("LMM caption", lmm_captions),
                               ("true caption", true_captions)):
            restored = _restore(codec, recons_pil, captions, steps, guidance)
            rows[f"{name}"] = _score(referee, restored, originals, seeds)
            rows[f"{name} + colour fix"] = _score(referee, wavelet_colour_fix(restored, recons), originals, seeds)
        edited = _restore(codec, recons_pil, [caption(e[0]) for e in edits], steps, guidance)
        control = {"LIC only": _control(referee, recons, edits),
                   "edited caption": _control(referee, edited, edits),
                   "edited caption + colour fix": _control(referee, wavelet_colour_fix(edited, recons), edits)}
        bpp = float(np.mean([codec.encode(im, q, caption=False).bpp for im in originals_pil[:20]]))
        report["rates"][q] = {"bpp_image_file": bpp, "rows": rows, "colour_control": control}
    report["seconds"] = round(time.time() - t0, 1)
    return report


def print_report(report: dict) -> None:
    """The acceptance tables in Markdown."""
    print(f"{report['scenes']} test scenes, {report['steps']} steps, guidance {report['guidance']}; "
          f"tiny LMM captions exact: {report['lmm_caption_exact']:.1f} %")
    for q, r in report["rates"].items():
        print(f"\n### quality {q} ({r['bpp_image_file']:.3f} bpp image file, caption extra)\n")
        print("| decoder output | exact | " + " | ".join(ATTRIBUTES[1:]) + " | referee dist. | PSNR |")
        print("|---|" + "---|" * (len(ATTRIBUTES) + 2))
        for name, row in r["rows"].items():
            print(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in ATTRIBUTES)
                  + f" | {row['referee_distance']:.4f} | {row['psnr']:.2f} |")
        print("\ncolour word edited in the true caption, referee reads the new colour (%): "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["colour_control"].items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument("--guidance", type=float, help="guidance (default: the preset's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = run(args.scenes, args.steps, args.guidance)
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
