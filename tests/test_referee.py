"""The referee: training recipe, loading errors, and the shipped model's readings and distance."""

import json
import shutil

import pytest
import torch

from itc_core.config import data_dir
from itc_core.errors import WeightsError
from itc_core.tinyworld import batch, caption, generate_scene, split_seeds
from itc_core.tinyworld.referee import Referee, RefereeNet, as_batch, scene_targets
from itc_core.tinyworld.train_referee import RefereeRecipe, degrade, train_referee

SHIPPED = data_dir() / "tiny" / "referee"


@pytest.fixture(scope="module")
def referee() -> Referee:
    return Referee.load()


def test_recipe_trains_saves_loads_and_resumes(tmp_path):
    out, work = tmp_path / "referee", tmp_path / "work"
    recipe = RefereeRecipe(widths=(4, 8, 8, 8), cell_hidden=8, steps=2, batch_size=4, eval_scenes=8)
    manifest = train_referee(out, work, recipe)
    assert manifest["parameters"] > 0 and len(manifest["sha256"]) == 64
    for split in ("val_originals", "test_originals", "test_degraded"):
        assert 0 <= manifest["test"][split]["exact"] <= 1
    loaded = Referee.load(out)
    assert loaded.net.widths == (4, 8, 8, 8) and len(loaded.read(batch(split_seeds("val", 3)))) == 3
    assert torch.load(work / "referee.pt", weights_only=True)["step"] == 2
    recipe.steps = 3
    train_referee(out, work, recipe)
    assert torch.load(work / "referee.pt", weights_only=True)["step"] == 3


def test_missing_or_damaged_weights_name_the_path(tmp_path):
    with pytest.raises(WeightsError, match="itc tiny-zoo --only referee") as err:
        Referee.load(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED, broken)
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (broken / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        Referee.load(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="model.safetensors"):
        Referee.load(broken)


def test_targets_and_degradations_are_well_formed():
    scenes = [generate_scene(s) for s in split_seeds("train", 5)]
    cells, scene = scene_targets(scenes)
    assert cells.shape == (5, 9, 4) and scene.shape == (5, 2)
    assert int((cells[..., 0] == 1).sum()) == sum(len(s.objects) for s in scenes)
    recipe = RefereeRecipe(share_degraded=1.0)
    images = batch(split_seeds("train", 5))
    a = degrade(images, torch.Generator().manual_seed(1), recipe)
    b = degrade(images, torch.Generator().manual_seed(1), recipe)
    assert torch.equal(a, b) and a.shape == (5, 3, 64, 64) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, as_batch(images))


def test_reads_held_out_originals(referee):
    seeds = split_seeds("test", 40)
    readings = referee.read(batch(seeds))
    assert sum(r == caption(generate_scene(s)) for r, s in zip(readings, seeds)) >= 38
    acc = referee.accuracy(batch(seeds), seeds)
    assert acc["colour"] >= 0.97 and acc["background"] >= 0.97
    # Scenes as truths score the same as their seeds (used for edited captions).
    assert referee.accuracy(batch(seeds), [generate_scene(s) for s in seeds]) == acc


def test_deterministic_and_input_forms_agree(referee):
    images = batch(split_seeds("test", 6))
    x = as_batch(images)
    first, again = referee.logits(images), referee.logits(x.clone())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    from PIL import Image
    assert referee.read([Image.fromarray(im) for im in images]) == referee.read(x)
    with pytest.raises(ValueError, match="64, 64"):
        referee.read(torch.rand(1, 3, 32, 32))


def test_distance_is_zero_on_itself_symmetric_and_grows_with_damage(referee):
    x = as_batch(batch(split_seeds("test", 8)))
    assert torch.equal(referee.distance(x, x), torch.zeros(8))
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert torch.allclose(referee.distance(x, y), referee.distance(y, x), atol=1e-6)
    z = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert (referee.distance(x, y) > 0).all() and (referee.distance(x, z) > referee.distance(x, y)).all()
    with pytest.raises(ValueError, match="same shape"):
        referee.distance(x, x[:2])


def test_net_shapes():
    cells, scene = RefereeNet((4, 8, 8, 8), 8)(torch.rand(2, 3, 64, 64))
    assert cells.shape == (2, 9, 21) and scene.shape == (2, 14)


def test_shipped_manifest_records_recipe_size_and_figures():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["command"] == "itc tiny-zoo --only referee" and manifest["bytes"] < 3_000_000
    assert set(manifest["test"]["test_originals"]) >= {"exact", "shape", "colour", "size", "background", "pattern"}
