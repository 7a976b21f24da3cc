import io
import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from itc_core.cli import main
from itc_core.tinyworld import sample


def itc(*args):
    """Run ``itc`` in a fresh process (as a user does); returns the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "itc_core.cli", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture
def scene_png(tmp_path):
    path = tmp_path / "scene.png"
    sample(2_000_010)[0].save(path)
    return path


def test_encode_inspect_decode(tmp_path, scene_png, capsys):
    out = tmp_path / "scene.itc"
    assert main(["encode", str(scene_png), "-o", str(out)]) == 0
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("width", "height", "preset", "bytes_total", "bytes_header", "bytes_payload", "bytes_overhead",
                "bpp_total", "bpp_image", "bpp_text", "bits", "caption", "check_verified", "models"):
        assert key in info
    assert (info["width"], info["height"], info["preset"], info["bytes_total"]) == (64, 64, "tiny", out.stat().st_size)
    assert set(info["bits"]) == {"header", "z", "y", "caption", "termination", "check"}
    assert main(["inspect", str(out)]) == 0 and "termination" in capsys.readouterr().out
    assert main(["decode", str(out), "-o", str(tmp_path / "back.png")]) == 0
    assert Image.open(tmp_path / "back.png").size == (64, 64)


def test_quality_and_target_bpp(tmp_path, scene_png, capsys):
    from itc_core.config import load_config

    top = str(max(load_config("tiny").image_codec.qualities))  # a generous target gets the top rate point
    assert main(["encode", str(scene_png), "-o", str(tmp_path / "top.itc"), "--quality", top]) == 0
    assert main(["encode", str(scene_png), "-o", str(tmp_path / "t.itc"), "--target-bpp", "100"]) == 0
    assert (tmp_path / "t.itc").read_bytes() == (tmp_path / "top.itc").read_bytes()
    assert main(["encode", str(scene_png), "-o", str(tmp_path / "x.itc"), "--target-bpp", "1", "--quality", "2"]) == 2
    assert "not both" in capsys.readouterr().err


def test_not_an_image_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_text("this is text")
    done = itc("encode", bad, "-o", tmp_path / "x.itc")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("itc: error:") and "not a readable image" in done.stderr
    assert not (tmp_path / "x.itc").exists()


def test_rgba_input_gets_a_note(tmp_path, capsys):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 3), (0, 200, 0, 128)).save(path)
    assert main(["encode", str(path), "-o", str(tmp_path / "r.itc")]) == 0
    assert "note: dropped the alpha channel" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:5], "file ends inside"),
    (lambda d: d[:9] + bytes([d[9] ^ 0xFF]) + d[10:], "does not decode|check fails"),
    (lambda d: b"GIF89a" + d, "not an .itc file"),
    (lambda d: d[:2] + b"\x07" + d[3:], "format version 7"),
    (lambda d: b"ITC\x01" + d[4:], "re-encode"),
])
def test_damaged_files_give_one_clear_error(tmp_path, scene_png, capsys, damage, message):
    good = tmp_path / "s.itc"
    main(["encode", str(scene_png), "-o", str(good)])
    bad = tmp_path / "bad.itc"
    bad.write_bytes(damage(good.read_bytes()))
    capsys.readouterr()
    for command in (["decode", str(bad), "-o", str(tmp_path / "o.png")], ["inspect", str(bad)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()


def test_wrong_weights_are_one_clear_error(tmp_path, scene_png, capsys):
    from tests.conftest import random_lic_preset

    preset_a = random_lic_preset(tmp_path, seed=0, name="a")
    preset_b = random_lic_preset(tmp_path, seed=1, name="b")
    assert main(["encode", str(scene_png), "-o", str(tmp_path / "c.itc"), "--preset", preset_a]) == 0
    assert main(["decode", str(tmp_path / "c.itc"), "-o", str(tmp_path / "o.png")]) == 2
    assert "custom preset" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "c.itc"), "-o", str(tmp_path / "o.png"), "--preset", preset_b]) == 2
    assert "encoded with other weights" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "c.itc"), "-o", str(tmp_path / "o.png"), "--preset", preset_a]) == 0


@pytest.mark.parametrize("args, message", [
    (["encode", "{png}", "-o", "{tmp}/x.itc", "--preset", "huge"], "unknown preset 'huge'"),
    (["encode", "{png}", "-o", "{tmp}/x.itc", "--quality", "12"], "quality 12 not offered"),
    (["encode", "{tmp}/missing.png", "-o", "{tmp}/x.itc"], "no such file"),
    (["decode", "{tmp}/missing.itc", "-o", "{tmp}/x.png"], "no such file"),
    (["decode", "{itc}", "-o", "{tmp}/x.jpg"], "write a lossless image"),
])
def test_usage_errors(tmp_path, scene_png, capsys, args, message):
    itc_file = tmp_path / "s.itc"
    main(["encode", str(scene_png), "-o", str(itc_file)])
    capsys.readouterr()
    args = [a.format(png=scene_png, tmp=tmp_path, itc=itc_file) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("select", ["greedy", "rerank", "rate-aware"])
def test_encode_says_how_the_caption_was_chosen(tmp_path, scene_png, capsys, select):
    out = tmp_path / f"{select}.itc"
    assert main(["encode", str(scene_png), "-o", str(out), "--caption-select", select]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("caption (")][0]
    assert (f", {select})" if select == "greedy" else f", {select} of ") in line
    caption = line.split("): ", 1)[1]
    assert main(["decode", str(out), "-o", str(tmp_path / "back.png")]) == 0
    assert f"caption: {caption}" in capsys.readouterr().out  # the decoder does not care how the text was chosen


def test_given_caption_is_labelled_and_bad_selection_refused(tmp_path, scene_png, capsys):
    assert main(["encode", str(scene_png), "-o", str(tmp_path / "g.itc"), "--caption", "a red star"]) == 0
    assert re.search(r"^caption \(.*, given\): a red star$", capsys.readouterr().out, re.M)  # any method
    assert main(["encode", str(scene_png), "-o", str(tmp_path / "x.itc"), "--caption", "a", "--caption-select", "rerank"]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["encode", str(scene_png), "-o", str(tmp_path / "x.itc"), "--caption-select", "best"])
    assert exit_.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal: tqdm draws a bar left at ``disable=None`` only there."""

    def isatty(self) -> bool:
        return True


@pytest.mark.slow
def test_progress_bars_only_where_they_help(tmp_path, scene_png, monkeypatch):
    """On a terminal one decoded file shows the restorer's denoising bar, a batch one bar over its files (no bar
    per image); the libraries' loading bars never show; ``--quiet`` shows none."""
    def bars(*argv) -> list[str]:
        with monkeypatch.context() as m:
            m.setattr(sys, "stderr", _Terminal())
            status, err = main([str(a) for a in argv]), sys.stderr.getvalue()
        assert status == 0, err
        return [s for s in re.split(r"[\r\n]", err) if s.strip()]

    other = tmp_path / "other.png"
    sample(2_000_011)[0].save(other)
    encoded = bars("encode", scene_png, other, "-o", tmp_path / "itc")
    single = bars("decode", tmp_path / "itc" / "scene.itc", "-o", tmp_path / "one.png")
    decoded = bars("decode", tmp_path / "itc", "-o", tmp_path / "png")
    assert encoded and all(s.startswith("itc encode") for s in encoded), encoded
    assert single and all("%|" in s and "Loading" not in s for s in single), single
    assert decoded and all(s.startswith("itc decode") for s in decoded), decoded
    assert bars("encode", scene_png, other, "-o", tmp_path / "quiet", "--quiet") == []
    assert bars("decode", tmp_path / "itc" / "scene.itc", "-o", tmp_path / "one.png", "--quiet") == []
