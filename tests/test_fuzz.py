"""A small seeded sample of ``benchmarks/fuzz_itc.py``: every mutated file is a clean ``ItcError``, never a crash."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from itc_core import bitstream
from itc_core.cli import main
from itc_core.codec import ImageTextCodec
from itc_core.errors import ItcError
from itc_core.tinyworld import sample
from tests.test_cli import itc

_spec = importlib.util.spec_from_file_location("fuzz_itc", Path(__file__).parents[1] / "benchmarks" / "fuzz_itc.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def setup():
    codec = ImageTextCodec.from_preset("tiny")
    corpus = []
    for i, (q, method) in enumerate([(1, None), (1, "lmm-ac"), (2, "zlib"), (3, "utf8")]):
        image, text = sample(3_000_000 + i)
        corpus.append(codec.encode(image, q, caption=text if method else False, method=method).data)
    table = {}
    for q in codec.config.image_codec.qualities:
        for method in (None,) + bitstream.TEXT_METHODS:
            lmm = codec.lmm.fingerprint if method in ("rank-zlib", "lm-ac", "lmm-ac") else None
            table[q, method] = bitstream.fingerprint_byte(bitstream.model_fingerprint(codec.image_codec(q).fingerprint, lmm))
    return codec, corpus, table


def test_seeded_fuzz_sample_gives_only_clean_errors(setup):
    codec, corpus, table = setup
    cases = fuzz.make_cases(corpus, table, n_bytes=40, n_structure=20, seed=6)
    outcomes = []
    for mode, kind, data in cases:
        try:
            codec.decode(data, restore=False)
            outcomes.append("decoded")
            assert mode == "valid" or "= a valid file" in kind, (mode, kind)
        except ItcError:
            outcomes.append("clean")
    assert outcomes.count("decoded") >= len(corpus) and outcomes.count("clean") > 50


def test_forged_sizes_are_one_line_errors(setup, tmp_path, capsys):
    codec, corpus, table = setup
    forged = dict(fuzz.handcrafted(corpus[1], lambda q, m: table.get((q, m))))
    for name, data in forged.items():
        path = tmp_path / f"{name}.itc"
        path.write_bytes(data)
        assert main(["decode", str(path), "-o", str(tmp_path / "o.png")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("itc: error:") and err.count("\n") == 1, err
    # The 64-byte file (v1 header claiming 20000x20000) in a fresh process: exit 2, not SIGSEGV.
    done = itc("decode", tmp_path / "v1-20000x20000.itc", "-o", tmp_path / "o.png")
    assert done.returncode == 2 and "re-encode" in done.stderr and done.stderr.count("\n") == 1


def test_mutations_are_seeded():
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    data, other = b"IT\x02" + bytes(range(40)), b"IT\x02" + bytes(30)
    assert [fuzz.mutate_bytes(data, other, rng_a) for _ in range(20)] == \
        [fuzz.mutate_bytes(data, other, rng_b) for _ in range(20)]
