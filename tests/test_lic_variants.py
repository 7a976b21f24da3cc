"""The tiny preset's LIC variants: a shipped one's files match its manifest; one that does not ship says how to
make it when selected."""

import hashlib
import json

import pytest
import yaml

from itc_core.config import data_dir, load_config
from itc_core.errors import ConfigError

VARIANTS = load_config("tiny").image_codec.variants


@pytest.mark.parametrize("variant", sorted(v for v in VARIANTS if "make" not in VARIANTS[v]))
def test_variant_files_match_their_manifest(variant):
    spec = VARIANTS[variant]
    folder = (data_dir() / spec["weights"]).parent
    models = json.loads((folder / "manifest.json").read_text())["models"]
    assert sorted(int(q) for q in models) == spec["qualities"]
    for entry in models.values():
        assert hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]


def test_a_variant_that_does_not_ship_names_the_commands_that_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ITC_DATA_DIR", str(tmp_path))  # an empty data directory: no variant weights there
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"variant": "mine", "variants": {"mine": {
        "weights": "mine/mbt2018-mean-q{quality}.safetensors", "qualities": [1, 2],
        "make": "itc finetune --config my-q{quality} --export mine --quality {quality}"}}}}))
    with pytest.raises(ConfigError, match=r"rate points \[1, 2\].*itc finetune --config my-q1 --export mine "
                                          r"--quality 1; itc finetune --config my-q2"):
        load_config(str(path))
    (tmp_path / "mine").mkdir()
    for q in (1, 2):
        (tmp_path / "mine" / f"mbt2018-mean-q{q}.safetensors").write_bytes(b"")
    assert load_config(str(path)).image_codec.qualities == [1, 2]
