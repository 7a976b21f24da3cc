"""The ``itc`` command (DESIGN §5): encode, decode, inspect, caption compress/decompress and tiny-zoo.

Errors a user can fix (bad file, unknown preset, wrong weights) print one
line ``itc: error: …`` on stderr and exit with status 2; ``--json`` prints one
JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import ItcError

__all__ = ["main"]


def _write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file so an interrupted run never leaves a half-written output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _read_bytes(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ItcError(f"{p}: no such file")
    return p.read_bytes()


def cmd_encode(args) -> None:
    from .codec import ImageTextCodec
    from .data import load_image

    image, notes = load_image(args.image)
    codec = ImageTextCodec.from_preset(args.preset)
    if args.target_bpp is not None:
        if args.quality is not None:
            raise ItcError("give --quality or --target-bpp, not both")
        result = codec.encode_at_bpp(image, args.target_bpp, args.caption)
    else:
        result = codec.encode(image, args.quality, args.caption)
    _write_bytes(Path(args.output), result.data)
    for note in notes:
        print(f"itc: note: {note}", file=sys.stderr)
    p = result.payload
    print(f"{args.output}: {len(result.data)} bytes, {result.bpp:.4f} bpp "
          f"({p.width}x{p.height}, preset {codec.config.name}, quality {result.quality})")
    if result.caption is not None:
        c = result.caption_payload
        print(f"caption ({c.method}, {c.bits} bits): {result.caption}")


def cmd_decode(args) -> None:
    from . import bitstream
    from .codec import ImageTextCodec

    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp"):
        raise ItcError(f"{out}: write a lossless image (.png, .bmp, .tif, .ppm, .webp), not {out.suffix or 'no suffix'}")
    data = _read_bytes(args.file)
    preset = args.preset or bitstream.unpack(data).preset
    if preset == "custom":
        raise ItcError(f"{args.file} was encoded with a custom preset YAML: pass it with --preset PATH")
    restore_args = {k: getattr(args, k) for k in ("steps", "guidance", "seed") if getattr(args, k) is not None}
    if args.no_colour_fix:
        restore_args["colour_fix"] = False
    if args.no_restore and restore_args:
        raise ItcError(f"--no-restore writes the bare reconstruction: drop --{'/--'.join(restore_args).replace('_', '-')}")
    result = ImageTextCodec.from_preset(preset).decode(data, restore=not args.no_restore, **restore_args)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part" + out.suffix)
    result.image.save(tmp, lossless=True) if out.suffix.lower() == ".webp" else result.image.save(tmp)
    tmp.replace(out)
    print(f"{out}: {result.file.width}x{result.file.height}")
    if result.caption is not None:
        print(f"caption: {result.caption}")


def cmd_inspect(args) -> None:
    from . import bitstream
    from .codec import ImageTextCodec, describe

    data = _read_bytes(args.file)
    f = bitstream.unpack(data)
    caption = None
    if f.text_method and not args.no_caption:
        preset = args.preset or f.preset
        if preset == "custom":
            raise ItcError(f"{args.file} was encoded with a custom preset YAML: pass it with --preset PATH "
                           "(or --no-caption)")
        caption = ImageTextCodec.from_preset(preset).decode(data, restore=False).caption
    info = describe(data, caption)
    if args.json:
        print(json.dumps(info))
        return
    print(f"{args.file}: {info['width']}x{info['height']}, preset {info['preset']}, LIC quality {info['quality']}")
    print(f"  total    {info['bytes_total']:6d} bytes  {info['bpp_total']:.4f} bpp")
    print(f"  image    {info['bytes_image']:6d} bytes  {info['bpp_image']:.4f} bpp  strings {info['bytes_per_string']}")
    print(f"  text     {info['bytes_text']:6d} bytes  {info['bpp_text']:.4f} bpp  ({info['text_method'] or 'no caption'})")
    print(f"  overhead {info['bytes_overhead']:6d} bytes (header, lengths, CRCs)")
    print(f"  caption  {info['caption']!r}")
    print(f"  models   {info['models']}")


def _caption_context(args, method: str):
    """(LMM or None, context image or None) for the caption commands."""
    from .caption_codec import LM_METHODS
    from .codec import ImageTextCodec
    from .data import load_image

    codec = ImageTextCodec.from_preset(args.preset)
    lm = codec.lmm if method in LM_METHODS else None
    context = load_image(args.context_image)[0] if args.context_image else None
    return lm, context


def cmd_caption_compress(args) -> None:
    import zlib

    from .caption_codec import METHOD_CODES, compress_caption
    from .config import load_config

    method = args.method or load_config(args.preset).caption.method
    lm, context = _caption_context(args, method)
    payload = compress_caption(args.text, method, lm, context)
    if args.output:
        # A standalone caption file: method code, CRC-32 of the caption, then the payload.
        header = bytes([METHOD_CODES[method]]) + zlib.crc32(args.text.encode("utf-8")).to_bytes(4, "big")
        _write_bytes(Path(args.output), header + payload.data)
    info = {"method": method, "chars": payload.chars, "tokens": payload.tokens, "bits": payload.bits,
            "bytes": len(payload.data), "nll_bits": payload.nll_bits, "file": args.output}
    if args.json:
        print(json.dumps(info))
    else:
        nll = f", model NLL {payload.nll_bits:.1f} bits" if payload.nll_bits is not None else ""
        print(f"{method}: {payload.chars} characters -> {payload.bits} bits{nll}" + (f" -> {args.output}" if args.output else ""))


def cmd_caption_decompress(args) -> None:
    import zlib

    from .caption_codec import METHOD_CODES, decompress_caption

    data = _read_bytes(args.file)
    names = {code: name for name, code in METHOD_CODES.items()}
    if len(data) < 5 or data[0] not in names:
        raise ItcError(f"{args.file}: not a caption file written by `itc caption compress -o`")
    method = names[data[0]]
    if args.method and args.method != method:
        raise ItcError(f"{args.file} was coded with {method}, not {args.method}")
    lm, context = _caption_context(args, method)
    text = decompress_caption(data[5:], method, lm, context)
    if zlib.crc32(text.encode("utf-8")) != int.from_bytes(data[1:5], "big"):
        raise ItcError(f"{args.file}: decoded caption fails its CRC-32 (damaged file, or another model or "
                       "context image than the encoder's)")
    sys.stdout.write(text + "\n")


def cmd_tiny_zoo(args) -> None:
    import torch

    from .config import data_dir
    from .tinyworld.train_lic import LicRecipe, train_lic_zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.out) if args.out else data_dir() / "tiny"
    work = Path(args.workdir)
    if args.only in (None, "lic"):
        recipe = LicRecipe()
        if args.steps is not None:
            recipe.base_steps = recipe.steps = args.steps
        manifest = train_lic_zoo(root / "lic", work / "lic", recipe, args.qualities)
        for q, entry in manifest["models"].items():
            t = entry["test"]
            print(f"q{q}: {t['bpp_real']:.4f} bpp real ({t['bpp_estimated']:.4f} estimated), "
                  f"{t['psnr_db']:.2f} dB on {t['scenes']} test scenes -> {root / 'lic' / entry['file']}")
    if args.only in (None, "clip"):
        from .tinyworld.train_clip import ClipRecipe, train_clip
        recipe = ClipRecipe()
        if args.steps is not None:
            recipe.steps = args.steps
        report = train_clip(root / "clip", work / "clip", recipe)
        print(f"clip: retrieval top-1 {report['retrieval_top1']:.3f} ({report['retrieval']}) -> {root / 'clip'}")
    if args.only in (None, "lmm"):
        from .tinyworld.train_lmm import LmmRecipe, train_lmm
        recipe = LmmRecipe()
        if args.steps is not None:
            recipe.steps = args.steps
        report = train_lmm(root / "lmm", root / "clip", work / "lmm", recipe, lic_dir=root / "lic")
        acc = report["captioning_original"]
        print(f"lmm: exact captions {acc['exact']:.3f}, shape {acc['shape']:.3f}, colour {acc['colour']:.3f} "
              f"-> {root / 'lmm'}")
    if args.only in (None, "referee"):
        from .tinyworld.train_referee import RefereeRecipe, train_referee
        recipe = RefereeRecipe()
        if args.steps is not None:
            recipe.steps = args.steps
        acc = train_referee(root / "referee", work / "referee", recipe)["test"]["test_originals"]
        print(f"referee: exact scenes {acc['exact']:.3f}, shape {acc['shape']:.3f}, colour {acc['colour']:.3f}, "
              f"pattern {acc['pattern']:.3f} on {recipe.eval_scenes} test originals -> {root / 'referee'}")
    if args.only in (None, "restorer"):
        from .tinyworld.train_restorer import RestorerRecipe, train_restorer
        recipe = RestorerRecipe()
        for key in ("steps", "batch_size", "max_minutes"):
            if getattr(args, key) is not None:
                setattr(recipe, key, getattr(args, key))
        report = train_restorer(root / "restorer", root / "clip", work / "restorer", recipe, device=args.device)
        for v in report["val"]:
            print(f"restorer q{v['quality']}: PSNR {v['psnr_reconstruction']:.2f} dB (reconstruction) -> "
                  f"{v['psnr_no_caption']:.2f} (no caption) -> {v['psnr_true_caption']:.2f} (true caption) "
                  f"-> {root / 'restorer'}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``itc`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="itc", description="LMM-driven semantic image-text coding.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="code an image into an .itc file")
    p.add_argument("image", help="PNG/JPEG/... of any size and mode")
    p.add_argument("-o", "--output", required=True, help="the .itc file to write")
    p.add_argument("--preset", default="tiny", help="tiny (default), laptop, paper or a YAML path")
    p.add_argument("--quality", type=int, help="LIC rate point (default: the preset's)")
    p.add_argument("--target-bpp", type=float, help="highest quality whose file fits this many bits per pixel")
    p.add_argument("--caption", help="the caption to store (default: the preset's LMM writes one)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="rebuild the image of an .itc file")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="image to write (.png)")
    p.add_argument("--preset", help="a YAML path, for files encoded with a custom preset (default: the file's)")
    p.add_argument("--no-restore", action="store_true", help="write the bare LIC reconstruction (no diffusion)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument("--guidance", type=float, help="caption guidance scale (default: the preset's)")
    p.add_argument("--seed", type=int, help="noise seed (default: the preset's)")
    p.add_argument("--no-colour-fix", action="store_true", help="skip the wavelet colour fix")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("inspect", help="sizes, bpp split and models of an .itc file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--preset", help="a YAML path, for files encoded with a custom preset (default: the file's)")
    p.add_argument("--no-caption", action="store_true", help="do not load the LMM to decode the caption")
    p.set_defaults(func=cmd_inspect)

    caption = sub.add_parser("caption", help="code a caption on its own").add_subparsers(dest="caption_command",
                                                                                        required=True)
    from .caption_codec import METHODS
    for name, func in (("compress", cmd_caption_compress), ("decompress", cmd_caption_decompress)):
        p = caption.add_parser(name, help=f"{name} a caption")
        p.add_argument("text" if name == "compress" else "file")
        if name == "compress":
            p.add_argument("-o", "--output", help="write the payload (with a 5-byte header) to this file")
            p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        p.add_argument("--method", choices=METHODS, help="coding method (default: the preset's)")
        p.add_argument("--context-image", help="the decoded reconstruction, for lmm-ac")
        p.add_argument("--preset", default="tiny", help="whose LMM codes the caption")
        p.set_defaults(func=func)

    p = sub.add_parser("tiny-zoo", help="retrain the tiny world's models into data/")
    p.add_argument("--only", choices=["lic", "clip", "lmm", "referee", "restorer"],
                   help="which part to train (default: all, in order)")
    p.add_argument("--qualities", type=int, nargs="+", help="rate points to train (default: all)")
    p.add_argument("--steps", type=int, help="training steps per stage (default: the recipe's)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--device", default="cpu", help="restorer: where to train (cpu, cuda)")
    p.add_argument("--batch-size", type=int, help="restorer: training batch (default: the recipe's)")
    p.add_argument("--max-minutes", type=float, help="restorer: stop training after this long, then export")
    p.add_argument("--out", help="where the models go, one folder per part (default: data/tiny)")
    p.add_argument("--workdir", default="outputs/tiny-zoo", help="checkpoints for resuming")
    p.set_defaults(func=cmd_tiny_zoo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``itc``; returns the exit status."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars around one-line errors
    # CompressAI's import-time torch.jit.script deprecation notice is not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ItcError as err:
        print(f"itc: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # unwritable output, full disk, ...
        print(f"itc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("itc: interrupted", file=sys.stderr)
        return 130
    return 0


def main_entry() -> None:
    """Console-script entry point: ``itc``."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
