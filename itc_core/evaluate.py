"""Dataset runs that the notebooks and benchmarks share.

``caption_rows`` is the caption-coding study of notebook 01 and
``benchmarks/caption_bits.py``: for each tiny-world scene, the LMM's caption,
its bits under every method, and the bits of ``lmm-ac`` given the LIC's
reconstruction at each rate point.

``restoration_study`` and ``restoration_panels`` are the restorer's study of
notebook 03 and ``benchmarks/restore_acceptance.py``, judged by the referee.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from .caption_codec import LM_METHODS, METHODS, compress_caption
from .tinyworld import sample

__all__ = ["caption_rows", "restoration_study", "restoration_panels", "REFEREE_ATTRIBUTES"]

REFEREE_ATTRIBUTES = ("exact", "shape", "colour", "size", "position", "count", "background", "pattern")


def caption_rows(codec, seeds, methods=METHODS, progress: bool = True) -> list[dict]:
    """One dict per scene: ``truth``, ``caption`` (the LMM's), ``exact``, ``chars``, ``bits_<method>``,
    ``nll_<method>``, and ``bits_lmm-ac_q<q>`` / ``nll_lmm-ac_q<q>`` for every LIC rate point.

    ``bits_lmm-ac`` is at the preset's default quality. Bits are real payload bits.
    """
    qualities = codec.config.image_codec.qualities
    default = codec.config.image_codec.quality
    rows = []
    for seed in tqdm(list(seeds), desc="captions", disable=not progress):
        image, truth = sample(seed)
        caption = codec.caption(image)
        recon = {q: codec.reconstruct(image, q) for q in qualities}
        row = {"seed": seed, "truth": truth, "caption": caption, "exact": caption == truth, "chars": len(caption)}
        for method in methods:
            lm = codec.lmm if method in LM_METHODS else None
            p = compress_caption(caption, method, lm, recon[default])
            row[f"bits_{method}"], row[f"nll_{method}"] = p.bits, p.nll_bits
        for q in qualities:
            p = compress_caption(caption, "lmm-ac", codec.lmm, recon[q])
            row[f"bits_lmm-ac_q{q}"], row[f"nll_lmm-ac_q{q}"] = p.bits, p.nll_bits
        rows.append(row)
    return rows


def _as_tensor(images):
    import torch

    from .data import image_to_tensor
    return torch.cat([image_to_tensor(im) for im in images])


def _scores(referee, images, originals, truths) -> dict:
    """Referee accuracy (%), mean referee distance to ``originals`` and mean PSNR of an (N, 3, H, W) batch."""
    import numpy as np

    from .metrics import psnr
    acc = referee.accuracy(images, truths)
    return {**{k: 100 * acc[k] for k in REFEREE_ATTRIBUTES},
            "referee_distance": float(referee.distance(images, originals).mean()),
            "psnr": float(np.mean([psnr(a[None], b[None]) for a, b in zip(images, originals)]))}


def _new_colour_read(referee, images, edits) -> float:
    """Share (%) of ``images`` in which the referee reads each edit's recoloured object in its new colour."""
    hits = 0
    for seen, (scene, k) in zip(referee.scenes(images), edits):
        target = scene.objects[k]
        hits += any(o.position == target.position and o.colour == target.colour for o in seen.objects)
    return 100 * hits / len(edits)


def restoration_study(codec, referee, seeds, qualities=None, steps: int | None = None,
                      guidance: float | None = None, seed: int = 0, progress: bool = True) -> dict:
    """The restorer judged by the referee on scenes ``seeds`` at ``qualities`` (default: the two lowest).

    Per rate: referee accuracy (%), referee distance and PSNR of the LIC reconstruction and of restorations
    without a caption, with the LMM's caption of the original and with the true caption, each without and
    with the colour fix (the same noise; the fix applied afterwards); and caption control: the true caption
    with one object's colour word changed, the share of outputs where the referee reads the new colour there.
    """
    from .restorer import wavelet_colour_fix
    from .tinyworld import caption, generate_scene
    from .tinyworld.train_restorer import recolour_scene

    seeds = list(seeds)
    qualities = list(qualities or codec.config.image_codec.qualities[:2])
    restorer = codec.restorer
    restorer.pipeline.set_progress_bar_config(disable=True)
    originals_pil = [sample(s)[0] for s in seeds]
    originals = _as_tensor(originals_pil)
    truths = [caption(generate_scene(s)) for s in seeds]
    lmm = [codec.caption(im) for im in tqdm(originals_pil, desc="LMM captions", disable=not progress)]
    edits = [recolour_scene(s) for s in seeds]

    def restore(recons, captions):
        return _as_tensor(restorer.restore_batch(recons, captions, steps=steps, guidance=guidance, seed=seed,
                                                 colour_fix=False))

    report = {"scenes": len(seeds), "steps": steps or codec.config.restorer.steps,
              "guidance": codec.config.restorer.guidance if guidance is None else guidance,
              "lmm_caption_exact": 100 * sum(a == b for a, b in zip(lmm, truths)) / len(seeds), "rates": {}}
    for q in tqdm(qualities, desc="rates", disable=not progress):
        recons_pil = [codec.reconstruct(im, q) for im in originals_pil]
        recons = _as_tensor(recons_pil)
        rows = {"LIC only": _scores(referee, recons, originals, seeds)}
        for name, captions in (("no caption", [""] * len(seeds)), ("LMM caption", lmm), ("true caption", truths)):
            restored = restore(recons_pil, captions)
            rows[name] = _scores(referee, restored, originals, seeds)
            rows[f"{name} + colour fix"] = _scores(referee, wavelet_colour_fix(restored, recons), originals, seeds)
        edited = restore(recons_pil, [caption(scene) for scene, _ in edits])
        control = {"LIC only": _new_colour_read(referee, recons, edits),
                   "edited caption": _new_colour_read(referee, edited, edits),
                   "edited caption + colour fix": _new_colour_read(referee, wavelet_colour_fix(edited, recons), edits)}
        report["rates"][q] = {"bpp_image_file": sum(codec.encode(im, q, caption=False).bpp
                                                    for im in originals_pil) / len(seeds),
                              "rows": rows, "colour_control": control}
    return report


def restoration_panels(codec, referee, seed: int, quality: int, steps: int | None = None,
                       guidance: float | None = None, noise_seed: int = 0) -> dict:
    """For scene ``seed`` at ``quality``: {panel name: (image, referee reading, referee distance to the original)}.

    Panels: original | LIC reconstruction | restored without caption | with the LMM's caption | with the true
    caption | true caption + colour fix (the others without it).
    """
    from .tinyworld import caption, generate_scene

    original = sample(seed)[0]
    recon = codec.reconstruct(original, quality)
    restore = lambda text, fix=False: codec.restorer.restore(recon, text, steps=steps, guidance=guidance,  # noqa: E731
                                                             seed=noise_seed, colour_fix=fix)
    truth = caption(generate_scene(seed))
    images = {"original": original, f"LIC q{quality}": recon, "no caption": restore(""),
              "LMM caption": restore(codec.caption(original)), "true caption": restore(truth),
              "true caption + colour fix": restore(truth, True)}
    names = list(images)
    readings = referee.read([images[n] for n in names])
    distances = referee.distance([images[n] for n in names], [original] * len(names)).tolist()
    return {n: (images[n], r, d) for n, r, d in zip(names, readings, distances)}
