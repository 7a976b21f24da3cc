"""The dot grid on plain backgrounds: how much of the "dotted" pattern each LIC rate point paints where there is none.

    python benchmarks/plain_texture.py [--scenes 100] [--preset tiny] [--semantic] [--variant NAME [--variant NAME2]]
                                        [--refine STEPS [--refine-qualities Q ...]]
                                        [--json out.json]

On the first ``--scenes`` held-out test scenes whose background is plain, each rate point's
reconstruction (a real compress/decompress round trip) is measured with
``itc_core.tinyworld.texture.dot_grid_contrast``: the mean colour on the dotted pattern's lattice
against the background between its dots, in 8-bit levels. The control moves the lattice half a
period sideways, where no pattern puts dots: what an uneven but grid-free background gives. The
dotted pattern itself (42 levels on the first 100 such scenes) is printed for scale. The colour cosine says
whether the grid has the dotted pattern's own colour (near 1: the codec paints that pattern, a hedge between
"plain" and "dotted") or not (near 0).

``--refine STEPS`` asks whether the grid is the encoder's choice or the decoder's limit: per image, ``STEPS``
Adam steps on the quantized latents (ŷ, ẑ; straight-through rounding) minimise bpp + λ·255²·MSE for that very
image with λ = ``--refine-lambda`` (default 1: bits almost free), through the shipped decoder unchanged, and the
row "refined" measures what that decoder then draws (estimated bpp from the likelihoods, no file). A benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from itc_core.codec import ImageTextCodec
from itc_core.tinyworld import generate_scene, render, sample, split_seeds
from itc_core.tinyworld.texture import dot_grid_colour_cosine, dot_grid_contrast


def plain_scenes(n: int) -> list[int]:
    """The first ``n`` test seeds whose scene has a plain background."""
    seeds = []
    for seed in split_seeds("test", 100_000):
        if generate_scene(seed).pattern == "plain":
            seeds.append(seed)
            if len(seeds) == n:
                return seeds
    raise ValueError(f"fewer than {n} plain test scenes")


def refine_latents(net: torch.nn.Module, x: torch.Tensor, steps: int, lmbda: float, lr: float = 0.01
                   ) -> tuple[torch.Tensor, float]:
    """(reconstruction, estimated bpp) of ``x`` after ``steps`` Adam steps on a hyperprior model's latents (mean-scale
    Gaussian conditional, CompressAI's ``mbt2018-mean``), with the weights frozen: test-time latent refinement."""
    from compressai.ops import quantize_ste

    bottleneck, conditional = net.entropy_bottleneck, net.gaussian_conditional
    medians = bottleneck._get_medians()

    def decode(y, z):
        channels_first = z.transpose(0, 1)  # the bottleneck codes each channel with its own density
        flat = channels_first.reshape(channels_first.shape[0], 1, -1)
        flat_hat = quantize_ste(flat - medians) + medians
        z_likelihood = bottleneck.likelihood_lower_bound(bottleneck._likelihood(flat_hat)[0])
        z_hat = flat_hat.reshape(channels_first.shape).transpose(0, 1)
        scales, means = net.h_s(z_hat).chunk(2, 1)
        y_hat = quantize_ste(y - means) + means
        y_likelihood = conditional.likelihood_lower_bound(conditional._likelihood(y_hat, scales, means))
        bits = -(torch.log2(z_likelihood).sum() + torch.log2(y_likelihood).sum())
        return net.g_s(y_hat), bits / (x.shape[2] * x.shape[3])

    with torch.no_grad():
        y = net.g_a(x)
        z = net.h_a(y)
    y, z = y.requires_grad_(True), z.requires_grad_(True)
    optimiser = torch.optim.Adam([y, z], lr=lr)
    for _ in range(steps):
        x_hat, bpp = decode(y, z)
        loss = bpp + lmbda * 255 ** 2 * torch.mean((x_hat - x) ** 2)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        x_hat, bpp = decode(y, z)
    return x_hat.clamp(0, 1), float(bpp)


def refined_rows(codec: ImageTextCodec, seeds: list[int], qualities: list[int], steps: int, lmbda: float) -> list[dict]:
    """Per rate point: the dot grid the decoder draws from latents refined for each image (``refine_latents``)."""
    from itc_core.data import image_to_tensor, tensor_to_image

    if codec.config.image_codec.architecture != "mbt2018-mean":
        raise SystemExit(f"--refine codes mbt2018-mean latents (mean-scale hyperprior), not "
                         f"{codec.config.image_codec.architecture}")
    bpp: dict[int, list[float]] = {}

    def refined(image, q):
        net = codec.image_codec(q).net.requires_grad_(False)
        x_hat, rate = refine_latents(net, image_to_tensor(image), steps, lmbda)
        bpp.setdefault(q, []).append(rate)
        return tensor_to_image(x_hat)

    return [{"variant": "refined", **row, "estimated_bpp": float(np.mean(bpp[row["quality"]])), "lambda": lmbda,
             "steps": steps} for row in measure(codec, seeds, qualities, refined)]


def measure(codec: ImageTextCodec, seeds: list[int], qualities: list[int] | None = None, reconstruct=None) -> list[dict]:
    """Per rate point (default: all the preset's): mean and 90th percentile of the dot-grid contrast, the control's
    mean and the colour cosine, of ``reconstruct(image, quality)`` (default: a real round trip)."""
    reconstruct = reconstruct or codec.reconstruct
    rows = []
    for q in qualities or codec.config.image_codec.qualities:
        grid, control, cosine = [], [], []
        for seed in seeds:
            scene, image = generate_scene(seed), sample(seed)[0]
            recon = reconstruct(image, q)
            grid.append(dot_grid_contrast(recon, scene, seed))
            control.append(dot_grid_contrast(recon, scene, seed, shift=4))
            cosine.append(dot_grid_colour_cosine(recon, scene, seed))
        rows.append({"quality": q, "scenes": len(seeds), "contrast_mean": float(np.nanmean(grid)),
                     "contrast_p90": float(np.nanpercentile(grid, 90)), "control_mean": float(np.nanmean(control)),
                     "colour_cosine_mean": float(np.nanmean(cosine))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--semantic", action="store_true", help="also the preset's semantic variant")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME",
                        help="also this LIC variant of the preset (image_codec.variants; repeatable)")
    parser.add_argument("--refine", type=int, default=0, metavar="STEPS",
                        help="also the grid after STEPS steps of test-time latent refinement (0: skip)")
    parser.add_argument("--refine-qualities", type=int, nargs="+", default=[1, 2, 3], help="rate points to refine")
    parser.add_argument("--refine-lambda", type=float, default=1.0, help="λ of the refinement (1: bits almost free)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = plain_scenes(args.scenes)
    dotted = np.nanmean([dot_grid_contrast(render(replace(generate_scene(s), pattern="dotted"), seed=s),
                                           generate_scene(s), s) for s in seeds])
    codecs = {"base": ImageTextCodec.from_preset(args.preset)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["semantic"] * args.semantic + args.variant:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump({"base": args.preset, "image_codec": {"variant": name}}))
            codecs[name] = ImageTextCodec.from_preset(str(path))
        rows = [{"variant": name, **row} for name, codec in codecs.items() for row in measure(codec, seeds)]
    if args.refine:
        rows += refined_rows(codecs["base"], seeds, args.refine_qualities, args.refine, args.refine_lambda)
    print(f"{len(seeds)} plain-background test scenes; the dotted pattern itself: {dotted:.1f} levels")
    print(f"{'variant':>9} {'q':>2} {'grid mean':>10} {'grid p90':>9} {'control':>8} {'colour cos':>10}"
          "  (levels; cos: the grid against the dotted pattern's colour)")
    for r in rows:
        print(f"{r['variant']:>9} {r['quality']:>2} {r['contrast_mean']:10.2f} {r['contrast_p90']:9.2f} "
              f"{r['control_mean']:8.2f} {r['colour_cosine_mean']:10.3f}"
              + (f"  estimated {r['estimated_bpp']:.3f} bpp" if "estimated_bpp" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"dotted_pattern": dotted, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
