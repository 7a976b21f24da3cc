"""Fuzz-style checks of the ``itc`` command (issue 37): bad arguments, images and files never give a traceback.

Each case runs ``main([...])`` in-process and must end with exit status 0 or 2, with no "Traceback" on stderr,
nothing on stderr but ``itc: error:`` / ``itc: note:`` lines and argparse's usage, and as many
``itc: error:`` lines as inputs failed (one for a single file). The ``QUICK`` cases run with every model
load replaced by an ``AssertionError``: they must fail before any model loads. The ``CODED`` cases need real
models; they share one tiny-preset codec, loaded once.
"""

import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from itc_core import bitstream
from itc_core.caption_codec import MAX_CAPTION_CHARS
from itc_core.cli import main
from itc_core.tinyworld import sample


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (8-bit RGB) and holds none: IHDR, an empty IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def fake_itc(**fields) -> bytes:
    """An .itc file with a valid header (64x64, tiny, quality 1 unless ``fields`` say otherwise) and a junk payload."""
    f = bitstream.ItcFile(**{"width": 64, "height": 64, "preset": "tiny", "quality": 1, "text_method": None,
                             "fingerprint": 0, "payload": bytes(range(7, 27)), **fields})
    return bitstream.pack(f)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder of bad (and a few merely unusual) inputs, made once."""
    d = tmp_path_factory.mktemp("fuzz")
    scene = sample(2_000_010)[0]
    scene.save(d / "scene.png")
    Image.new("1", (5000, 4000)).save(d / "huge.png")  # the 20-megapixel image (1-bit: quick to write)
    Image.new("1", (17000, 64)).save(d / "wide.png")
    Image.new("1", (64, 17000)).save(d / "tall.png")
    (d / "huge-30000.png").write_bytes(png_header(30000, 30000))  # beyond what PIL itself opens
    (d / "pixels-4097.png").write_bytes(png_header(4097, 4097))  # each side fine, one pixel row too many
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not a picture\n")
    (d / "truncated.png").write_bytes((d / "scene.png").read_bytes()[:300])
    (d / "header-only.png").write_bytes(png_header(64, 64))
    (d / "folder.png").mkdir()
    (d / "no-images").mkdir()
    (d / "no-images" / "readme.txt").write_text("nothing to code")
    Image.fromarray(np.asarray(scene.convert("L")).astype(np.uint16) * 257).save(d / "gray16.png")
    scene.convert("RGBA").save(d / "rgba.png")
    scene.convert("P").save(d / "palette.png")
    scene.convert("CMYK").save(d / "cmyk.jpg")
    Image.new("RGB", (1, 1), (200, 40, 40)).save(d / "one.png")
    (d / "bad.yaml").write_text("image_codec: [unclosed\n")
    (d / "list.yaml").write_text("- just\n- a list\n")
    (d / "steps-text.yaml").write_text("train:\n  steps: many\n")
    (d / "weights-number.yaml").write_text("base: tiny\nimage_codec: {weights: 5}\n")
    (d / "base-number.yaml").write_text("base: 5\n")
    (d / "no-lmm.yaml").write_text("base: tiny\ncaption: {lmm: null}\n")
    (d / "run.yaml").write_text("train:\n  steps: 5\n")
    (d / "ok.itc").write_bytes(fake_itc())
    (d / "empty.itc").write_bytes(b"")
    (d / "text.itc").write_text("not an itc file")
    (d / "short.itc").write_bytes(fake_itc()[:5])
    (d / "v7.itc").write_bytes(b"IT\x07" + fake_itc()[3:])
    (d / "v1.itc").write_bytes(b"ITC\x01" + fake_itc()[4:])
    (d / "gif.itc").write_bytes(b"GIF89a" + fake_itc())
    (d / "side.itc").write_bytes(fake_itc()[:3] + bitstream.varint(19999) * 2 + fake_itc()[5:])
    (d / "custom.itc").write_bytes(fake_itc(preset="custom"))
    (d / "q200.itc").write_bytes(fake_itc(quality=200))
    (d / "caption-junk.cap").write_bytes(b"\x02" + bytes(4) + b"\xff\x00junk")  # zlib code, a payload that is not
    (d / "caption-short.cap").write_bytes(b"\x02\x00")
    (d / "a-file").write_text("in the way")
    return d


# (argv, exit status, error lines or None, pattern the first error line matches or None)
# {d}: the files folder; {o}: a fresh output folder; {c}: the real .itc files of CODED.
QUICK = [
    # encode: sizes, read from the header before any pixel or model
    (["encode", "{d}/huge.png", "-o", "{o}/h.itc"], 2, 1, r"huge.png: image of 5000x4000 px: itc codes sides of 1-"),
    (["encode", "{d}/wide.png", "-o", "{o}/h.itc"], 2, 1, r"17000x64 px"),
    (["encode", "{d}/tall.png", "-o", "{o}/h.itc"], 2, 1, r"64x17000 px"),
    (["encode", "{d}/huge-30000.png", "-o", "{o}/h.itc"], 2, 1, r"image of 900000000 pixels: itc codes at most"),
    (["encode", "{d}/pixels-4097.png", "-o", "{o}/h.itc"], 2, 1, r"4097x4097 px"),
    # encode: files that are not images
    (["encode", "{d}/empty.png", "-o", "{o}/x.itc"], 2, 1, r"empty.png: not a readable image"),
    (["encode", "{d}/text.png", "-o", "{o}/x.itc"], 2, 1, r"text.png: not a readable image"),
    (["encode", "{d}/truncated.png", "-o", "{o}/x.itc"], 2, 1, r"truncated.png: not a readable image"),
    (["encode", "{d}/header-only.png", "-o", "{o}/x.itc"], 2, 1, r"header-only.png: not a readable image"),
    (["encode", "{d}/missing.png", "-o", "{o}/x.itc"], 2, 1, r"missing.png: no such file"),
    (["encode", "{d}/no-images", "-o", "{o}/x.itc"], 2, 1, r"no images in this directory"),
    (["encode", "{d}/*.gif", "-o", "{o}/"], 2, 1, r"no file matches this pattern"),
    # encode: a batch whose every input fails still loads no model, and says so once per input
    (["encode", "{d}/huge.png", "{d}/wide.png", "{d}/empty.png", "{d}/missing.png", "-o", "{o}/"], 2, 4,
     r"missing.png: no such file"),  # the names that name no file first, then the others in order
    # encode: options
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "huge"], 2, 1, r"unknown preset 'huge'"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "{d}/bad.yaml"], 2, 1, r"bad.yaml"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "{d}/list.yaml"], 2, 1, r"list.yaml"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "{d}/no-images"], 2, 1, r"no-images"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "{d}/scene.png"], 2, 1, r"scene.png"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--quality", "12"], 2, 1, r"quality 12 not offered"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--quality", "-1"], 2, 1, r"quality -1 not offered"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--quality", "x"], 2, 1, r"--quality: invalid int value"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--quality", "2", "--target-bpp", "1"], 2, 1, r"not both"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--caption", "a", "--caption-select", "rerank"], 2, 1, r"not both"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--caption-select", "best"], 2, 1, r"invalid choice: 'best'"),
    *[(["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--target-bpp", v], 2, 1, r"--target-bpp")
      for v in ("0", "-1", "nan", "inf", "x", "")],
    *[(["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--threads", v], 2, 1, r"--threads: ") for v in ("0", "-2", "x")],
    (["encode", "{d}/scene.png", "-o", "{d}/a-file/x.itc"], 2, 1, r"a-file is a file, not a directory"),
    (["encode", "{d}/scene.png", "{d}/huge.png", "-o", "{d}/a-file"], 2, 1, r"need an output directory"),
    (["encode", "-o", "{o}/x.itc"], 2, 1, r"required: IMAGE"),
    (["encode", "{d}/scene.png"], 2, 1, r"required: -o/--output"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--bogus"], 2, 1, r"unrecognized arguments: --bogus"),
    ([], 2, 1, r"required: command"),
    (["bogus"], 2, 1, r"invalid choice: 'bogus'"),
    # decode: the file's header is read before any model
    *[(["decode", f"{{d}}/{name}", "-o", "{o}/x.png"], 2, 1, pattern) for name, pattern in [
        ("missing.itc", r"no such file"), ("folder.png", r"no .itc files in this directory"),
        ("empty.itc", r"not an .itc file"), ("text.itc", r"not an .itc file"), ("gif.itc", r"not an .itc file"),
        ("short.itc", r"ends inside its header"),
        ("v7.itc", r"format version 7"), ("v1.itc", r"re-encode"), ("side.itc", r"20000x20000 px"),
        ("custom.itc", r"custom preset YAML"), ("q200.itc", r"quality 200, not offered")]],
    (["decode", "{d}/ok.itc", "-o", "{o}/x.jpg"], 2, 1, r"write a lossless image"),
    (["decode", "{d}/ok.itc", "-o", "{o}/x"], 2, 1, r"not no suffix"),
    (["decode", "{d}/ok.itc", "-o", "{d}/a-file/x.png"], 2, 1, r"a-file is a file"),
    (["decode", "{d}/ok.itc", "-o", "{o}/x.png", "--no-restore", "--steps", "3"], 2, 1, r"drop --steps"),
    (["decode", "{d}/ok.itc", "-o", "{o}/x.png", "--preset", "huge"], 2, 1, r"unknown preset 'huge'"),
    *[(["decode", "{d}/ok.itc", "-o", "{o}/x.png", option, value], 2, 1, option) for option, value in [
        ("--steps", "0"), ("--steps", "1.5"), ("--guidance", "-1"), ("--guidance", "nan"), ("--seed", "-1"),
        ("--seed", str(1 << 64)), ("--seed", "x"), ("--threads", "0")]],
    (["decode", "{d}/no-images", "-o", "{o}/"], 2, 1, r"no .itc files in this directory"),
    (["decode", "{d}/empty.itc", "{d}/v7.itc", "{d}/missing.itc", "{d}/custom.itc", "-o", "{o}/"], 2, 4, r"no such"),
    # inspect, in full and --sizes
    *[([*command, f"{{d}}/{name}"], 2, 1, pattern) for command in (["inspect"], ["inspect", "--sizes"])
      for name, pattern in [("missing.itc", r"no such file"), ("folder.png", r"is a directory"),
                            ("empty.itc", r"not an .itc file"), ("short.itc", r"ends inside"),
                            ("v1.itc", r"re-encode"), ("side.itc", r"20000x20000")]],
    (["inspect", "{d}/custom.itc"], 2, 1, r"custom preset YAML"),
    # caption compress / decompress
    (["caption", "compress", "a red star", "--method", "lmm-ac"], 2, 1, r"needs the decoded reconstruction"),
    (["caption", "compress", "a red star", "--method", "best"], 2, 1, r"invalid choice"),
    (["caption", "compress", "a red star", "--preset", "huge"], 2, 1, r"unknown preset 'huge'"),
    (["caption", "compress", "a red star", "--method", "lmm-ac", "--context-image", "{d}/missing.png"], 2, 1,
     r"no such file"),
    (["caption", "compress", "a red star", "--method", "lmm-ac", "--context-image", "{d}/text.png"], 2, 1,
     r"not a readable image"),
    (["caption", "compress", "x" * (MAX_CAPTION_CHARS + 1), "--method", "zlib"], 2, 1, r"at most"),
    (["caption", "compress", "a red star", "--method", "zlib", "-o", "{d}/a-file/c.cap"], 2, 1, r"a-file"),
    (["caption", "compress"], 2, 1, r"required: text"),
    (["caption", "decompress", "{d}/missing.cap"], 2, 1, r"no such file"),
    (["caption", "decompress", "{d}/empty.itc"], 2, 1, r"not a caption file"),
    (["caption", "decompress", "{d}/caption-short.cap"], 2, 1, r"not a caption file"),
    (["caption", "decompress", "{d}/caption-junk.cap"], 2, 1, r"does not decode"),
    (["caption", "decompress", "{d}/caption-junk.cap", "--method", "utf8"], 2, 1, r"coded with zlib, not utf8"),
    # eval, argument level
    *[(["eval", "--out", "{o}/eval", *args], 2, 1, pattern) for args, pattern in [
        (["--methods", "bogus"], r"unknown method 'bogus'"), (["--methods", ","], r"no method to run"),
        (["--methods", "webp"], r"anchor 'lic' is not among"), (["--misc-points", "8x"], r"BLOCKxCOLOURS"),
        (["--misc-points", "0x4"], r"block 1-255"), (["--misc-points", "axb"], r"--misc-points: "),
        (["--limit", "0"], r"--limit: "), (["--threads", "0"], r"--threads: "), (["--boot", "-1"], r"boot must be"),
        (["--qualities", "x"], r"--qualities: "), (["--steps", "0"], r"--steps: "),
        (["--preset", "huge"], r"unknown preset 'huge'"), (["--dataset", "{d}/missing"], r"neither a dataset"),
        (["--dataset", "{d}/no-images"], r"no image files"), (["--dataset", "{d}/scene.png"], r"is a file")]],
    (["eval", "--out", "{d}/a-file", "--methods", "lic"], 2, 1, r"a-file"),
    # finetune, config level
    *[(["finetune", "--config", config, *args], 2, 1, pattern) for config, args, pattern in [
        ("{d}/missing.yaml", [], r"no such config file"), ("{d}/no-images", [], r"no such config file"),
        ("{d}/bad.yaml", [], r"bad.yaml"), ("{d}/list.yaml", [], r"list.yaml"),
        ("tiny-lic", [], r"tiny-zoo recipe"), ("{d}/run.yaml", ["--steps", "0"], r"must be positive"),
        ("{d}/run.yaml", ["--steps", "x"], r"--steps: "), ("{d}/run.yaml", ["--export", "{o}/w"], r"go together"),
        ("{d}/run.yaml", ["--quality", "2"], r"go together")]],
    (["finetune"], 2, 1, r"required: --config"),
    (["tiny-zoo", "--threads", "0"], 2, 1, r"--threads: "),
]

CONFIG_CASES = [  # configs and presets with a value of the wrong type, or not YAML at all
    (["finetune", "--config", "{d}/steps-text.yaml"], 2, 1, r"steps must be an integer"),
    (["finetune", "--config", "{d}/scene.png"], 2, 1, r"scene.png: not a YAML file"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "{d}/weights-number.yaml"], 2, 1,
     r"weights must be text, got 5"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "{d}/base-number.yaml"], 2, 1, r"base must be"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--preset", "{d}/no-lmm.yaml", "--caption", "abc",
      "--caption-method", "lmm-ac"], 2, 1, r"needs an LMM"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--threads", "99999999999"], 2, 1, r"at most 1024 threads"),
]

CODED = [
    # unusual images that encode
    *[(["encode", f"{{d}}/{name}", "-o", "{o}/x.itc"], 0, 0, None)
      for name in ("gray16.png", "rgba.png", "palette.png", "cmyk.jpg", "one.png")],
    # the batch: the huge image fails on one line, the scene is coded and written
    (["encode", "{d}/huge.png", "{d}/scene.png", "{d}/truncated.png", "{d}/text.png", "-o", "{o}/coded/"], 2, 3,
     r"huge.png: image of 5000x4000 px"),
    # a real file with its payload or fingerprint damaged: refused by the decoder, on one line
    (["decode", "{c}/flipped.itc", "-o", "{o}/x.png", "--no-restore"], 2, 1, r"does not decode|check fails"),
    (["decode", "{c}/fingerprint.itc", "-o", "{o}/x.png", "--no-restore"], 2, 1, r"other weights"),
    (["decode", "{c}/flipped.itc", "{c}/good.itc", "-o", "{o}/decoded/", "--no-restore", "--quiet"], 2, 1,
     r"flipped.itc: "),
    (["inspect", "{c}/flipped.itc"], 2, 1, r"does not decode|check fails"),
    (["inspect", "{c}/good.itc"], 0, 0, None),
    # captions the coder refuses (checked once the image is coded)
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--caption", "x" * (MAX_CAPTION_CHARS + 1)], 2, 1, r"at most"),
    (["encode", "{d}/scene.png", "-o", "{o}/x.itc", "--caption", "a \udcff star"], 2, 1, r"not valid Unicode"),
    (["caption", "compress", "ünïcödé ☃ captions", "--method", "lm-ac"], (0, 2), None, r"caption"),
    (["caption", "compress", "", "--method", "lm-ac"], (0, 2), None, r"caption"),
]


def check_outcome(code, err: str, expected_code, errors, pattern) -> None:
    """Exit status as expected, no traceback, and nothing on stderr but errors, notes and argparse's usage."""
    assert "Traceback" not in err, err
    assert code in (expected_code if isinstance(expected_code, tuple) else (expected_code,)), (code, err)
    lines = err.splitlines()
    error_lines = [line for line in lines if line.startswith("itc: error: ")]
    usage = lines[0].startswith("usage: itc") if lines else False
    strays = [line for i, line in enumerate(lines) if not line.startswith(("itc: error: ", "itc: note: "))
              and not (usage and (i == 0 or line.startswith(" ")))]
    assert not strays, err
    if errors is not None:
        assert len(error_lines) == errors, err
    if pattern is not None and code == 2:
        assert re.search(pattern, error_lines[0]), err


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` as the console script runs it: argparse's SystemExit becomes the exit status."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fill(argv: list[str], files: Path, out: Path) -> list[str]:
    """``argv`` with ``{d}`` and ``{o}`` replaced by the folders."""
    return [a.replace("{d}", str(files)).replace("{o}", str(out)) for a in argv]


def case_id(case) -> str:
    """A case's test id: its command line without the folders."""
    case = case.values[0] if hasattr(case, "values") else case
    return " ".join(case[0]).replace("{d}/", "").replace("{o}/", "")[:70] or "(none)"


@pytest.fixture
def no_models(monkeypatch):
    """Every model load (LIC, LMM, CLIPs, restorer, an evaluation's or a training's) fails the test."""
    from itc_core import codec, evalrun, finetune

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(codec.ImageTextCodec, "image_codec", refuse)
    for name in ("lmm", "clip", "rank_clip", "restorer"):
        monkeypatch.setattr(codec.ImageTextCodec, name, property(refuse))
    monkeypatch.setattr(evalrun, "MethodRunner", refuse)
    monkeypatch.setattr(finetune, "train", refuse)


@pytest.mark.parametrize("case", QUICK + CONFIG_CASES, ids=case_id)
def test_bad_input_fails_cleanly_before_any_model(case, files, tmp_path, capsys, no_models):
    argv, expected_code, errors, pattern = case
    code, _, err = run(fill(argv, files, tmp_path), capsys)
    check_outcome(code, err, expected_code, errors, pattern)
    assert not any(tmp_path.rglob("*.itc")) and not any(tmp_path.rglob("*.part*"))


@pytest.fixture(scope="module")
def shared_codec():
    """One tiny-preset codec for every CODED case (its models load once)."""
    from itc_core.codec import ImageTextCodec

    return ImageTextCodec.from_preset("tiny")


@pytest.fixture(scope="module")
def coded(shared_codec, tmp_path_factory) -> Path:
    """A folder with good.itc, flipped.itc (a payload bit flipped) and fingerprint.itc (its byte changed)."""
    d = tmp_path_factory.mktemp("coded")
    good = shared_codec.encode(sample(2_000_010)[0], 1).data
    (d / "good.itc").write_bytes(good)
    f = bitstream.unpack(good)
    (d / "flipped.itc").write_bytes(good[:f.header_bytes] + bytes([good[f.header_bytes] ^ 0x10])
                                    + good[f.header_bytes + 1:])
    f.fingerprint ^= 0xFF
    (d / "fingerprint.itc").write_bytes(bitstream.pack(f))
    return d


@pytest.fixture
def with_shared_codec(shared_codec, monkeypatch):
    """The CLI gets ``shared_codec`` wherever it makes a codec."""
    from itc_core import codec

    class Shared:
        def __new__(cls, config=None):
            return shared_codec

        from_preset = staticmethod(lambda preset="tiny": shared_codec)

    monkeypatch.setattr(codec, "ImageTextCodec", Shared)


@pytest.mark.parametrize("case", CODED, ids=case_id)
def test_unusual_input_codes_or_fails_cleanly(case, files, coded, tmp_path, capsys, with_shared_codec):
    argv, expected_code, errors, pattern = case
    code, out, err = run(fill([a.replace("{c}", str(coded)) for a in argv], files, tmp_path), capsys)
    check_outcome(code, err, expected_code, errors, pattern)
    if argv[0] == "encode" and code == 0:
        assert bitstream.unpack((tmp_path / "x.itc").read_bytes()).width > 0
    if "{o}/coded/" in argv:
        assert sorted(p.name for p in (tmp_path / "coded").iterdir()) == ["scene.itc"]
        assert "encoded 1 of 4 files" in out
    if "{o}/decoded/" in argv:
        assert sorted(p.name for p in (tmp_path / "decoded").iterdir()) == ["good.png"]


def itc_process(*args: str, code: str = "") -> subprocess.CompletedProcess:
    """``main(args)`` in a fresh interpreter, then ``code`` (which sees ``sys`` and ``status``)."""
    script = f"import sys\nfrom itc_core.cli import main\nstatus = main({list(args)!r})\n{code}\nsys.exit(status)"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_huge_image_is_refused_before_torch_imports(files, tmp_path):
    """In a fresh process, as a user runs it: one line, status 2, and neither torch nor CompressAI imported."""
    done = itc_process("encode", str(files / "huge.png"), "-o", str(tmp_path / "h.itc"), code=(
        "heavy = sorted({'torch', 'compressai', 'transformers', 'diffusers'} & set(sys.modules))\n"
        "assert not heavy, heavy"))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"itc: error: {files / 'huge.png'}: image of 5000x4000 px: itc codes sides of 1-"
                           f"{bitstream.MAX_SIDE} px and at most {bitstream.MAX_PIXELS} pixels (tile larger images)\n")


def test_bad_argument_in_a_fresh_process(files, tmp_path):
    """The console script's own exit path: argparse's usage, then one ``itc: error:`` line, status 2."""
    done = subprocess.run([sys.executable, "-m", "itc_core.cli", "decode", str(files / "ok.itc"), "-o",
                           str(tmp_path / "x.png"), "--threads", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("usage: itc decode")
    assert done.stderr.splitlines()[-1] == "itc: error: argument --threads: must be at least 1, got 0"


def test_check_image_reads_the_header_only(files):
    """The size comes from the header (a PNG of no pixel data passes); the pixels are load_image's business."""
    from itc_core.data import check_image, load_image
    from itc_core.errors import ImageReadError, ImageSizeError

    assert check_image(files / "header-only.png") == (64, 64)
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_image(files / "header-only.png")
    with pytest.raises(ImageSizeError, match="5000x4000"):
        check_image(files / "huge.png")
    with pytest.raises(ValueError):  # ImageSizeError is also the ValueError bitstream.header raised before
        check_image(files / "wide.png")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                                  "LAB", "HSV", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"])
def test_every_pil_mode_becomes_rgb_with_one_note(mode):
    from itc_core.data import to_rgb

    image, notes = to_rgb(Image.new(mode, (3, 2)))
    assert image.mode == "RGB" and image.size == (3, 2)
    assert len(notes) == (mode != "RGB"), notes
