"""The ``itc`` command (docs/design.md §5): encode, decode, inspect, caption compress/decompress, eval and tiny-zoo.

Errors a user can fix (bad file, unknown preset, wrong weights) print one
line ``itc: error: …`` on stderr and exit with status 2; ``--json`` prints one
JSON object on stdout.

Every check that needs no model runs before any model loads: options and
their combinations, the preset and its rate points, each image's size (read
from its header: sides of at most ``bitstream.MAX_SIDE`` px and
``bitstream.MAX_PIXELS`` pixels) and readability, each ``.itc`` file's header.
A bad argument prints the usage and ``itc: error: …`` (argparse's exit status 2).

``encode`` and ``decode`` take many inputs (files, directories, glob patterns)
into an output directory: the models load once, each output is written
atomically, a failed input prints ``itc: error: FILE: …`` while the others go
on, and the exit status is 2 if any failed.

Progress bars go to stderr, and only to a terminal: a batch's bar over its
files, and for one file the restorer's denoising steps; the libraries' loading
bars never. ``--quiet`` drops them all.

Start-up matters (a user may call ``itc`` once per file): every stage is
imported inside the command that needs it, so ``itc --help`` and
``itc inspect --sizes`` import neither torch nor CompressAI, and the caption
commands never import CompressAI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

from .errors import ConfigError, ItcError, WeightsError

__all__ = ["main"]


def _write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file so an interrupted run never leaves a half-written output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_image(image, path: Path) -> None:
    """Save a PIL image atomically (lossless WebP when the suffix asks for WebP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)  # keeps the suffix: PIL picks the format from it
    try:
        image.save(tmp, lossless=True) if path.suffix.lower() == ".webp" else image.save(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_bytes(path: str) -> bytes:
    p = Path(path)
    if p.is_dir():
        raise ItcError(f"{p}: is a directory, not a file")
    if not p.is_file():
        raise ItcError(f"{p}: no such file")
    return p.read_bytes()


_GLOB_CHARS = set("*?[")


def _is_batch(inputs: list[str], output: str) -> bool:
    """Several inputs, a directory or glob among them, or an output directory: batch mode."""
    return (len(inputs) > 1 or output.endswith(("/", os.sep)) or Path(output).is_dir()
            or any(Path(i).is_dir() or (_GLOB_CHARS & set(i) and not Path(i).exists()) for i in inputs))


def _expand(inputs: list[str], suffixes: tuple[str, ...], what: str) -> tuple[list[Path], list[str]]:
    """The files ``inputs`` name (files as given, a directory's ``suffixes`` files, glob patterns expanded),
    without repeats, and one error message per input that names none."""
    import glob

    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                errors.append(f"{item}: no {what} in this directory ({', '.join(suffixes)})")
        elif _GLOB_CHARS & set(item) and not path.exists():
            found = [Path(p) for p in sorted(glob.glob(item)) if Path(p).is_file()]
            if not found:
                errors.append(f"{item}: no file matches this pattern")
        elif path.is_file():
            found = [path]
        else:
            found = []
            errors.append(f"{item}: no such file")
        files += found
    seen, unique = set(), []
    for p in files:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique, errors


def _plan(files: list[Path], out_dir: Path, suffix: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, output) pairs, ``out_dir/<stem><suffix>``; an input whose output another input already takes is an error."""
    taken, pairs, errors = {}, [], []
    for path in files:
        out = out_dir / (path.stem + suffix)
        if out in taken:
            errors.append(f"{path}: its output {out} comes from {taken[out]} already in this run; "
                          "code one of them in another call")
        else:
            taken[out] = path
            pairs.append((path, out))
    return pairs, errors


def _one_line(err: Exception) -> str:
    """``err``'s message on one line (a YAML parser's, for one, spans several, with a caret under the column)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip(" ^"))


def _error_line(path: Path, err: Exception) -> str:
    message = _one_line(err)
    return f"itc: error: {message}" if message.startswith(f"{path}:") else f"itc: error: {path}: {message}"


def _run_batch(inputs: list[str], output: str, suffixes: tuple[str, ...], what: str, out_suffix: str,
               code_one, verb: str, check_one=None, quiet: bool = False) -> int:
    """Code every file ``inputs`` name into the directory ``output``; one error line per failed input.

    ``check_one(path)``, when given, checks one input without any model; it runs over every input before
    the first ``code_one``, so the inputs it refuses are reported before any model loads.
    ``code_one(path, out)`` codes one file and returns ``(bytes of the .itc file, bits per pixel)``.
    Errors a user can fix about one input (:class:`ItcError`, ``OSError``) are reported and the batch goes
    on; missing model weights (:class:`WeightsError`) concern every input and stop it. ``quiet``: no
    progress bar. Returns 2 if any input failed, else 0.
    """
    from tqdm.auto import tqdm

    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ItcError(f"{output}: several inputs need an output directory, and this is a file")
    files, errors = _expand(inputs, suffixes, what)
    pairs, collisions = _plan(files, out_dir, out_suffix)
    for message in errors + collisions:
        print(f"itc: error: {message}", file=sys.stderr)
    failed, sizes, bpps = len(errors) + len(collisions), [], []
    if check_one is not None:
        pairs, refused = _checked(pairs, check_one)
        failed += refused
    for path, out in tqdm(pairs, desc=f"itc {verb}", unit="file", disable=True if quiet else None):
        try:
            size, bpp = code_one(path, out)
        except WeightsError:
            raise
        except (ItcError, OSError) as err:
            tqdm.write(_error_line(path, err), file=sys.stderr)
            failed += 1
            continue
        sizes.append(size)
        bpps.append(bpp)
    mean = f", mean {sum(bpps) / len(bpps):.4f} bpp" if bpps else ""
    print(f"{verb}d {len(sizes)} of {len(sizes) + failed} files into {out_dir}: {sum(sizes)} bytes of .itc{mean}"
          + (f"; {failed} failed" if failed else ""))
    return 2 if failed else 0


def _checked(pairs: list[tuple[Path, Path]], check_one) -> tuple[list[tuple[Path, Path]], int]:
    """The pairs whose input passes ``check_one``, and how many did not (each reported on one line)."""
    kept, refused = [], 0
    for path, out in pairs:
        try:
            check_one(path)
        except (ItcError, OSError) as err:
            print(_error_line(path, err), file=sys.stderr)
            refused += 1
        else:
            kept.append((path, out))
    return kept, refused


def _encode(codec, image, args):
    """``codec``'s encoding of ``image`` with the options of ``args`` (``--quality`` or ``--target-bpp``, caption)."""
    if args.target_bpp is not None:
        return codec.encode_at_bpp(image, args.target_bpp, args.caption, args.caption_select, args.caption_method,
                                   not args.no_domain_check)
    return codec.encode(image, args.quality, args.caption, args.caption_method, args.caption_select,
                        not args.no_domain_check)


def _bits_text(bits: float) -> str:
    """Bits to one decimal, with two significant digits below 0.1: a caption the LMM is sure of (0.002 bits)
    must not read as free."""
    return f"{bits:.1f} bits" if abs(bits) >= 0.1 or bits == 0 else f"{bits:.2g} bits"


def _encode_report(output, result, codec) -> list[str]:
    lines = [f"{output}: {len(result.data)} bytes, {result.bpp:.4f} bpp "
             f"({result.width}x{result.height}, preset {codec.config.name}, quality {result.quality})"]
    if result.caption is not None:
        source = result.caption_choice.describe() if result.caption_choice else "given"
        method = result.caption_payload.method + (" by auto" if result.caption_payload.method_choice else "")
        lines.append(f"caption ({method}, {_bits_text(result.bits['caption'])}, {source}): {result.caption}")
    return lines


def _set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _hide_library_bars() -> None:
    """``--quiet``: no progress bars from huggingface_hub, transformers or diffusers, imported yet or not."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when they are imported
    for name in ("transformers", "diffusers"):  # transformers' switch turns huggingface_hub's off too
        if name in sys.modules:
            sys.modules[name].utils.logging.disable_progress_bar()


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


MAX_THREADS = 1024


def _threads(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS} threads, got {value}")
    return value


def _writable_parent(path: Path) -> None:
    """Refuse, before any work, an output whose folder cannot be made: a file stands in its path."""
    for parent in path.parents:  # nearest first
        if parent.exists():
            if not parent.is_dir():
                raise ItcError(f"{path}: {parent} is a file, not a directory")
            return


def _encode_config(args):
    """The preset's :class:`~itc_core.config.Config`, once the options pass the checks that need no model."""
    from .caption_methods import LM_METHODS
    from .config import load_config

    if args.target_bpp is not None and args.quality is not None:
        raise ItcError("give --quality or --target-bpp, not both")
    if args.target_bpp is not None and not (math.isfinite(args.target_bpp) and args.target_bpp > 0):
        raise ItcError(f"--target-bpp must be a positive number, got {args.target_bpp}")
    if args.caption is not None and args.caption_select:
        raise ItcError("give --caption or --caption-select (which LMM caption to keep), not both")
    config = load_config(args.preset)
    qualities = config.image_codec.qualities
    if args.quality is not None and args.quality not in qualities:
        raise ConfigError(f"quality {args.quality} not offered by preset {config.name}; "
                          f"valid: {', '.join(map(str, qualities))}")
    if args.caption_method in LM_METHODS and not config.caption.lmm:
        raise ConfigError(f"--caption-method {args.caption_method} needs an LMM, and preset {config.name} has none "
                          "(use utf8, zlib, lzma or auto)")
    return config


def cmd_encode(args) -> int:
    config = _encode_config(args)
    if args.quiet:
        _hide_library_bars()
    if not _is_batch(args.images, args.output):
        return _encode_single(args, config)
    from .codec import ImageTextCodec
    from .data import check_image

    _set_threads(args)
    codec = ImageTextCodec(config)  # no model yet: they load with the first image that passes check_image

    def code_one(path: Path, out: Path) -> tuple[int, float]:
        from tqdm.auto import tqdm

        from .data import load_image

        image, notes = load_image(path)
        result = _encode(codec, image, args)
        _write_bytes(out, result.data)
        for note in notes + result.notes:  # the image's conversions, then the codec's (e.g. an empty caption)
            tqdm.write(f"itc: note: {path}: {note}", file=sys.stderr)
        tqdm.write("\n".join(_encode_report(out, result, codec)))
        return len(result.data), result.bpp

    return _run_batch(args.images, args.output, _image_suffixes(), "images", ".itc", code_one, "encode",
                      check_image, args.quiet)


def _image_suffixes() -> tuple[str, ...]:
    """File suffixes PIL can read (what a directory given to ``itc encode`` contributes)."""
    from PIL import Image

    return tuple(sorted(s for s, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


def _encode_single(args, config) -> int:
    from .data import check_image, load_image

    _writable_parent(Path(args.output))
    check_image(args.images[0])  # from the header: an image too large is refused before its pixels are read
    image, notes = load_image(args.images[0])
    _set_threads(args)
    from .codec import ImageTextCodec  # torch: only once the image has passed

    codec = ImageTextCodec(config)
    result = _encode(codec, image, args)
    _write_bytes(Path(args.output), result.data)
    for note in notes + result.notes:  # the image's conversions, then the codec's (e.g. an empty caption)
        print(f"itc: note: {note}", file=sys.stderr)
    print("\n".join(_encode_report(args.output, result, codec)))
    return 0


_LOSSLESS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp")


def _itc_file(path, preset: str | None) -> tuple[bytes, str]:
    """(the bytes of the .itc file ``path``, the preset to decode it with), its header checked: no model needed."""
    from . import bitstream

    data = _read_bytes(path)
    stored = bitstream.unpack(data).preset  # also with a --preset: the header is checked before any model
    preset = preset or stored
    if preset == "custom":
        raise ItcError(f"{path} was encoded with a custom preset YAML: pass it with --preset PATH")
    return data, preset


def _decoder_class(show_bar: bool):
    """:class:`~itc_core.codec.ImageTextCodec` whose restorer loads (when a decode first uses it) without
    diffusers' loading bar and runs with its denoising bar only when ``show_bar``, and then only on a terminal
    (tqdm's ``disable=None``)."""
    from .codec import ImageTextCodec  # torch: imported once a file's header has passed

    class Decoder(ImageTextCodec):
        @property
        def restorer(self):
            """The preset's restorer, its bars set as :func:`_decoder_class` says."""
            restorer = super().restorer
            if restorer.enabled:
                import diffusers

                diffusers.utils.logging.disable_progress_bar()  # "Loading pipeline components...", as transformers'
                restorer.pipeline.set_progress_bar_config(disable=None if show_bar else True)
            return restorer

    return Decoder


def _check_restore_args(args) -> None:
    """``--steps``, ``--guidance`` and ``--seed`` within what the restorer takes, checked before any model loads."""
    if args.steps is not None and args.steps < 1:
        raise ItcError(f"--steps must be at least 1, got {args.steps}")
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        raise ItcError(f"--guidance must be a number >= 0, got {args.guidance}")
    if args.seed is not None and not 0 <= args.seed < 1 << 64:  # what torch.Generator.manual_seed takes
        raise ItcError(f"--seed must be 0 to 2**64 - 1, got {args.seed}")


def cmd_decode(args) -> int:
    codecs = {}
    restore_args = {k: getattr(args, k) for k in ("steps", "guidance", "seed") if getattr(args, k) is not None}
    if args.no_colour_fix:
        restore_args["colour_fix"] = False
    if args.no_restore and restore_args:
        raise ItcError(f"--no-restore writes the bare reconstruction: drop --{'/--'.join(restore_args).replace('_', '-')}")
    _check_restore_args(args)
    if args.quiet:
        _hide_library_bars()
    batch = _is_batch(args.files, args.output)

    def decode(path) -> tuple:
        """(DecodeResult, file size) of one .itc file; the codec of each preset is loaded once."""
        data, preset = _itc_file(path, args.preset)
        if preset not in codecs:
            _set_threads(args)
            # One file shows the denoising bar; a batch, its own bar over the files.
            codecs[preset] = _decoder_class(show_bar=not (args.quiet or batch)).from_preset(preset)
        return codecs[preset].decode(data, restore=False if args.no_restore else None, domain_check=not args.no_domain_check,
                                     **restore_args), len(data)

    if not batch:
        out = Path(args.output)
        if out.suffix.lower() not in _LOSSLESS:
            raise ItcError(f"{out}: write a lossless image (.png, .bmp, .tif, .ppm, .webp), not {out.suffix or 'no suffix'}")
        _writable_parent(out)
        result, _ = decode(args.files[0])
        _save_image(result.image, out)
        for note in result.notes:  # e.g. why the restorer left the file as it is
            print(f"itc: note: {note}", file=sys.stderr)
        print("\n".join(_decode_report(out, result)))
        return 0
    if args.preset:
        from .config import load_config

        load_config(args.preset)  # a bad --preset is one error, not one per file

    def code_one(path: Path, out: Path) -> tuple[int, float]:
        from tqdm.auto import tqdm

        result, size = decode(path)
        _save_image(result.image, out)
        for note in result.notes:
            tqdm.write(f"itc: note: {path}: {note}", file=sys.stderr)
        tqdm.write("\n".join(_decode_report(out, result)))
        return size, 8 * size / (result.file.width * result.file.height)

    return _run_batch(args.files, args.output, (".itc",), ".itc files", ".png", code_one, "decode",
                      lambda path: _itc_file(path, args.preset), args.quiet)


def _decode_report(out, result) -> list[str]:
    lines = [f"{out}: {result.file.width}x{result.file.height}"]
    if result.caption is not None:
        lines.append(f"caption: {result.caption}")
    return lines


def file_sizes(data: bytes) -> dict:
    """Fields and byte split of ``.itc`` bytes, read without any model (no torch, no CompressAI).

    :func:`itc_core.bitstream.sizes` plus ``sections`` (name -> bytes; they add up to ``bytes_total``).
    The check is not verified: that needs the models (the full ``itc inspect``).
    """
    from . import bitstream

    info = bitstream.sizes(data)
    info["sections"] = {"header": info["bytes_header"], "payload": info["bytes_payload"], "check": info["bytes_check"]}
    return info


def _inspect_sizes(args) -> None:
    info = file_sizes(_read_bytes(args.file))
    if args.json:
        print(json.dumps(info))
        return
    print(f"{args.file}: {info['width']}x{info['height']}, preset {info['preset']}, LIC quality {info['quality']}, "
          f"caption {info['text_method'] or 'none'}, format v{info['version']}")
    print(f"  total    {info['bytes_total']:6d} bytes  {info['bpp_total']:.4f} bpp")
    for name, what in (("header", "size, preset, quality, method, fingerprint"),
                       ("payload", "one range-coded stream: z, y, caption"), ("check", "CRC-16, not verified here")):
        print(f"  {name:8s} {info['sections'][name]:6d} bytes  ({what})")


def cmd_inspect(args) -> None:
    if args.sizes:
        return _inspect_sizes(args)
    from . import bitstream

    data, preset = _itc_file(args.file, args.preset)
    f = bitstream.unpack(data)
    from .codec import ImageTextCodec, describe  # torch: only once the file's header has passed

    codec = ImageTextCodec.from_preset(preset)
    decoded = codec.decode(data, caption=not args.no_caption, restore=False)
    models = {"lic": codec.image_codec(f.quality).fingerprint[:12]}
    if f.text_method in ("rank-zlib", "lm-ac", "lmm-ac") and not args.no_caption:
        models["lmm"] = codec.lmm.fingerprint[:12]
    info = describe(data, decoded, models)
    if args.json:
        print(json.dumps(info))
        return
    bits, pixels = info["bits"], info["width"] * info["height"]
    print(f"{args.file}: {info['width']}x{info['height']}, preset {info['preset']}, LIC quality {info['quality']}, "
          f"format v{info['version']}")
    print(f"  total       {info['bytes_total']:6d} bytes  {info['bpp_total']:.4f} bpp")
    for part, what in (("header", "size, preset, quality, method, fingerprint"), ("z", "hyperlatents"),
                       ("y", "latents"), ("caption", info["text_method"] or "no caption"),
                       ("termination", "trimmed flush of the one stream"), ("check", "CRC-16")):
        print(f"  {part:<11} {bits[part]:8.1f} bits  {bits[part] / pixels:.4f} bpp  ({what})")
    verified = "verified" if info["check_verified"] else "not verified (--no-caption)"
    print(f"  caption     {info['caption']!r}")
    print(f"  check       {verified}")
    print(f"  models      {info['models']}")


def _caption_context(args, method: str):
    """(LMM or None, context image or None) for the caption commands."""
    if method == "lmm-ac" and not args.context_image:  # before seconds of model loading, not after
        raise ItcError("lmm-ac needs the decoded reconstruction as --context-image (or pick --method lm-ac)")
    from .caption_codec import LM_METHODS
    from .codec import ImageTextCodec
    from .data import load_image

    context = load_image(args.context_image)[0] if args.context_image else None  # before the LMM loads
    codec = ImageTextCodec.from_preset(args.preset)
    lm = codec.lmm if method in LM_METHODS or method == "auto" and codec.config.caption.lmm else None
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
        header = bytes([METHOD_CODES[payload.method]]) + zlib.crc32(args.text.encode("utf-8")).to_bytes(4, "big")
        _write_bytes(Path(args.output), header + payload.data)
    info = {"method": payload.method, "chars": payload.chars, "tokens": payload.tokens, "bits": payload.bits,
            "bytes": len(payload.data), "nll_bits": payload.nll_bits, "file": args.output}
    if args.json:
        print(json.dumps(info))
    else:
        nll = f", model NLL {payload.nll_bits:.1f} bits" if payload.nll_bits is not None else ""
        print(f"{payload.method}: {payload.chars} characters -> {payload.bits} bits{nll}" + (f" -> {args.output}" if args.output else ""))


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


def _train_device(choice: str | None) -> str:
    """``cpu`` or ``cuda`` for the recipes that need one: ``auto`` takes a GPU when there is one; unset: CPU."""
    import torch

    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def cmd_tiny_zoo(args) -> None:
    import torch

    from .config import data_dir
    from .tinyworld.train_lic import load_lic_recipe, train_lic_zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.out).resolve() if args.out else data_dir() / "tiny"  # run configs read relative paths from data/
    work = Path(args.workdir)
    if args.only in (None, "lic"):
        recipe = load_lic_recipe(overrides={"train": {"steps": args.steps}} if args.steps is not None else None)
        manifest = train_lic_zoo(root / "lic", work / "lic", recipe, args.qualities, device=args.device,
                                 max_minutes=args.max_minutes, compile=args.compile)
        for q, entry in manifest["models"].items():
            t = entry["test"]
            print(f"q{q}: {t['bpp_real']:.4f} bpp real ({t['bpp_estimated']:.4f} estimated), "
                  f"{t['psnr_db']:.2f} dB on {t['scenes']} test scenes -> {root / 'lic' / entry['file']}")
    if args.only == "lic-semantic":  # not part of the default chain: it fine-tunes the shipped base
        from .tinyworld.train_lic import train_semantic_zoo
        manifest = train_semantic_zoo(root / "lic-semantic", root / "lic", work / "lic-semantic", args.qualities,
                                      device=args.device, max_minutes=args.max_minutes, steps=args.steps)
        for q, entry in manifest["models"].items():
            t = entry["test"]
            print(f"q{q} (semantic, λ={entry['lambda']:.4g}): {t['bpp_real']:.4f} bpp real, {t['psnr_db']:.2f} dB "
                  f"-> {root / 'lic-semantic' / entry['file']}")
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
        report = train_lmm(root / "lmm", root / "clip", work / "lmm", recipe, lic_dir=root / "lic",
                           device=_train_device(args.device))
        acc = report["captioning_original"]
        print(f"lmm: exact captions {acc['exact']:.3f}, shape {acc['shape']:.3f}, colour {acc['colour']:.3f} "
              f"-> {root / 'lmm'}")
    if args.only in (None, "clip-rerank"):  # ranks caption candidates (caption.rank_clip): needs the clip and the lmm
        from dataclasses import replace

        from .tinyworld.train_clip import RERANK_RECIPE, train_clip
        default_root = root.resolve() == (data_dir() / "tiny").resolve()

        def part(name: str) -> str:  # "tiny/lmm" when training into data/tiny (as the shipped report reads)
            return f"tiny/{name}" if default_root else str(root / name)
        recipe = replace(RERANK_RECIPE, vision_from=part("lmm"), text_from=part("clip"))
        if args.steps is not None:
            recipe.steps = args.steps
        report = train_clip(root / "clip-rerank", work / "clip-rerank", recipe, _train_device(args.device),
                            "itc tiny-zoo --only clip-rerank")
        from transformers import CLIPModel  # shipped in float16 (half the bytes; scored in float32 after loading)
        CLIPModel.from_pretrained(root / "clip-rerank").half().save_pretrained(root / "clip-rerank")
        shape = report["true_caption_beats_every_variant"]["shape"]
        print(f"clip-rerank: true caption above every shape variant {shape:.3f} -> {root / 'clip-rerank'}")
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
        report = train_restorer(root / "restorer", root / "clip", work / "restorer", recipe,
                                device=_train_device(args.device), lic_dir=root / "lic")
        for v in report["val"]:
            print(f"restorer q{v['quality']}: PSNR {v['psnr_reconstruction']:.2f} dB (reconstruction) -> "
                  f"{v['psnr_no_caption']:.2f} (no caption) -> {v['psnr_true_caption']:.2f} (true caption) "
                  f"-> {root / 'restorer'}")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _misc_points(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple(tuple(int(v) for v in p.lower().split("x")) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BLOCKxCOLOURS,... (e.g. 8x4,4x8), got {text!r}") from None


_WORLD_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # torchrun, MPI


def _launched_processes(environ=os.environ) -> int:
    """How many processes the launcher started, from its environment: torchrun's, Open MPI's, MPICH's (the
    ``mpich`` wheel's ``mpirun``) or MVAPICH's variable; 1 when none is set."""
    return max(int(environ.get(v, "1") or 1) for v in _WORLD_VARIABLES)


def _distributed():
    """(rank, world, barrier) when started as several processes (``accelerate launch``), else (0, 1, None).

    The processes only share a barrier (gloo: evaluation runs on the CPU), so accelerate's
    ``PartialState(cpu=True)`` serves both its torchrun launcher (``--multi_gpu``, also on a machine
    without GPUs) and its MPI one (``--cpu --num_processes N``, which needs mpirun and a hostfile).
    """
    if _launched_processes() <= 1:
        return 0, 1, None
    from accelerate import PartialState

    state = PartialState(cpu=True)
    return state.process_index, state.num_processes, state.wait_for_everyone


def cmd_eval(args) -> int:
    import torch

    from .evalrun import METHODS, MISC_POINTS, EvalSettings, format_table, run_eval

    torch.set_num_threads(args.threads)  # pinned: the models' numerics, hence the results, depend on it
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else METHODS
    if any(len(p) != 2 for p in args.misc_points or ()):
        raise ItcError("--misc-points takes BLOCKxCOLOURS pairs, e.g. 8x4,4x8")
    settings = EvalSettings(preset=args.preset, dataset=args.dataset, methods=methods, limit=args.limit,
                            qualities=args.qualities, pillow_qualities=args.pillow_qualities,
                            misc_points=args.misc_points or MISC_POINTS, steps=args.steps, anchor=args.anchor,
                            boot=args.boot)
    settings.validate()  # before models load or processes start
    if args.quiet:  # the libraries' own loading bars too ("Loading weights", "Loading pipeline components")
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    rank, world, barrier = _distributed()
    summary = run_eval(settings, args.out, rank=rank, world=world, barrier=barrier, progress=not args.quiet)
    if summary is not None:
        print(format_table(summary))
        out = Path(args.out)
        shards = f" ({world} processes)" if world > 1 else ""
        print(f"{summary['images']} images{shards}: rows in {out / 'results.jsonl'}, summary in {out / 'summary.json'}")
    return 0


def cmd_finetune(args) -> None:
    from .finetune import load_finetune_config, train

    overrides = {"train": {"steps": args.steps}} if args.steps is not None else None
    cfg = load_finetune_config(args.config, overrides)
    if args.out_dir:
        cfg.out_dir = args.out_dir
    if (args.export is None) != (args.quality is None):
        raise ConfigError("--export FOLDER and --quality Q go together (the rate point the weights ship as)")
    result = train(cfg)
    if "bpp_real" in result:
        print(f"{cfg.out_dir}: {result['steps']} steps; validation {result['bpp_real']:.4f} bpp (real bytes), "
              f"{result['psnr_db']:.2f} dB -> {Path(cfg.out_dir) / 'final.safetensors'}")
    if args.export is not None:
        from dataclasses import asdict

        from .config import resolve_path
        from .tinyworld.train_lic import export_point

        entry = export_point(Path(cfg.out_dir), args.quality, asdict(cfg), resolve_path(args.export), args.config)
        print(f"rate point {args.quality} -> {resolve_path(args.export) / entry['file']}: {entry['test']['bpp_real']:.4f} "
              f"bpp, {entry['test']['psnr_db']:.2f} dB on {entry['test']['scenes']} test scenes")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: the usage, then one ``itc: error: …`` line; exit status 2."""

    def error(self, message: str):
        """Print the usage and ``itc: error: message`` on stderr and exit with status 2."""
        self.print_usage(sys.stderr)
        self.exit(2, f"itc: error: {message}\n")


_THREADS_HELP = ("torch CPU threads for the models (default: torch's, all cores); entropy coding always uses one. "
                 "The tiny preset's models are fastest with 1, above all on a busy machine")
_DOMAIN_HELP = {
    "encode": "tiny preset: code an image that is not a 64x64 tiny-world scene as one anyway (the LMM captions it); "
              "by default it gets a note, no LMM caption, and a mark that keeps the decoder's restorer off it",
    "decode": "tiny preset: restore files the restorer does not know (not 64x64, or marked by the encoder as not a "
              "tiny-world scene); by default they decode to the bare reconstruction, with a note",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``itc`` (exposed for documentation and tests)."""
    parser = _Parser(prog="itc", description="LMM-driven semantic image-text coding.")
    sub = parser.add_subparsers(dest="command", required=True)

    from .config import SELECT_MODES
    p = sub.add_parser("encode", help="code images into .itc files", description=(
        "Code one image into FILE.itc, or many (files, directories, glob patterns) into a directory, "
        "DIR/<name>.itc each, loading the models once."))
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG/... of any mode, sides up to 16384 px and "
                   "up to 16.8 million pixels (checked before any model loads), a directory of them, or a glob pattern")
    p.add_argument("-o", "--output", required=True, help="the .itc file to write; with several images a directory "
                   "(end it with / to code a single image into a directory)")
    p.add_argument("--preset", default="tiny", help="tiny (default), laptop, paper or a YAML path")
    p.add_argument("--quality", type=int, help="LIC rate point (default: the preset's)")
    p.add_argument("--target-bpp", type=float, help="highest quality whose file fits this many bits per pixel")
    p.add_argument("--caption", help="the caption to store (default: the preset's LMM writes one)")
    p.add_argument("--threads", type=_threads, help=_THREADS_HELP)
    p.add_argument("--caption-select", choices=SELECT_MODES,
                   help="how the LMM's caption is chosen (default: the preset's caption.select)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (ours nor the libraries')")
    from .caption_methods import CHOICES
    p.add_argument("--caption-method", choices=CHOICES, help="how the caption is coded (default: the preset's "
                   "caption.method; auto: the cheapest method for the caption at hand, recorded in the file)")
    p.add_argument("--no-domain-check", action="store_true", help=_DOMAIN_HELP["encode"])
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="rebuild the images of .itc files", description=(
        "Decode one .itc file into an image, or many (files, directories, glob patterns) into a directory, "
        "DIR/<name>.png each, loading the models once."))
    p.add_argument("files", nargs="+", metavar="FILE", help=".itc file, a directory of them, or a glob pattern")
    p.add_argument("-o", "--output", required=True, help="image to write (.png, lossless); with several files a "
                   "directory (end it with / to decode a single file into a directory)")
    p.add_argument("--preset", help="a YAML path, for files encoded with a custom preset (default: the file's)")
    p.add_argument("--threads", type=_threads, help=_THREADS_HELP)
    p.add_argument("--no-restore", action="store_true", help="write the bare LIC reconstruction (no diffusion)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument("--guidance", type=float, help="caption guidance scale (default: the preset's at the file's rate point)")
    p.add_argument("--seed", type=int, help="noise seed (default: the preset's)")
    p.add_argument("--no-colour-fix", action="store_true", help="skip the wavelet colour fix")
    p.add_argument("--quiet", action="store_true", help="no progress bars (ours nor the libraries'; without it, "
                   "one file shows the restorer's denoising bar on a terminal, a batch one bar over its files)")
    p.add_argument("--no-domain-check", action="store_true", help=_DOMAIN_HELP["decode"])
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("inspect", help="sizes, bits by part (z, y, caption, header) and models of an .itc file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--preset", help="a YAML path, for files encoded with a custom preset (default: the file's)")
    p.add_argument("--no-caption", action="store_true",
                   help="decode the image only (no LMM; the check, which covers the caption, is then not verified)")
    p.add_argument("--sizes", action="store_true", help="only the header and section sizes: no model is loaded")
    p.set_defaults(func=cmd_inspect)

    caption = sub.add_parser("caption", help="code a caption on its own").add_subparsers(dest="caption_command",
                                                                                        required=True)
    from .caption_methods import CHOICES, METHODS
    for name, func in (("compress", cmd_caption_compress), ("decompress", cmd_caption_decompress)):
        p = caption.add_parser(name, help=f"{name} a caption")
        p.add_argument("text" if name == "compress" else "file")
        if name == "compress":
            p.add_argument("-o", "--output", help="write the payload (with a 5-byte header) to this file")
            p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        p.add_argument("--method", choices=CHOICES if name == "compress" else METHODS,
                       help="coding method (default: the preset's; auto: the method of the fewest bytes)")
        p.add_argument("--context-image", help="the decoded reconstruction, for lmm-ac")
        p.add_argument("--preset", default="tiny", help="whose LMM codes the caption")
        p.set_defaults(func=func)

    from .evalrun import METHODS as EVAL_METHODS
    p = sub.add_parser("eval", help="evaluate methods on a dataset: results.jsonl + summary.json (resumable)",
                       description="Run every image x method x rate point; a killed run resumes where it stopped. "
                       "Shard it with `accelerate launch --multi_gpu --num_processes N -m itc_core.cli eval ...` "
                       "(torchrun; also without GPUs) or `accelerate launch --cpu --num_processes N "
                       "--mpirun_hostfile F ...` (MPI).")
    p.add_argument("--preset", default="tiny", help="tiny (default), laptop, paper or a YAML path")
    p.add_argument("--dataset", default="tiny", help="tiny (the tiny-world test split), sample-photo, kodak or "
                   "an image folder")
    p.add_argument("--methods", help=f"comma-separated, from {','.join(EVAL_METHODS)} (default: all)")
    p.add_argument("--limit", type=_positive_int, help="the first N images of the dataset")
    p.add_argument("--out", default="outputs/eval", help="results folder (default: outputs/eval)")
    p.add_argument("--anchor", default="lic", help="the method BD figures are against (default: lic)")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples per BD interval (default: 1000)")
    p.add_argument("--steps", type=_positive_int, help="restorer denoising steps (default: the preset's)")
    p.add_argument("--qualities", type=_ints, help="LIC rate points, e.g. 1,2 (default: all the preset offers)")
    p.add_argument("--pillow-qualities", type=_ints, help="JPEG/WebP qualities (default: itc_core.rd's lists)")
    p.add_argument("--misc-points", type=_misc_points, help="misc rate points BLOCKxCOLOURS,... (default: "
                   "32x4,16x4,8x4,8x8,4x8,4x16)")
    p.add_argument("--threads", type=_threads, default=1, help="torch threads per process (default: 1; "
                   "results are reproducible at the same thread count)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (ours nor the libraries')")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("finetune", help="train or fine-tune a CompressAI codec (rate-distortion or semantic loss)")
    p.add_argument("--config", required=True, help="a run YAML, or a recipe name under itc_core/recipes")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--out-dir", help="override out_dir (checkpoints, metrics.csv, final.safetensors)")
    p.add_argument("--export", metavar="FOLDER", help="then ship the weights into FOLDER (float16, manifest.json; "
                   "relative to data/) as rate point --quality, measured on 100 test scenes")
    p.add_argument("--quality", type=int, help="the rate point --export ships the weights as")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("tiny-zoo", help="retrain the tiny world's models into data/")
    p.add_argument("--only", choices=["lic", "lic-semantic", "clip", "lmm", "clip-rerank", "referee", "restorer"],
                   help="which part to train (default: all but lic-semantic, in order)")
    p.add_argument("--qualities", type=int, nargs="+", help="rate points to train (default: all)")
    p.add_argument("--steps", type=int, help="training steps per stage (default: the recipe's)")
    p.add_argument("--threads", type=_threads, help="torch threads")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="restorer: training batch (default: the recipe's)")
    p.add_argument("--max-minutes", type=float, help="stop each training early after this long (reported as such)")
    p.add_argument("--compile", action="store_true", help="lic: torch.compile the training step (about 25 %% "
                   "faster on a CPU thread, after a minute or two of compiling; CPU only: on a GPU with torch "
                   "2.11 its backward failed, and one GPU process ran 34-37 steps/s uncompiled)")
    p.add_argument("--out", help="where the models go, one folder per part (default: data/tiny)")
    p.add_argument("--workdir", default="outputs/tiny-zoo", help="checkpoints for resuming")
    p.set_defaults(func=cmd_tiny_zoo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``itc``; returns the exit status."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars around one-line errors
    if "transformers" in sys.modules:  # already imported (e.g. main() called in-process): the variable came too late
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    # CompressAI's import-time torch.jit.script deprecation notice is not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ItcError, OSError) as err:  # OSError: unwritable output, full disk, ...
        print(f"itc: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("itc: interrupted", file=sys.stderr)
        return 130


def main_entry() -> None:
    """Console-script entry point: ``itc``."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
