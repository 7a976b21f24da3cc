"""The tiny preset's domain check (itc_core/domain.py) and what the codec and CLI do outside the domain.

The codec tests use a random-weight LIC (``random_lic_preset``, based on ``tiny``, so its domain is the tiny
world), a stand-in LMM caption (``choose_caption`` replaced) and a stand-in restorer that records its calls:
what is tested is the gate, not the models. ``benchmarks/out_of_domain.py`` measures the real ones.
"""

import numpy as np
import pytest
import yaml
from PIL import Image

from itc_core import bitstream
from itc_core.captioner import CaptionChoice
from itc_core.cli import main
from itc_core.codec import ImageTextCodec
from itc_core.config import load_config
from itc_core.domain import (MIN_COVERAGE, SCENE_SIZE, check_domain, palette, palette_coverage, restores_file)
from itc_core.errors import ConfigError
from itc_core.tinyworld import COLOURS, generate_scene, render, sample, split_seeds
from tests.conftest import random_lic_preset


@pytest.fixture(scope="module")
def grace():
    from matplotlib import cbook

    return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def test_palette_is_the_colours_scenes_are_filled_with():
    colours = {tuple(c) for c in palette().tolist()}
    assert len(colours) == 2 * len(COLOURS) and set(COLOURS.values()) <= colours  # each colour and its pattern shade


def test_held_out_scenes_are_in_domain():
    verdicts = [check_domain(sample(s)[0]) for s in split_seeds("test", 100)]
    assert all(v.in_domain for v in verdicts)
    assert min(v.coverage for v in verdicts) > MIN_COVERAGE + 0.1  # scenes' coverage is >= 0.83 (the benchmark)


def test_out_of_world_images_are_not(grace):
    rng = np.random.default_rng(0)
    cases = {
        "photo": (grace, "512x600 px"),
        "thumbnail": (grace.resize(SCENE_SIZE, Image.LANCZOS), "palette coverage"),
        "noise": (Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "palette coverage"),
        "white page": (Image.new("RGB", SCENE_SIZE, (255, 255, 255)), "palette coverage"),  # palette white is 245
        "gradient": (Image.linear_gradient("L").resize(SCENE_SIZE).convert("RGB"), "palette coverage"),
        "scene at 128 px": (render(generate_scene(7), 128, 7), "128x128 px"),
    }
    for name, (image, reason) in cases.items():
        verdict = check_domain(image)
        assert not verdict.in_domain and reason in verdict.reason, (name, verdict)
    assert check_domain(grace.convert("RGBA")).reason == check_domain(grace).reason  # any mode


def test_coverage_of_a_large_image_is_sampled_evenly():
    half = np.zeros((3000, 4000, 3), dtype=np.uint8)
    half[:, :2000] = COLOURS["red"]  # the left half a palette colour, the right half black (0, 0, 0): not
    assert palette_coverage(Image.fromarray(half)) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ConfigError, match="unknown domain"):
        check_domain(Image.new("RGB", SCENE_SIZE), "photos")


def test_domain_is_a_preset_key(tmp_path):
    assert load_config("tiny").domain == "tiny-world"
    assert load_config("laptop").domain is None and load_config("paper").domain is None
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"base": "tiny", "domain": None}))
    assert load_config(str(off)).domain is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "tiny", "domain": "photos"}))
    with pytest.raises(ConfigError, match="domain 'photos'; valid: tiny-world"):
        load_config(str(bad))


def test_restores_only_unmarked_scene_sized_files():
    assert restores_file("tiny-world", 64, 64, out_of_domain=False)
    assert not restores_file("tiny-world", 64, 64, out_of_domain=True)
    assert not restores_file("tiny-world", 512, 600, out_of_domain=False)


class RecordingRestorer:
    """Stands in for the tiny restorer: returns a white image and records the captions it was given."""

    enabled = True

    def __init__(self):
        self.captions = []

    def restore(self, reconstruction, caption, **kwargs):
        self.captions.append(caption)
        return Image.new("RGB", reconstruction.size, "white")


@pytest.fixture
def codec(tmp_path, monkeypatch):
    """A tiny-world codec with a random LIC, an LMM stand-in that writes "lmm caption" (and counts its calls)
    and a recording restorer."""
    codec = ImageTextCodec.from_preset(random_lic_preset(tmp_path, seed=0))
    codec.config.caption.lmm = "tiny/lmm"  # the preset writes captions with an LMM...
    codec.config.caption.method = "utf8"   # ...coded without one
    codec.lmm_calls = 0

    def choose_caption(image, *args, **kwargs):
        codec.lmm_calls += 1
        return CaptionChoice("lmm caption", "greedy", ["lmm caption"])
    monkeypatch.setattr(codec, "choose_caption", choose_caption)
    codec._restorer = RecordingRestorer()
    return codec


def test_encode_outside_the_domain_notes_it_and_spends_no_lmm_caption(codec, grace):
    photo = grace.resize((80, 96))
    result = codec.encode(photo)
    assert codec.lmm_calls == 0 and result.caption is None and result.bits["caption"] == 0
    note, = [n for n in result.notes if "tiny-world" in n]
    assert note.startswith("not a tiny-world scene (80x96 px") and "--preset laptop" in note
    assert "--no-domain-check" in note and "no caption is stored" in note
    given = codec.encode(photo, caption="a woman in uniform")
    assert given.caption == "a woman in uniform" and "the given caption is stored" in given.notes[-1]
    old = codec.encode(photo, domain_check=False)
    assert old.caption == "lmm caption" and not old.notes and codec.lmm_calls == 1
    at_bpp = codec.encode_at_bpp(photo, 100.0)
    assert at_bpp.caption is None and codec.lmm_calls == 1 and "not a tiny-world scene" in at_bpp.notes[-1]


def test_scenes_are_coded_as_before(codec):
    for seed in split_seeds("test", 5):
        image = sample(seed)[0]
        result = codec.encode(image)
        assert result.caption == "lmm caption" and not result.notes
        assert result.data == codec.encode(image, domain_check=False).data
    assert codec.lmm_calls == 10


def test_decode_restores_only_unmarked_scene_sized_files(codec, grace):
    restorer = codec._restorer
    scene = sample(2_000_000)[0]
    captioned = codec.decode(codec.encode(scene).data)
    assert captioned.restored is not None and not captioned.notes and restorer.captions == ["lmm caption"]
    uncaptioned = codec.decode(codec.encode(scene, caption=False).data)  # a scene without a caption: restored
    assert uncaptioned.restored is not None and not uncaptioned.notes
    thumbnail = codec.encode(grace.resize((64, 64)))  # 64x64 but no scene: marked, and left alone
    assert bitstream.unpack(thumbnail.data).out_of_domain and thumbnail.caption is None
    bare = codec.decode(thumbnail.data)
    assert bare.restored is None and bare.image is bare.reconstruction and "marked by its encoder" in bare.notes[0]
    assert codec.decode(thumbnail.data, domain_check=False).restored is not None
    assert codec.decode(thumbnail.data, restore=True).restored is not None  # an explicit request wins
    assert codec.decode(thumbnail.data, restore=False).notes == []  # nothing withheld
    photo = codec.decode(codec.encode(grace.resize((80, 96)), caption="a woman").data)
    assert photo.restored is None and "80x96 px, not 64x64" in photo.notes[0]
    codec.config.domain = None  # laptop and paper: every file restored, as before
    assert codec.decode(thumbnail.data).restored is not None
    assert restorer.captions == ["lmm caption", None, None, None, None]


def test_cli_prints_the_notes_and_takes_the_override(tmp_path, grace, capsys):
    preset = random_lic_preset(tmp_path, seed=0)  # no LMM, no caption: the note, and the decoder's
    photo = tmp_path / "grace.png"
    grace.resize((80, 96)).save(photo)
    assert main(["encode", str(photo), "-o", str(tmp_path / "g.itc"), "--preset", preset]) == 0
    assert "itc: note: not a tiny-world scene (80x96 px" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "g.itc"), "-o", str(tmp_path / "g.png"), "--preset", preset]) == 0
    assert "itc: note: not restored: the file was marked by its encoder" in capsys.readouterr().err
    assert main(["encode", str(photo), "-o", str(tmp_path / "o.itc"), "--preset", preset, "--no-domain-check"]) == 0
    assert "tiny-world" not in capsys.readouterr().err
    marked, unmarked = (bitstream.unpack((tmp_path / name).read_bytes()) for name in ("g.itc", "o.itc"))
    assert marked.out_of_domain and not unmarked.out_of_domain and marked.payload == unmarked.payload
