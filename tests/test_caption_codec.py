import csv
import random
import zlib
from pathlib import Path

import pytest
from PIL import Image

from itc_core.caption_codec import (AUTO_ORDER, LM_METHODS, METHODS, CaptionCodingError, NextTokenModel,
                                    choose_method, compare_methods, compress_caption, decode_caption,
                                    decompress_caption, encode_caption)
from itc_core.rangecoder import StreamDecoder, StreamEncoder
from itc_core.tinyworld import sample

KODAK = Path(__file__).resolve().parents[1] / "data" / "reference" / "kodak_llava_1.5.csv"
PROMPT = "USER: <image>\nDescribe the scene. ASSISTANT:"
CONTEXT = Image.new("RGB", (64, 64), (10, 120, 200))


@pytest.fixture(scope="module")
def lm(random_lmm_dir):
    return NextTokenModel.from_pretrained(random_lmm_dir, PROMPT)


def random_unicode(rng: random.Random, n: int) -> str:
    out = []
    while len(out) < n:
        cp = rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x800), rng.randrange(0x800, 0xD800),
                         rng.randrange(0xE000, 0x10000), rng.randrange(0x10000, 0x110000), ord("\n"), ord(" ")])
        out.append(chr(cp))
    return "".join(out)


def round_trip(text, method, lm):
    payload = compress_caption(text, method, lm, CONTEXT)
    assert payload.bits == 8 * len(payload.data) and payload.chars == len(text)
    assert (payload.nll_bits is None) == (method not in LM_METHODS)
    assert decompress_caption(payload.data, method, lm, CONTEXT) == text
    return payload


CASES = {
    "tiny": [sample(s)[1] for s in range(3)],
    "empty": [""],
    "emoji_newlines": ["a cat 🐈‍⬛ on a mat\n\nthe end 👋🏽\r\n", "\n", " leading and trailing "],
    "special_token_text": ["</s> <image> <s> <pad> <unk>"],
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip(lm, method, case):
    for text in CASES[case]:
        round_trip(text, method, lm)


@pytest.mark.skipif(not KODAK.exists(), reason="shared/data not beside the checkout")
@pytest.mark.parametrize("method", METHODS)
def test_round_trip_real_kodak_llava_captions(lm, method):
    with KODAK.open(newline="", encoding="utf-8") as f:
        captions = [row["overall_description"] for row in csv.DictReader(f)]
    assert len(captions) == 24
    for text in captions[:24 if method not in LM_METHODS else 6]:  # LM methods: 6 suffice, the model is random
        round_trip(text, method, lm)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["utf8", "zlib", "lzma", "lm-ac"])  # the other LM methods share lm-ac's token path
def test_round_trip_2000_characters_of_mixed_scripts(lm, method):
    rng = random.Random(1)
    parts = ["Ελληνικά ", "中文字符 ", "русский ", "العربية ", "हिन्दी ", "emoji 🎉🧪 ", "ascii text "]
    text = "".join(rng.choice(parts) for _ in range(400))[:2000]
    round_trip(text, method, lm)


@pytest.mark.slow
def test_round_trip_200_random_unicode_strings(lm):
    rng = random.Random(0)
    for i in range(200):
        text = random_unicode(rng, rng.randrange(0, 16))
        for method in METHODS if i < 20 else ("utf8", "zlib", "lzma", "lm-ac"):
            round_trip(text, method, lm)


def test_short_predictable_caption_costs_at_most_two_bytes(lm):
    for text in ["", "a", "ab"]:
        payload = compress_caption(text, "lm-ac", lm)
        if payload.nll_bits < 8:
            assert len(payload.data) <= 2, (text, payload.nll_bits, payload.data)


def test_arithmetic_coding_is_close_to_the_model_nll(lm):
    for text in CASES["tiny"] + CASES["emoji_newlines"]:
        payload = compress_caption(text, "lm-ac", lm)
        # The coder's 24-bit quantised probabilities can make a few bits fewer than the float NLL.
        assert payload.nll_bits - 8 <= payload.bits <= payload.nll_bits + 16


def test_lmm_ac_uses_the_context_image(lm):
    text = sample(0)[1]
    a = compress_caption(text, "lmm-ac", lm, CONTEXT)
    b = compress_caption(text, "lmm-ac", lm, Image.new("RGB", (64, 64), (250, 250, 0)))
    assert a.nll_bits != b.nll_bits
    with pytest.raises(CaptionCodingError, match="context-image"):
        compress_caption(text, "lmm-ac", lm)


def test_wrong_context_or_damaged_payload_never_returns_the_caption_silently(lm):
    text = sample(1)[1]
    payload = compress_caption(text, "lmm-ac", lm, CONTEXT)
    other = Image.new("RGB", (64, 64), (0, 0, 0))
    try:
        assert decompress_caption(payload.data, "lmm-ac", lm, other) != text
    except CaptionCodingError:
        pass
    damaged = bytes([payload.data[0] ^ 0x40]) + payload.data[1:]
    try:
        assert decompress_caption(damaged, "lmm-ac", lm, CONTEXT) != text
    except CaptionCodingError:
        pass


def test_errors(lm):
    with pytest.raises(CaptionCodingError, match="unknown caption method 'gzip'"):
        compress_caption("x", "gzip")
    with pytest.raises(CaptionCodingError, match="needs the preset's LMM"):
        compress_caption("x", "lm-ac")
    with pytest.raises(CaptionCodingError, match="at most"):
        compress_caption("x" * 20_001, "utf8")
    with pytest.raises(CaptionCodingError, match="zlib text payload does not decode"):
        decompress_caption(b"not zlib", "zlib")
    with pytest.raises(CaptionCodingError, match="does not decode"):
        decompress_caption(b"\xff\xfe", "utf8")


DECODER = """
import base64, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from PIL import Image
from itc_core.caption_codec import NextTokenModel, decompress_caption
lm = NextTokenModel.from_pretrained(sys.argv[2], {prompt!r})
context = Image.new("RGB", (64, 64), (10, 120, 200))
items = json.load(open(sys.argv[3]))
for item in items:
    item["back"] = decompress_caption(base64.b64decode(item["data"]), "lmm-ac", lm, context)
json.dump(items, open(sys.argv[3], "w"))
"""


@pytest.mark.slow
def test_decoding_with_another_thread_count_in_a_fresh_process(lm, random_lmm_dir, tmp_path):
    import base64
    import json
    import os
    import subprocess
    import sys

    import torch

    assert torch.get_num_threads() == 1  # encoded here with 1 thread, decoded in a fresh process with 4
    texts = [sample(s)[1] for s in range(12)] + ["ünï ✓ 🐈\n"]
    io = tmp_path / "items.json"
    io.write_text(json.dumps([{"text": t, "data": base64.b64encode(compress_caption(t, "lmm-ac", lm, CONTEXT).data)
                               .decode()} for t in texts]))
    env = dict(os.environ, OMP_NUM_THREADS="4")
    subprocess.run([sys.executable, "-c", DECODER.format(prompt=PROMPT), "4", str(random_lmm_dir), str(io)],
                   check=True, env=env)
    items = json.loads(io.read_text())
    assert [item["back"] for item in items] == texts


def test_hostile_payloads_give_clean_errors(lm):
    import zlib as _zlib

    with pytest.raises(CaptionCodingError, match="inflates beyond"):
        decompress_caption(_zlib.compress(b"a" * 100_000), "zlib")
    with pytest.raises(CaptionCodingError):
        decompress_caption(b"\xff" * 8, "lm-ac", lm)
    with pytest.raises(CaptionCodingError, match="not valid Unicode"):
        compress_caption("caf\udce9", "utf8")


# ---------------------------------------------------------------- auto

def kodak_captions():
    with KODAK.open(newline="", encoding="utf-8") as f:
        return [row["overall_description"] for row in csv.DictReader(f)]


def auto_texts():
    rng = random.Random(2)
    texts = CASES["tiny"] + CASES["emoji_newlines"] + CASES["special_token_text"]
    texts += [random_unicode(rng, rng.randrange(1, 40)) for _ in range(6)] + ["ab" * 90]  # 180 bytes: 2-byte length
    return texts + (kodak_captions()[:1] if KODAK.exists() else [])  # one: the random LMM makes it slow, not hard


def varint_bytes(n):
    return 1 if n < 128 else 2 if n < 16384 else 3


def test_auto_standalone_is_the_fewest_bytes_of_every_method(lm):
    for text in auto_texts()[:8]:
        payload = compress_caption(text, "auto", lm, CONTEXT)
        every = compare_methods(text, lm, CONTEXT, methods=[m for m in AUTO_ORDER if m != "lm-ac"])  # lmm-ac at hand
        assert payload.bits == min(p.bits for p in every.values())
        assert payload.method_choice.bits == {m: float(p.bits) for m, p in every.items()}
        assert payload.method in METHODS and decompress_caption(payload.data, payload.method, lm, CONTEXT) == text


def test_auto_in_a_stream_costs_at_most_utf8_or_zlib_plus_its_length_byte(lm):
    """The bound auto guarantees: its caption bits (the stream's own count) are the fewest of the methods at
    hand, so at most 8 bits a UTF-8 (or zlib) byte plus the 1-2 byte length a byte method pays."""
    for text in auto_texts():
        stream = StreamEncoder()
        payload = encode_caption(stream, text, "auto", lm, CONTEXT)
        bits = stream.info["caption"]  # the coder's own sum of −log2 p: equal to auto's figure up to float rounding
        assert min(payload.method_choice.bits.values()) == payload.method_choice.bits[payload.method]
        assert bits == pytest.approx(payload.method_choice.bits[payload.method], abs=1e-9)
        for raw in (text.encode("utf-8"), zlib.compress(text.encode("utf-8"), 9)):
            assert bits <= 8 * (len(raw) + varint_bytes(len(raw))) + 1e-9
        assert decode_caption(StreamDecoder(stream.finish()), payload.method, lm, CONTEXT) == text


def test_auto_runs_the_lmm_once_per_context(lm, monkeypatch):
    calls = []
    original = NextTokenModel.distributions

    def counted(self, image, tokens):
        calls.append(image)
        return original(self, image, tokens)
    monkeypatch.setattr(NextTokenModel, "distributions", counted)
    text = sample(3)[1]
    encode_caption(StreamEncoder(), text, "auto", lm, CONTEXT)
    assert len(calls) == 1 and calls[0] is CONTEXT  # lmm-ac's pass only: with a reconstruction lm-ac is not tried
    calls.clear()
    choice = choose_method(text, lm)  # no reconstruction: no lmm-ac, one pass
    assert len(calls) == 1 and "lmm-ac" in choice.ruled_out and set(choice.bits) == set(AUTO_ORDER) - {"lmm-ac"}
    assert set(choose_method(text).bits) == {"utf8", "zlib", "lzma"}  # no LMM: the byte methods


def test_auto_passes_over_a_tokenizer_that_cannot_round_trip(lm, monkeypatch):
    def refuse(text):
        raise CaptionCodingError("this tokenizer does not reproduce the caption exactly")
    monkeypatch.setattr(lm, "tokenize", refuse)  # what a Llama tokenizer does with a leading space
    stream = StreamEncoder()
    payload = encode_caption(stream, " a leading space", "auto", lm, CONTEXT)
    assert payload.method == "utf8" and set(payload.method_choice.ruled_out) == {"lmm-ac"}
    assert "does not reproduce" in payload.method_choice.describe()
    assert decode_caption(StreamDecoder(stream.finish()), "utf8") == " a leading space"
    for method in LM_METHODS:  # asked for by name, the method still refuses
        with pytest.raises(CaptionCodingError, match="does not reproduce"):
            encode_caption(StreamEncoder(), " a leading space", method, lm, CONTEXT)


def test_auto_passes_over_a_caption_longer_than_the_lmm_context(lm):
    text = "\U0001F408" * 3000  # 12,000 UTF-8 bytes: more tokens than the random LMM's 8,192 positions
    choice = choose_method(text, lm, CONTEXT)
    assert choice.method in ("zlib", "lzma") and set(choice.ruled_out) == {"lmm-ac"}
    assert "context" in choice.ruled_out["lmm-ac"]


def test_lzma_small_dictionary_gives_the_64_mib_dictionary_s_bytes():
    import lzma

    full = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    rng = random.Random(4)
    texts = [sample(s)[1] for s in range(3)] + [random_unicode(rng, 300), "ab" * 3000]
    texts += kodak_captions()[:2] if KODAK.exists() else []
    for text in texts:
        raw = text.encode("utf-8")
        assert compress_caption(text, "lzma").data == lzma.compress(raw, format=lzma.FORMAT_RAW, filters=full)
