"""Out-of-domain honesty: the tiny preset's domain check (``itc_core/domain.py``), calibrated and measured.

    python benchmarks/out_of_domain.py [--calib-train 2000] [--calib-val 1000] [--test 1000] [--rule-scenes 200]
        [--nocap-scenes 200] [--size-scenes 20] [--qualities 1 6] [--figures DIR] [--threads 1] [--json out.json]

1. ``calibration``: palette coverage of train and val scenes (never test) and of the calibration set of
   out-of-world images (matplotlib's sample data and what is made from it: thumbnails, crops, grey, charts;
   noise, gradients, flat colours), and whether ``MIN_COVERAGE`` lies between the two.
2. ``held_out``: the check's verdicts on test scenes and on held-out out-of-world images (other crops and
   seeds, torchvision's FakeData, other charts), the confusion; scenes saved as JPEG or drawn at other sizes apart.
3. ``restorer``: what the tiny restorer does to in-world val scenes without a caption (why the decoder does not
   restore caption-less files) and to val scenes drawn at other sizes than 64 (why the size is part of the check).
4. ``rule``: test scenes coded by default and with ``domain_check=False``: the same files byte for byte, the
   same decoded images.
5. ``photos``: sample photos and images at ``--qualities``: the note, bytes and bpp, PSNR of the default decode,
   of the bare reconstruction, of the old behaviour (the LMM's caption, restored) and of WebP at the size of
   the default file; side-by-side PNGs in ``--figures`` (original | default decode | old | WebP).

No stage here uses the referee. Prints one JSON summary. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from itc_core.data import image_to_tensor
from itc_core.domain import MIN_COVERAGE, SCENE_SIZE, check_domain, palette_coverage
from itc_core.metrics import psnr as _psnr
from itc_core.tinyworld.scenes import caption, generate_scene, render, sample, split_seeds


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB of two PIL images of one size."""
    return round(_psnr(image_to_tensor(a), image_to_tensor(b)), 2)


def _sample_dir() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).parent


def _figure(draw, size=(4, 3), dpi=64) -> Image.Image:
    """A matplotlib figure drawn by ``draw(axes)`` as an RGB image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, dpi=dpi)
    draw(fig.add_subplot())
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _on_white(image: Image.Image) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA")).convert("RGB")


def _mapped(values: np.ndarray, cmap: str) -> Image.Image:
    from matplotlib import colormaps

    scaled = (values - values.min()) / max(np.ptp(values), 1e-12)
    return Image.fromarray((colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8))


def _crops(image: Image.Image, n: int, rng, size: int = 64) -> list[Image.Image]:
    out = []
    for _ in range(n):
        x, y = rng.integers(0, image.width - size + 1), rng.integers(0, image.height - size + 1)
        out.append(image.crop((int(x), int(y), int(x) + size, int(y) + size)))
    return out


def photos() -> dict[str, Image.Image]:
    """The real photos and pictures of matplotlib's sample data, as RGB."""
    sd = _sample_dir()
    with gzip.open(sd / "s1045.ima.gz") as f:
        mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float64)
    return {"grace_hopper": Image.open(sd / "grace_hopper.jpg").convert("RGB"),
            "blue_pack": _on_white(Image.open(sd / "Minduka_Present_Blue_Pack.png")),
            "mpl_logo": _on_white(Image.open(sd / "logo2.png")),
            "mri": Image.fromarray((mri / mri.max() * 255).astype(np.uint8)).convert("RGB")}


def calibration_images() -> dict[str, Image.Image]:
    """Out-of-world images the threshold was chosen on (seed 0)."""
    rng = np.random.default_rng(0)
    p = photos()
    grace = p["grace_hopper"]
    sd = _sample_dir()
    out = dict(p)
    out.update({"grace_64": grace.resize((64, 64), Image.LANCZOS), "grace_128": grace.resize((128, 128), Image.LANCZOS),
                "grace_grey": grace.convert("L").convert("RGB"), "grace_face_64": grace.crop((200, 150, 264, 214)),
                "blue_pack_64": p["blue_pack"].resize((64, 64), Image.LANCZOS),
                "mpl_logo_64": p["mpl_logo"].resize((64, 64), Image.LANCZOS),
                "dem_terrain": _mapped(np.load(sd / "jacksboro_fault_dem.npz")["elevation"], "terrain"),
                "bivariate_viridis_64": _mapped(np.load(sd / "axes_grid" / "bivariate_normal.npy"), "viridis")
                .resize((64, 64)),
                "line_plot": _figure(lambda a: a.plot(np.sin(np.linspace(0, 9, 100)))),
                "line_plot_64": _figure(lambda a: a.plot(np.sin(np.linspace(0, 9, 100))), size=(1, 1)),
                "bar_chart": _figure(lambda a: a.bar(range(5), [3, 1, 4, 1, 5], color="C1")),
                "gauss_noise_64": Image.fromarray(np.clip(rng.normal(128, 40, (64, 64, 3)), 0, 255).astype(np.uint8)),
                "pil_noise_64": Image.effect_noise((64, 64), 64).convert("RGB"),
                "mandelbrot_64": Image.effect_mandelbrot((64, 64), (-2, -1.5, 1, 1.5), 100).convert("RGB"),
                "linear_gradient_64": Image.linear_gradient("L").resize((64, 64)).convert("RGB"),
                "radial_gradient_64": Image.radial_gradient("L").resize((64, 64)).convert("RGB"),
                "flat_off_palette_64": Image.new("RGB", (64, 64), (100, 160, 90)),
                "flat_black_64": Image.new("RGB", (64, 64), (0, 0, 0)),
                "flat_white_64": Image.new("RGB", (64, 64), (255, 255, 255))})
    g = np.linspace(0, 1, 64)
    out["colour_gradient_64"] = Image.fromarray((np.stack(np.broadcast_arrays(g[None, :], g[:, None], 0.5), -1) * 255)
                                                .astype(np.uint8))
    for i, crop in enumerate(_crops(grace, 6, rng)):
        out[f"grace_crop_64_{i}"] = crop
    for i in range(3):
        out[f"uniform_noise_64_{i}"] = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return out


def held_out_images() -> dict[str, Image.Image]:
    """Out-of-world images never looked at when choosing the threshold (other seeds, other makers)."""
    import torchvision

    rng = np.random.default_rng(1)
    p = photos()
    grace, pack = p["grace_hopper"], p["blue_pack"]
    out = {f"grace_64_{name}": grace.resize((64, 64), f) for name, f in
           (("nearest", Image.NEAREST), ("bilinear", Image.BILINEAR), ("box", Image.BOX))}
    out["grace_64_mirrored"] = out["grace_64_bilinear"].transpose(Image.FLIP_LEFT_RIGHT)
    out["grace_256x300"] = grace.resize((256, 300), Image.LANCZOS)
    out["mri_64"] = p["mri"].resize((64, 64), Image.LANCZOS)
    out["topobathy"] = _mapped(np.load(_sample_dir() / "topobathy.npz")["topo"].astype(np.float64), "gist_earth")
    out["topobathy_64"] = out["topobathy"].resize((64, 64), Image.LANCZOS)
    out["scatter_64"] = _figure(lambda a: a.scatter(*rng.normal(size=(2, 50))), size=(1, 1))
    out["pie_64"] = _figure(lambda a: a.pie([3, 2, 1]), size=(1, 1))
    for i, crop in enumerate(_crops(grace, 10, rng)):
        out[f"grace_crop_64_s1_{i}"] = crop
    for i, crop in enumerate(_crops(pack, 4, rng)):
        out[f"blue_pack_crop_64_{i}"] = crop
    for i, (image, _) in enumerate(torchvision.datasets.FakeData(5, (3, 64, 64), random_offset=1)):
        out[f"torchvision_fake_64_{i}"] = image.convert("RGB")
    for i in range(3):
        out[f"uniform_noise_64_s1_{i}"] = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        out[f"flat_random_64_{i}"] = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
    for sigma in (20, 80):
        out[f"gauss_noise_64_sigma{sigma}"] = Image.fromarray(np.clip(rng.normal(128, sigma, (64, 64, 3)), 0, 255)
                                                              .astype(np.uint8))
    return out


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _stats(values: list[float]) -> dict:
    v = np.asarray(values)
    return {"n": len(v), "min": round(float(v.min()), 4), "p1": round(float(np.percentile(v, 1)), 4),
            "median": round(float(np.median(v)), 4), "max": round(float(v.max()), 4)}


def _size(image: Image.Image) -> str:
    return f"{image.width}x{image.height}"


def _verdicts(images: dict[str, Image.Image]) -> dict[str, dict]:
    out = {}
    for name, image in images.items():
        v = check_domain(image)
        out[name] = {"size": _size(image), "coverage": round(v.coverage, 4), "in_domain": v.in_domain}
    return out


def calibration(n_train: int, n_val: int, images: dict[str, Image.Image]) -> dict:
    """Coverage of train + val scenes and of the calibration images; where ``MIN_COVERAGE`` lies."""
    scenes = [palette_coverage(sample(s)[0]) for split, n in (("train", n_train), ("val", n_val))
              for s in split_seeds(split, n)]
    verdicts = _verdicts(images)
    scene_sized = {n: v["coverage"] for n, v in verdicts.items() if images[n].size == SCENE_SIZE}
    top = max(scene_sized, key=scene_sized.get)
    return {"scenes_train_val": _stats(scenes), "ood_64x64_highest": {top: scene_sized[top]},
            "min_coverage": MIN_COVERAGE, "threshold_between": scene_sized[top] < MIN_COVERAGE <= min(scenes),
            "ood_images": verdicts}


def held_out(n_test: int, n_variants: int, calib: dict[str, Image.Image], held: dict[str, Image.Image]) -> dict:
    """Verdicts on test scenes, on every out-of-world image, and on scene variants (JPEG, other sizes)."""
    test = [check_domain(sample(s)[0]) for s in split_seeds("test", n_test)]
    verdicts = _verdicts(held)
    ood_in = [n for n, im in {**calib, **held}.items() if check_domain(im).in_domain]
    n_ood = len(calib) + len(held)
    seeds = list(split_seeds("test", n_variants))
    variants = {f"jpeg{q}": [_jpeg(sample(s)[0], q) for s in seeds] for q in (95, 75)}
    variants.update({f"drawn_at_{n}px": [render(generate_scene(s), n, s) for s in seeds] for n in (32, 48, 96, 128)})
    scenes_in = sum(v.in_domain for v in test)
    return {"test_scenes": {"n": n_test, "in_domain": scenes_in, "coverage": _stats([v.coverage for v in test])},
            "confusion": {"scene->in": scenes_in, "scene->out": n_test - scenes_in,
                          "ood->in": len(ood_in), "ood->out": n_ood - len(ood_in)},
            "ood_called_in_domain": ood_in, "held_out_images": verdicts,
            "scene_variants_in_domain": {k: f"{sum(check_domain(im).in_domain for im in ims)}/{len(ims)}"
                                         for k, ims in variants.items()}}


def restorer_study(codec, n_nocap: int, n_sizes: int, qualities, calib: dict[str, Image.Image]) -> dict:
    """PSNR of val scenes: bare, restored without a caption, with the true one; and scenes drawn at other sizes.
    Also the palette coverage of reconstructions (why the decoder cannot repeat the encoder's palette check)."""
    restorer = codec.restorer
    seeds = list(split_seeds("val", n_nocap))
    scenes = [sample(s) for s in seeds]
    nocap, recon_coverage = {}, {}
    ood = [im for im in calib.values() if im.size == SCENE_SIZE]
    for q in qualities:
        recs = [codec.reconstruct(im, q) for im, _ in scenes]
        ood_max = max(palette_coverage(codec.reconstruct(im, q)) for im in ood)
        recon_coverage[f"q{q}"] = {"scenes": _stats([palette_coverage(r) for r in recs]),
                                   "ood_64x64_max": round(ood_max, 4)}
        without = restorer.restore_batch(recs, [""] * len(recs), qualities=[q] * len(recs))
        with_true = restorer.restore_batch(recs, [c for _, c in scenes], qualities=[q] * len(recs))
        bare = [psnr(im, r) for (im, _), r in zip(scenes, recs)]
        w0 = [psnr(im, r) for (im, _), r in zip(scenes, without)]
        w1 = [psnr(im, r) for (im, _), r in zip(scenes, with_true)]
        nocap[f"q{q}"] = {"bare": round(float(np.mean(bare)), 2), "no_caption": round(float(np.mean(w0)), 2),
                          "true_caption": round(float(np.mean(w1)), 2),
                          "no_caption_below_bare": f"{sum(a < b for a, b in zip(w0, bare))}/{len(bare)}"}
    sizes = {}
    seeds = list(split_seeds("val", n_sizes, 500))
    for n in (32, 48, 64, 96, 128):
        ims = [render(generate_scene(s), n, s) for s in seeds]
        for q in qualities:
            recs = [codec.reconstruct(im, q) for im in ims]
            out = restorer.restore_batch(recs, [caption(generate_scene(s)) for s in seeds], qualities=[q] * len(recs))
            bare, restored = [psnr(a, b) for a, b in zip(ims, recs)], [psnr(a, b) for a, b in zip(ims, out)]
            sizes[f"{n}px_q{q}"] = {"bare": round(float(np.mean(bare)), 2),
                                    "restored": round(float(np.mean(restored)), 2),
                                    "below_bare": f"{sum(a < b for a, b in zip(restored, bare))}/{len(bare)}"}
    return {"val_scenes_without_caption": nocap, "val_scenes_at_other_sizes_true_caption": sizes,
            "reconstruction_coverage": recon_coverage}


def rule(codec, n: int) -> dict:
    """Test scenes at the preset's quality: default vs ``domain_check=False``, files and decoded images."""
    same_file = same_image = restored = 0
    for s in split_seeds("test", n):
        image = sample(s)[0]
        a, b = codec.encode(image), codec.encode(image, domain_check=False)
        same_file += a.data == b.data and not a.notes
        da, db = codec.decode(a.data), codec.decode(b.data, domain_check=False)
        same_image += da.image.tobytes() == db.image.tobytes()
        restored += da.restored is not None
    return {"scenes": n, "same_file": same_file, "same_decoded_image": same_image, "restored_by_default": restored}


def _panel(image: Image.Image, label: str, height: int) -> Image.Image:
    scale = max(1, height // image.height)
    big = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    out = Image.new("RGB", (max(big.width, 8 * len(label)), big.height + 14), "white")
    out.paste(big, (0, 14))
    ImageDraw.Draw(out).text((2, 1), label, fill="black")
    return out


def side_by_side(panels: list[tuple[Image.Image, str]], path: Path) -> None:
    """One PNG of labelled panels, small images enlarged (nearest) to about 256 px."""
    height = max(256, max(im.height for im, _ in panels))
    tiles = [_panel(im, label, height) for im, label in panels]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * len(tiles), max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + 4
    sheet.save(path)


def photo_study(codec, qualities, figures: Path) -> dict:
    """Per photo and quality: the default file and decode, the old behaviour, and WebP at the same size."""
    from itc_core.evaluate import pillow_at_size

    p = photos()
    images = {"grace_hopper": p["grace_hopper"], "blue_pack": p["blue_pack"], "mpl_logo": p["mpl_logo"],
              "grace_64": p["grace_hopper"].resize((64, 64), Image.LANCZOS)}
    figures.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, image in images.items():
        for q in qualities:
            t = time.time()
            new = codec.encode(image, q)
            dec = codec.decode(new.data)
            old = codec.encode(image, q, domain_check=False)
            old_dec = codec.decode(old.data, domain_check=False)
            webp = pillow_at_size(image, "WEBP", len(new.data))
            row = {"size": f"{image.width}x{image.height}", "bytes": len(new.data), "bpp": round(new.bpp, 4),
                   "note": next((n for n in new.notes if "tiny-world" in n), None), "caption": new.caption,
                   "decode_note": dec.notes[0] if dec.notes else None, "restored_by_default": dec.restored is not None,
                   "psnr_default_decode": psnr(image, dec.image), "psnr_bare": psnr(image, dec.reconstruction),
                   "old_bytes": len(old.data), "old_caption": old.caption,
                   "psnr_old_restored": psnr(image, old_dec.image),
                   "webp_bytes": webp["bytes"], "webp_quality": webp["quality"], "webp_fits": webp["fits"],
                   "psnr_webp_same_size": psnr(image, webp["image"]),
                   "seconds": round(time.time() - t, 1)}
            row["default_no_worse_than_bare"] = row["psnr_default_decode"] >= row["psnr_bare"]
            side_by_side([(image, "original"), (dec.image, f"default {row['psnr_default_decode']} dB"),
                          (old_dec.image, f"old: restored {row['psnr_old_restored']} dB"),
                          (webp["image"], f"WebP {webp['bytes']} B {row['psnr_webp_same_size']} dB")],
                         figures / f"{name}_q{q}.png")
            out[f"{name}_q{q}"] = row
            print(f"{name} q{q}: {json.dumps(row)}", flush=True)
    return out


def check_cost() -> dict:
    """Median milliseconds of ``check_domain`` on a 64x64 scene and on grace_hopper.jpg (512x600)."""
    def ms(image):
        times = []
        for _ in range(20):
            t = time.perf_counter()
            check_domain(image)
            times.append(time.perf_counter() - t)
        return round(1000 * float(np.median(times)), 2)
    return {"scene_64_ms": ms(sample(2_000_000)[0]), "grace_hopper_ms": ms(photos()["grace_hopper"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib-train", type=int, default=2000)
    p.add_argument("--calib-val", type=int, default=1000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--variants", type=int, default=200, help="test scenes saved as JPEG / drawn at other sizes")
    p.add_argument("--rule-scenes", type=int, default=200)
    p.add_argument("--nocap-scenes", type=int, default=200)
    p.add_argument("--size-scenes", type=int, default=20)
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 6])
    p.add_argument("--figures", default="outputs/bench/out_of_domain", help="side-by-side PNGs of the photos")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], choices=["restorer", "rule", "photos"])
    p.add_argument("--json", help="also write the summary to this file")
    args = p.parse_args()
    import torch

    from itc_core.codec import ImageTextCodec

    torch.set_num_threads(args.threads)
    t0 = time.time()
    codec = ImageTextCodec.from_preset("tiny")
    codec.restorer.pipeline.set_progress_bar_config(disable=True)
    calib, held = calibration_images(), held_out_images()
    summary = {"check_cost": check_cost(), "calibration": calibration(args.calib_train, args.calib_val, calib),
               "held_out": held_out(args.test, args.variants, calib, held)}
    print(json.dumps(summary, indent=1), flush=True)
    if "restorer" not in args.skip:
        summary["restorer"] = restorer_study(codec, args.nocap_scenes, args.size_scenes, (1, 3), calib)
    if "rule" not in args.skip:
        summary["rule"] = rule(codec, args.rule_scenes)
    if "photos" not in args.skip:
        summary["photos"] = photo_study(codec, args.qualities, Path(args.figures))
    summary["minutes"] = round((time.time() - t0) / 60, 1)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
