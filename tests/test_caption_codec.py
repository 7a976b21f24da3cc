import csv
import random
from pathlib import Path

import pytest
from PIL import Image

from itc_core.caption_codec import (LM_METHODS, METHODS, CaptionCodingError, NextTokenModel, compress_caption,
                                    decompress_caption)
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
