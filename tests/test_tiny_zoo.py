import json

import torch

from itc_core.config import ImageCodecConfig
from itc_core.image_codec import ImageCodec
from itc_core.tinyworld.train_lic import LicRecipe, train_lic_zoo


def small_recipe(**kw) -> LicRecipe:
    return LicRecipe(N=16, M=24, lambdas={1: 0.001, 2: 0.05}, base_steps=2, steps=2, batch_size=2,
                     train_scenes=16, test_scenes=2, **kw)


def test_trains_exports_and_resumes(tmp_path):
    out, work = tmp_path / "lic", tmp_path / "work"
    manifest = train_lic_zoo(out, work, small_recipe())
    assert sorted(manifest["models"]) == ["1", "2"]
    entry = manifest["models"]["1"]
    for key in ("sha256", "lambda", "train_seconds"):
        assert key in entry
    assert entry["test"]["bpp_real"] > 0 and entry["test"]["scenes"] == 2
    assert json.loads((out / "manifest.json").read_text())["models"] == manifest["models"]

    cfg = ImageCodecConfig(N=16, M=24, qualities=[1, 2], weights=str(out / "mbt2018-mean-q{quality}.safetensors"))
    codec = ImageCodec.from_config(cfg, 2)
    payload = codec.compress(torch.rand(1, 3, 64, 64))
    assert codec.decompress(payload.strings, 64, 64).shape == (1, 3, 64, 64)

    # A longer run resumes from the checkpoints instead of starting again.
    assert torch.load(work / "q1.pt", weights_only=True)["step"] == 2
    longer = small_recipe()
    longer.steps = 3
    train_lic_zoo(out, work, longer, qualities=[1])
    assert torch.load(work / "q1.pt", weights_only=True)["step"] == 3
    assert torch.load(work / "base.pt", weights_only=True)["step"] == 2
