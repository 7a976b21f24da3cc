"""Captions inside .itc files: the caption stage wired through ImageTextCodec and the CLI (random tiny models)."""

import json
import random

import pytest
import yaml

from itc_core import bitstream
from itc_core.caption_codec import LM_METHODS, METHODS, CaptionCodingError
from itc_core.cli import main
from itc_core.codec import ImageTextCodec, describe
from itc_core.tinyworld import sample, split_seeds
from tests.conftest import random_lic_preset, tiny_random_lmm
from tests.test_caption_codec import random_unicode

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


# ---------------------------------------------------------------- auto, the empty caption, --caption-method

def auto_captions():
    rng = random.Random(3)
    texts = [sample(s)[1] for s in range(3)] + [random_unicode(rng, rng.randrange(1, 30)) for _ in range(3)]
    return texts + ["</s> <image> <s>", "ab" * 90]  # (test_caption_codec codes a Kodak caption)


def test_auto_file_is_its_method_s_file_and_never_longer_than_utf8_or_zlib(codec):
    assert codec.config.caption.method == "lmm-ac"  # the fixture's preset; auto is asked for by name
    picks = set()
    for i, text in enumerate(auto_captions()):
        image = sample(2_000_030 + i)[0]
        auto = codec.encode(image, caption=text, method="auto")
        method = auto.caption_payload.method
        picks.add(method)
        assert describe(auto.data)["text_method"] == method and codec.decode(auto.data).caption == text
        assert auto.data == codec.encode(image, caption=text, method=method).data  # the decoder never sees "auto"
        assert auto.bits["caption"] == pytest.approx(auto.caption_payload.method_choice.bits[method], abs=1e-9)
        for other in ("utf8", "zlib"):
            plain = codec.encode(image, caption=text, method=other)
            assert auto.bits["caption"] <= plain.bits["caption"] + 1e-9  # the file's own count of caption bits
            assert len(auto.data) <= len(plain.data) + 1  # the termination is shared: within a byte (measured: 0)
    assert {"lmm-ac", "utf8"} <= picks  # in-world text to the LMM, random Unicode to plain bytes


def test_auto_notes_a_caption_the_lmm_cannot_code_and_a_named_method_refuses_it(codec, monkeypatch):
    def refuse(text):
        raise CaptionCodingError("this tokenizer does not reproduce the caption exactly")
    monkeypatch.setattr(codec.lmm, "tokenize", refuse)
    image = sample(2_000_027)[0]
    result = codec.encode(image, caption=" leading space", method="auto")
    payload = result.caption_payload
    assert payload.method == "utf8" and set(payload.method_choice.ruled_out) == {"lmm-ac"}
    assert result.notes == ["the LMM cannot code this caption (this tokenizer does not reproduce the caption exactly): "
                            "coded with utf8"]
    with pytest.raises(CaptionCodingError, match="does not reproduce"):
        codec.encode(image, caption=" leading space", method="lmm-ac")


def test_empty_caption_costs_nothing_and_decodes_to_none(codec):
    image = sample(2_000_026)[0]
    for method in ("auto", "lmm-ac", "utf8"):
        result = codec.encode(image, caption="", method=method)
        assert result.caption is None and result.caption_payload is None and result.bits["caption"] == 0
        assert result.data == codec.encode(image, caption=False).data
        assert result.notes == ["the caption is empty: the file stores no caption (0 bits; decoding gives none)"]
    assert codec.decode(result.data).caption is None and describe(result.data)["text_method"] is None


def test_encode_at_bpp_passes_the_method_on(codec):
    result = codec.encode_at_bpp(sample(2_000_028)[0], 50.0, caption="a small blue star", method="utf8")
    assert result.caption_payload.method == "utf8" and result.caption_payload.method_choice is None
    with pytest.raises(Exception, match="unknown caption method 'gzip'"):
        codec.encode(sample(2_000_028)[0], caption="x", method="gzip")


@pytest.fixture(scope="module")
def tiny():
    return ImageTextCodec.from_preset("tiny")


def test_tiny_preset_codes_in_world_captions_with_lmm_ac_byte_for_byte(tiny):
    """auto, the presets' default, leaves in-world files as they were: the same bytes as lmm-ac."""
    assert tiny.config.caption.method == "auto"
    for seed in split_seeds("test", 4):
        image, text = sample(seed)
        auto = tiny.encode(image, caption=text)
        assert auto.caption_payload.method == "lmm-ac" and auto.notes == []
        assert auto.data == tiny.encode(image, caption=text, method="lmm-ac").data
    assert tiny.encode(image).data == tiny.encode(image, method="lmm-ac").data  # the LMM's own caption too


def test_cli_caption_method_and_the_empty_caption(tmp_path, random_lmm_dir, capsys):
    preset = preset_with_lmm(tmp_path, random_lmm_dir, method="auto")
    scene = tmp_path / "scene.png"
    sample(2_000_029)[0].save(scene)

    def inspect(path):
        assert main(["inspect", str(path), "--json", "--preset", preset]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    for method in ("zlib", "auto"):
        out = tmp_path / f"{method}.itc"
        assert main(["encode", str(scene), "-o", str(out), "--preset", preset, "--caption", "a large red circle",
                     "--caption-method", method]) == 0
        line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("caption (")][0]
        info = inspect(out)
        assert info["caption"] == "a large red circle" and info["text_method"] in METHODS
        assert line.startswith(f"caption ({info['text_method']}" + (" by auto, " if method == "auto" else ", "))
    assert main(["encode", str(scene), "-o", str(tmp_path / "e.itc"), "--preset", preset, "--caption", ""]) == 0
    assert "itc: note: the caption is empty" in capsys.readouterr().err
    info = inspect(tmp_path / "e.itc")
    assert info["text_method"] is None and info["caption"] is None and info["bits"]["caption"] == 0
    with pytest.raises(SystemExit):
        main(["encode", str(scene), "-o", str(tmp_path / "x.itc"), "--caption-method", "gzip"])
    assert "invalid choice: 'gzip'" in capsys.readouterr().err

    out = tmp_path / "c.bin"  # a caption file records the method auto chose, never "auto"
    assert main(["caption", "compress", "ünï ✓", "-o", str(out), "--method", "auto", "--preset", preset,
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] in ("utf8", "zlib", "lzma", "rank-zlib", "lm-ac") and out.read_bytes()[0] == METHODS.index(
        info["method"]) + 1
    assert main(["caption", "decompress", str(out), "--preset", preset]) == 0
    assert capsys.readouterr().out == "ünï ✓\n"
