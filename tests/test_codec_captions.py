"""Captions inside .itc files: the caption stage wired through ImageTextCodec and the CLI (random tiny models)."""

import json

import pytest
import yaml

from itc_core import bitstream
from itc_core.caption_codec import METHODS
from itc_core.cli import main
from itc_core.codec import ImageTextCodec, describe
from itc_core.tinyworld import sample
from tests.conftest import random_lic_preset, tiny_random_lmm

PROMPT = "USER: <image>\nDescribe the scene. ASSISTANT:"


def preset_with_lmm(tmp_path, lmm_dir, name="cap", method="lmm-ac", seed=0):
    path = random_lic_preset(tmp_path, seed=seed, name=name)
    values = yaml.safe_load(open(path))
    values["caption"] = {"lmm": str(lmm_dir), "prompt": PROMPT, "max_new_tokens": 8, "method": method}
    open(path, "w").write(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def codec(tmp_path_factory, random_lmm_dir):
    return ImageTextCodec.from_preset(preset_with_lmm(tmp_path_factory.mktemp("p"), random_lmm_dir))


@pytest.mark.parametrize("method", METHODS)
def test_caption_round_trips_through_the_file(codec, method):
    image, text = sample(2_000_020)
    result = codec.encode(image, caption=text, method=method)
    decoded = codec.decode(result.data)
    assert decoded.caption == text and decoded.reconstruction.tobytes() == result.reconstruction.tobytes()
    info = describe(result.data, decoded)
    assert info["text_method"] == method and info["caption"] == text and info["check_verified"]
    assert info["bytes_overhead"] == 9  # a caption adds no header byte
    if method in ("lm-ac", "lmm-ac"):  # the tokens' own information, no framing
        assert info["bits"]["caption"] == pytest.approx(result.caption_payload.nll_bits, abs=0.5)
    else:  # a 1-byte length (2 from 128 bytes on), then the method's bytes
        n = len(result.caption_payload.data)
        assert info["bits"]["caption"] == 8 * (n + (1 if n < 128 else 2))


def test_lmm_writes_the_caption_when_none_is_given(codec):
    result = codec.encode(sample(2_000_021)[0])
    assert isinstance(result.caption, str)
    assert codec.decode(result.data).caption == result.caption


def test_no_caption(codec):
    result = codec.encode(sample(2_000_021)[0], caption=False)
    assert result.caption is None and codec.decode(result.data).caption is None
    assert describe(result.data)["bytes_overhead"] == 9


@pytest.mark.parametrize("method", ["lmm-ac", "zlib"])
def test_flipped_payload_byte_is_a_clear_error(codec, method):
    result = codec.encode(sample(2_000_022)[0], caption="a large red circle in the centre", method=method)
    for i in range(bitstream.unpack(result.data).header_bytes, len(result.data)):
        bad = bytearray(result.data)
        bad[i] ^= 0x10
        with pytest.raises(bitstream.BitstreamError):
            codec.decode(bytes(bad))


def test_other_lmm_is_refused(tmp_path, codec, random_lmm_dir):
    other_dir = tiny_random_lmm(tmp_path, seed=7)
    other = ImageTextCodec.from_preset(preset_with_lmm(tmp_path, other_dir, name="cap"))
    data = codec.encode(sample(2_000_023)[0], caption="a small blue star at the top").data
    with pytest.raises(bitstream.BitstreamError, match="other weights"):
        other.decode(data)  # the fingerprint byte (or, 1 time in 256, the check) tells the LMMs apart


def test_check_catches_a_wrong_decode(codec):
    result = codec.encode(sample(2_000_024)[0], caption="hello")
    f = bitstream.unpack(result.data)
    f.check = bytes([f.check[0] ^ 1, f.check[1]])
    with pytest.raises(bitstream.CorruptedFile, match="check fails"):
        codec.decode(bitstream.pack(f))
    assert codec.decode(bitstream.pack(f), caption=False).checked is False  # image only: the check is not verified


def test_cli_caption_commands(tmp_path, random_lmm_dir, capsys):
    preset = preset_with_lmm(tmp_path, random_lmm_dir)
    scene = tmp_path / "scene.png"
    sample(2_000_025)[0].save(scene)
    assert main(["encode", str(scene), "-o", str(tmp_path / "s.itc"), "--preset", preset,
                 "--caption", "a large red circle"]) == 0
    assert main(["inspect", str(tmp_path / "s.itc"), "--json", "--preset", preset]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["caption"] == "a large red circle" and info["text_method"] == "lmm-ac"
    assert main(["decode", str(tmp_path / "s.itc"), "-o", str(tmp_path / "b.png"), "--preset", preset]) == 0
    assert "caption: a large red circle" in capsys.readouterr().out

    for method in ("zlib", "lm-ac"):
        out = tmp_path / f"c-{method}.bin"
        assert main(["caption", "compress", "ünïcode ✓\nline", "-o", str(out), "--method", method,
                     "--preset", preset, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["method"] == method and info["bits"] == 8 * (out.stat().st_size - 5)
        assert (info["nll_bits"] is None) == (method == "zlib")
        assert main(["caption", "decompress", str(out), "--preset", preset]) == 0
        assert capsys.readouterr().out == "ünïcode ✓\nline\n"
    bad = tmp_path / "c-lm-ac.bin"
    bad.write_bytes(bad.read_bytes()[:5] + bytes([bad.read_bytes()[5] ^ 0x55]) + bad.read_bytes()[6:])
    assert main(["caption", "decompress", str(bad), "--preset", preset]) == 2
    err = capsys.readouterr().err  # the damage shows as a CRC-32 failure or as a stream that outgrows its bytes
    assert "CRC-32" in err or "more information" in err
    assert main(["caption", "compress", "x", "--method", "lmm-ac", "--preset", preset]) == 2
    assert "context-image" in capsys.readouterr().err
