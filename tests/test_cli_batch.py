"""Many files per ``itc`` call, and commands that must start without CompressAI (issue 12)."""

import json
import os
import subprocess
import sys

import pytest

from itc_core.cli import main
from itc_core.codec import describe
from itc_core.tinyworld import sample


@pytest.fixture
def scenes(tmp_path):
    """A folder of three tiny-world scene PNGs."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(3):
        sample(2_000_100 + i)[0].save(folder / f"s{i}.png")
    return folder


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("itc: error:")]


def test_batch_goes_on_after_an_unreadable_input(tmp_path, scenes, capsys):
    (scenes / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    assert main(["encode", str(scenes), str(tmp_path / "missing.png"), "-o", f"{out}/"]) == 2
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    assert len(errors) == 2 and "Traceback" not in captured.err
    assert any(f"{scenes / 'broken.png'}: not a readable image" in e for e in errors)
    assert any(f"{tmp_path / 'missing.png'}: no such file" in e for e in errors)
    assert sorted(p.name for p in out.iterdir()) == ["s0.itc", "s1.itc", "s2.itc"]  # no .part left behind
    assert "encoded 3 of 5 files" in captured.out and "2 failed" in captured.out

    (out / "s1.itc").write_bytes((out / "s1.itc").read_bytes()[:-4])
    assert main(["decode", str(out / "s0.itc"), str(out / "s1.itc"), str(out / "s2.itc"), "-o", str(tmp_path / "png")]) == 2
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    assert len(errors) == 1 and errors[0].startswith(f"itc: error: {out / 's1.itc'}: ")  # the format's own message
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["s0.png", "s2.png"]
    assert "decoded 2 of 3 files" in captured.out


@pytest.mark.slow
def test_batch_outputs_equal_single_file_outputs(tmp_path, scenes, capsys):
    pngs = sorted(scenes.glob("*.png"))
    for png in pngs:  # one call per file, each with freshly loaded models
        assert main(["encode", str(png), "-o", str(tmp_path / "single" / f"{png.stem}.itc")]) == 0
    # One call, files in another order: no state may leak from one file into the next.
    assert main(["encode", *map(str, reversed(pngs)), "-o", str(tmp_path / "batch")]) == 0
    for png in pngs:
        assert (tmp_path / "single" / f"{png.stem}.itc").read_bytes() == (tmp_path / "batch" / f"{png.stem}.itc").read_bytes()
    for itc_file in sorted((tmp_path / "single").glob("*.itc")):
        assert main(["decode", str(itc_file), "-o", str(tmp_path / "single" / f"{itc_file.stem}.png")]) == 0
    assert main(["decode", str(tmp_path / "batch" / "*.itc"), "-o", str(tmp_path / "decoded")]) == 0  # a quoted glob
    for png in pngs:
        assert (tmp_path / "single" / f"{png.stem}.png").read_bytes() == (tmp_path / "decoded" / f"{png.stem}.png").read_bytes()
    out = capsys.readouterr().out
    assert "encoded 3 of 3 files" in out and "decoded 3 of 3 files" in out


def test_batch_input_errors(tmp_path, scenes, capsys):
    other = tmp_path / "other"
    other.mkdir()
    sample(2_000_200)[0].save(other / "s0.png")  # same name as scenes/s0.png: same output file
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["encode", str(scenes / "s0.png"), str(other / "s0.png"), str(tmp_path / "*.jpg"), str(empty),
                 "-o", str(tmp_path / "out")]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 3
    assert "no file matches this pattern" in errors[0] and "no images in this directory" in errors[1]
    assert f"{other / 's0.png'}: its output" in errors[2]
    (tmp_path / "file.itc").write_bytes(b"")
    assert main(["encode", *map(str, scenes.glob("*.png")), "-o", str(tmp_path / "file.itc")]) == 2
    assert "need an output directory" in capsys.readouterr().err
    assert main(["encode", str(scenes / "s1.png"), "-o", f"{tmp_path / 'one'}/"]) == 0  # one file into a directory
    assert (tmp_path / "one" / "s1.itc").is_file()


def test_inspect_sizes_reads_no_model(tmp_path, scenes, capsys):
    itc_file = tmp_path / "s.itc"
    assert main(["encode", str(scenes / "s0.png"), "-o", str(itc_file)]) == 0
    capsys.readouterr()
    assert main(["inspect", "--sizes", "--json", str(itc_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    full = describe(itc_file.read_bytes())
    assert sum(info["sections"].values()) == info["bytes_total"] == full["bytes_total"]
    assert (info["width"], info["height"], info["quality"], info["text_method"]) == \
        (full["width"], full["height"], full["quality"], full["text_method"])
    assert info["sections"] == {"header": full["bytes_header"], "payload": full["bytes_payload"],
                                "check": full["bytes_check"]}
    assert info["sections"]["header"] > 0 and info["sections"]["check"] > 0  # the framing is counted


@pytest.mark.slow
def test_light_commands_import_no_compressai(tmp_path, scenes):
    itc_file = tmp_path / "s.itc"
    assert main(["encode", str(scenes / "s0.png"), "-o", str(itc_file)]) == 0
    script = f"""
import sys
from itc_core.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
assert main(["inspect", "--sizes", {str(itc_file)!r}]) == 0
heavy = sorted({{"torch", "compressai", "transformers"}} & set(sys.modules))
assert not heavy, f"--help and inspect --sizes imported {{heavy}}"
assert main(["caption", "compress", "a small red star at the top", "--method", "lm-ac"]) == 0
assert "transformers" in sys.modules and "compressai" not in sys.modules, "caption compress imported CompressAI"
print("ok")
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
