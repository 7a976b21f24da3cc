"""Dataset runs that the notebooks and benchmarks share.

``caption_rows`` is the caption-coding study of notebook 01 and
``benchmarks/caption_bits.py``: for each tiny-world scene, the LMM's caption,
its bits under every method, and the bits of ``lmm-ac`` given the LIC's
reconstruction at each rate point. ``selection_rows`` / ``selection_summary``
compare the encoder's caption-selection modes (notebook 01,
``benchmarks/caption_quality.py``): which caption each mode would code, and
what it costs.

``restoration_study`` and ``restoration_panels`` are the restorer's study of
notebook 03 and ``benchmarks/restore_acceptance.py``, judged by the referee.

``pillow_at_size`` (WebP or JPEG at the same number of bytes as an ``.itc``
file) and ``curve_margins`` (how far each rate point lies above another
codec's curve) are the comparisons notebooks 00 and 02 print.

Whole evaluation runs (every image × method × rate point, resumable, sharded:
``itc eval``) live in :mod:`itc_core.evalrun`; ``run_eval`` and ``EvalSettings``
are re-exported here.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .caption_codec import LM_METHODS, METHODS, compress_caption
from .evalrun import EvalSettings, run_eval
from .captioner import caption_candidates, generation_kwargs, pick_caption, ranking_scores
from .tinyworld import caption_accuracy, caption_confusions, sample
from .tinyworld.scenes import ATTRIBUTES

__all__ = ["caption_rows", "selection_rows", "selection_summary", "SELECTION_MODES", "restoration_study", "guidance_study",
           "restoration_panels", "pillow_at_size", "curve_margins", "REFEREE_ATTRIBUTES", "EvalSettings", "run_eval"]

# (mode, beam candidates N) compared by default: the paper's greedy caption and the two selections at N = 4 and 8.
SELECTION_MODES = (("greedy", 1), ("rerank", 4), ("rerank", 8), ("rate-aware", 4), ("rate-aware", 8))
REFEREE_ATTRIBUTES = ("exact", *ATTRIBUTES)


def caption_rows(codec, seeds, methods=METHODS, progress: bool = True, select: str | None = None) -> list[dict]:
    """One dict per scene: ``truth``, ``caption`` (the LMM's), ``select`` (how it was chosen), ``exact``, ``chars``,
    ``bits_<method>``, ``nll_<method>``, and ``bits_lmm-ac_q<q>`` / ``nll_lmm-ac_q<q>`` for every LIC rate point.

    ``bits_lmm-ac`` is at the preset's default quality. Bits are real payload bits. ``select``: the
    caption selection mode (default: the preset's ``caption.select``).
    """
    qualities = codec.config.image_codec.qualities
    default = codec.config.image_codec.quality
    rows = []
    for seed in tqdm(list(seeds), desc="captions", disable=not progress):
        image, truth = sample(seed)
        recon = {q: codec.reconstruct(image, q) for q in qualities}
        choice = codec.choose_caption(image, recon[default], select)
        caption = choice.text
        row = {"seed": seed, "truth": truth, "caption": caption, "select": choice.describe(), "exact": caption == truth,
               "chars": len(caption)}
        for method in methods:
            lm = codec.lmm if method in LM_METHODS else None
            p = compress_caption(caption, method, lm, recon[default])
            row[f"bits_{method}"], row[f"nll_{method}"] = p.bits, p.nll_bits
        for q in qualities:
            p = compress_caption(caption, "lmm-ac", codec.lmm, recon[q])
            row[f"bits_lmm-ac_q{q}"], row[f"nll_lmm-ac_q{q}"] = p.bits, p.nll_bits
        rows.append(row)
    return rows


def selection_rows(codec, seeds, modes=SELECTION_MODES, quality: int | None = None, progress: bool = True) -> list[dict]:
    """One dict per scene and (mode, N): the caption that mode codes, whether it is exact, its real ``lmm-ac``
    bits given the reconstruction at ``quality`` (default: the lowest rate point) and the candidates seen.

    Candidates are made once per N and shared by the modes, exactly as ``captioner.select_caption`` makes them.
    """
    cfg = codec.config.caption
    kwargs = generation_kwargs(cfg)
    quality = min(codec.config.image_codec.qualities) if quality is None else quality
    rows = []
    for seed in tqdm(list(seeds), desc="selection", disable=not progress):
        image, truth = sample(seed)
        recon = codec.reconstruct(image, quality)
        bits: dict[str, int] = {}

        def bits_of(text: str) -> int:
            if text not in bits:
                bits[text] = compress_caption(text, "lmm-ac", codec.lmm, recon).bits
            return bits[text]
        for n in sorted({n for _, n in modes}):
            texts = caption_candidates(codec.lmm, image, n, **kwargs)
            score = (ranking_scores(codec.lmm, codec.rank_clip, image, texts, cfg.rank_lm_weight)[2]
                     if any(m != "greedy" and k == n for m, k in modes) else None)
            for mode, k in modes:
                if k != n:
                    continue
                best = 0 if mode == "greedy" else pick_caption(texts, score, mode, cfg.clip_margin, bits_of)[0]
                rows.append({"seed": seed, "mode": mode if mode == "greedy" else f"{mode} N={n}", "caption": texts[best],
                             "exact": texts[best] == truth, "bits": bits_of(texts[best]), "candidates": len(texts),
                             "truth_in_candidates": truth in texts})
    return rows


def selection_summary(rows: list[dict]) -> dict[str, dict]:
    """Per mode: exact and per-attribute accuracy (``caption_accuracy``), ``mean_bits``, ``mean_candidates`` and
    ``truth_in_candidates`` (the share of scenes whose true caption is among the candidates: a perfect ranker's
    exact accuracy) and ``confusions``, the five commonest mistakes (``caption_confusions``)."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        out[mode] = {**caption_accuracy([r["caption"] for r in mine], [r["seed"] for r in mine]),
                     "mean_bits": float(np.mean([r["bits"] for r in mine])),
                     "mean_candidates": float(np.mean([r["candidates"] for r in mine])),
                     "truth_in_candidates": float(np.mean([r["truth_in_candidates"] for r in mine])),
                     "confusions": caption_confusions([r["caption"] for r in mine], [r["seed"] for r in mine], 5)}
    return out


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
    with the colour fix (the same noise; the fix applied afterwards); ``confusions``: what the referee's
    readings of the LIC reconstruction and of each restoration with the colour fix got wrong, commonest
    first (``caption_confusions``); and caption control: the true caption with one object's colour word
    changed, the share of outputs where the referee reads the new colour there.
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

    def restore(recons, captions, q):
        return _as_tensor(restorer.restore_batch(recons, captions, steps=steps, guidance=guidance, seed=seed,
                                                 colour_fix=False, qualities=[q] * len(recons)))

    report = {"scenes": len(seeds), "steps": steps or codec.config.restorer.steps,
              "guidance": {q: codec.config.restorer.guidance_at(q) if guidance is None else guidance
                           for q in qualities},
              "lmm_caption_exact": 100 * sum(a == b for a, b in zip(lmm, truths)) / len(seeds), "rates": {}}
    for q in tqdm(qualities, desc="rates", disable=not progress):
        recons_pil = [codec.reconstruct(im, q) for im in originals_pil]
        recons = _as_tensor(recons_pil)
        rows = {"LIC only": _scores(referee, recons, originals, seeds)}
        confusions = {"LIC only": caption_confusions(referee.read(recons), seeds, 5)}
        for name, captions in (("no caption", [""] * len(seeds)), ("LMM caption", lmm), ("true caption", truths)):
            restored = restore(recons_pil, captions, q)
            fixed = wavelet_colour_fix(restored, recons)
            rows[name] = _scores(referee, restored, originals, seeds)
            rows[f"{name} + colour fix"] = _scores(referee, fixed, originals, seeds)
            confusions[f"{name} + colour fix"] = caption_confusions(referee.read(fixed), seeds, 5)
        edited = restore(recons_pil, [caption(scene) for scene, _ in edits], q)
        control = {"LIC only": _new_colour_read(referee, recons, edits),
                   "edited caption": _new_colour_read(referee, edited, edits),
                   "edited caption + colour fix": _new_colour_read(referee, wavelet_colour_fix(edited, recons), edits)}
        report["rates"][q] = {"bpp_image_file": sum(codec.encode(im, q, caption=False).bpp
                                                    for im in originals_pil) / len(seeds),
                              "rows": rows, "colour_control": control, "confusions": confusions}
    return report


def guidance_study(codec, referee, seeds, qualities, scales, progress: bool = True) -> dict:
    """{quality: {guidance: referee scores}} of restorations with the LMM's caption of the original and the colour
    fix (what a user gets) on scenes ``seeds`` at each guidance in ``scales`` (``benchmarks/pick_guidance.py``)."""
    from .restorer import wavelet_colour_fix

    seeds = list(seeds)
    codec.restorer.pipeline.set_progress_bar_config(disable=True)
    originals_pil = [sample(s)[0] for s in seeds]
    originals = _as_tensor(originals_pil)
    captions = [codec.caption(im) for im in tqdm(originals_pil, desc="LMM captions", disable=not progress)]
    table = {}
    for q in qualities:
        recons_pil = [codec.reconstruct(im, q) for im in originals_pil]
        recons = _as_tensor(recons_pil)
        table[q] = {}
        for g in tqdm(scales, desc=f"q{q} guidance", disable=not progress):
            restored = _as_tensor(codec.restorer.restore_batch(recons_pil, captions, guidance=g, seed=0,
                                                               colour_fix=False, qualities=[q] * len(seeds)))
            table[q][g] = _scores(referee, wavelet_colour_fix(restored, recons), originals, seeds)
    return table


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
                                                             seed=noise_seed, colour_fix=fix, quality=quality)
    truth = caption(generate_scene(seed))
    images = {"original": original, f"LIC q{quality}": recon, "no caption": restore(""),
              "LMM caption": restore(codec.caption(original)), "true caption": restore(truth),
              "true caption + colour fix": restore(truth, True)}
    names = list(images)
    readings = referee.read([images[n] for n in names])
    distances = referee.distance([images[n] for n in names], [original] * len(names)).tolist()
    return {n: (images[n], r, d) for n, r, d in zip(names, readings, distances)}


def pillow_at_size(image, fmt: str, max_bytes: int) -> dict:
    """The highest-quality Pillow file of ``image`` (``fmt`` WEBP or JPEG, as :func:`itc_core.rd.pillow_round_trip`)
    of at most ``max_bytes``: {"quality", "bytes", "image", "fits"}. When even quality 0 is larger, its file with
    ``fits`` False (a 64×64 WebP cannot be smaller than about 60 bytes). Bisection over qualities 0-100."""
    from .rd import pillow_round_trip

    size, decoded = pillow_round_trip(image, fmt, 0)
    best = {"quality": 0, "bytes": size, "image": decoded, "fits": size <= max_bytes}
    lo, hi = 1, 100
    while best["fits"] and lo <= hi:
        q = (lo + hi) // 2
        size, decoded = pillow_round_trip(image, fmt, q)
        if size <= max_bytes:
            best, lo = {"quality": q, "bytes": size, "image": decoded, "fits": True}, q + 1
        else:
            hi = q - 1
    return best


def curve_margins(anchor: list[dict], test: list[dict], key: str = "psnr_db") -> dict[int, float | None]:
    """{quality: how far each point of ``test`` lies above ``anchor``'s curve at the same bpp}, in ``key``'s units
    (negative: below it), the curve linear in log-rate as :func:`itc_core.rd.below_curve` draws it; None outside
    the anchor's rate range."""
    a = sorted(anchor, key=lambda r: r["bpp"])
    rates, values = np.log([r["bpp"] for r in a]), [r[key] for r in a]
    return {r["quality"]: float(r[key] - np.interp(np.log(r["bpp"]), rates, values))
            if a[0]["bpp"] <= r["bpp"] <= a[-1]["bpp"] else None for r in test}
