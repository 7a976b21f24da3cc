import pytest
import yaml

from itc_core.config import PRESETS, load_config
from itc_core.errors import ConfigError


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.image_codec.quality in cfg.image_codec.qualities
    assert cfg.caption.method == "auto"  # the cheapest method per caption, recorded in the file


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny, laptop, paper"):
        load_config("huge")


def test_user_yaml_overrides_a_base(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": "paper", "image_codec": {"quality": 2}}))
    cfg = load_config(str(path))
    assert cfg.name == "mine"
    assert cfg.image_codec.architecture == "cheng2020-attn" and cfg.image_codec.quality == 2


@pytest.mark.parametrize("values, message", [
    ({"image_codc": {}}, r"unknown key\(s\) image_codc; valid: name, description, image_codec"),
    ({"image_codec": {"qualty": 1}}, r"image_codec: unknown key\(s\) qualty; valid: architecture"),
    ({"image_codec": {"quality": 12}}, "quality 12 not in qualities"),
    ({"image_codec": {"metric": "psnr"}}, "metric 'psnr'"),
    ({"image_codec": 3}, "expected a mapping"),
])
def test_bad_user_yaml_gives_one_clear_error(tmp_path, values, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny", **values}))
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_invalid_yaml_and_base_loops(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("image_codec: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(broken))
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(str(loop))


@pytest.mark.parametrize("values, message", [
    ({"image_codec": {"qualities": [1, 300]}}, "integers 0-255"),
    ({"image_codec": {"qualities": 3}}, "integers 0-255"),
    ({"image_codec": {"pretrained": "false"}}, "true or false"),
    ({"image_codec": {"sizes": {6: {"K": 3}}}}, "image_codec.sizes"),
    ({"image_codec": {"sizes": {6: {"M": "wide"}}}}, "image_codec.sizes"),
    ({"image_codec": {"sizes": {12: {"M": 192}}}}, "offered rate point"),
    ({"image_codec": {"sizes": [192]}}, "image_codec.sizes"),
    ({"image_codec": {"N": None, "sizes": {6: {"M": 192}}}}, "needs N"),
    ({"caption": {"max_new_tokens": 0}}, "positive integer"),
    ({"caption": {"method": "gzip"}}, "caption.method 'gzip'; valid: auto, utf8, zlib"),
    ({"caption": {"lmm": None, "method": "lm-ac"}}, "needs caption.lmm"),
    ({"name": "paper"}, "may not be named 'paper'"),
    ({"caption": {"select": "best"}}, "caption.select 'best'"),
    ({"caption": {"select": "rerank", "clip": None, "rank_clip": None}}, "needs caption.clip"),
    ({"caption": {"candidates": 0}}, "candidates must be a positive integer"),
    ({"caption": {"no_adjacent_repeat": -1}}, "no_adjacent_repeat must be an integer"),
    ({"caption": {"repetition_penalty": 0}}, "repetition_penalty must be > 0"),
    ({"caption": {"clip_margin": "wide"}}, "clip_margin must be a number"),
    ({"caption": {"rank_lm_weight": -1}}, "rank_lm_weight must be a number >= 0"),
])
def test_bad_values_are_refused(tmp_path, values, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny", **values}))
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_narrowed_qualities_keep_only_their_own_widths(tmp_path):
    """tiny's q10 is wider (M = 128); a preset offering [1] drops that width, one offering 10 keeps it."""
    assert load_config("tiny").image_codec.size(10)[1] == 128
    for qualities, sizes in (([1], {}), ([1, 10], {10: {"M": 128}})):
        path = tmp_path / "narrow.yaml"
        path.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"qualities": qualities}}))
        assert load_config(str(path)).image_codec.sizes == sizes
    for written, sizes in (({}, {}), ({1: {"M": 64}}, {1: {"M": 64}})):  # a narrowed preset's own widths only
        path.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"qualities": [1], "sizes": written}}))
        assert load_config(str(path)).image_codec.sizes == sizes
    path.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"sizes": {7: {"M": 192}}}}))
    assert load_config(str(path)).image_codec.sizes == {7: {"M": 192}, 10: {"M": 128}}  # and the base's kept
    path.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"qualities": [10], "quality": 10, "sizes": {10: {"N": 80}}}}))
    assert load_config(str(path)).image_codec.size(10) == (80, 128)  # merged into the base's width of that point
    path.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"qualities": [1], "sizes": {10: {"M": 64}}}}))
    with pytest.raises(ConfigError, match="offered rate point"):  # written in the same preset: checked as written
        load_config(str(path))


def test_auto_needs_no_lmm(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny", "caption": {"lmm": None, "method": "auto"}}))
    assert load_config(str(path)).caption.method == "auto"  # auto then picks among utf8, zlib and lzma
