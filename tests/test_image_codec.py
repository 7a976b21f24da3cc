import pytest
import torch
from safetensors.torch import save_file

import compressai.zoo.image as zoo_image
from itc_core.config import load_config
from itc_core.errors import ConfigError, WeightsError
from itc_core.image_codec import ImageCodec, build_model, load_weights
from itc_core.tinyworld import batch, split_seeds


@pytest.fixture(scope="module")
def tiny_codec():
    return ImageCodec.from_config(load_config("tiny").image_codec, quality=1)


def scenes(n=4):
    return torch.from_numpy(batch(split_seeds("test", n))).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("size", [(1, 1), (64, 64), (63, 65), (70, 130)])
def test_any_size_round_trips_through_real_bytes(tiny_codec, size):
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size)
    payload = tiny_codec.compress(x)
    assert payload.names == ["y", "z"] and all(isinstance(s, bytes) for s in payload.strings)
    x_hat = tiny_codec.decompress(payload.strings, *size)
    assert x_hat.shape == x.shape and 0 <= x_hat.min() and x_hat.max() <= 1
    assert torch.equal(x_hat, tiny_codec.decompress(payload.strings, *size))


def test_real_bits_track_the_estimate_on_tiny_scenes(tiny_codec):
    for x in scenes():
        payload = tiny_codec.compress(x[None])
        for s, est in zip(payload.strings, payload.estimated_bits):
            assert abs(8 * len(s) - est) <= 0.03 * est + 64  # 3% + 8 bytes of coder flush per string


def test_shipped_rates_increase_with_quality():
    cfg = load_config("tiny").image_codec
    x = scenes(1)
    bits = [ImageCodec.from_config(cfg, q).compress(x).bits for q in cfg.qualities]
    assert bits == sorted(bits) and bits[0] < bits[-1]


def test_other_zoo_architectures_code_too():
    for arch in ("bmshj2018-hyperprior", "cheng2020-attn", "bmshj2018-factorized"):
        torch.manual_seed(0)
        codec = ImageCodec(build_model(arch, quality=1), arch, 1)
        x = torch.rand(1, 3, 40, 72)
        payload = codec.compress(x)
        assert codec.decompress(payload.strings, 40, 72).shape == x.shape
        assert len(payload.strings) == (1 if "factorized" in arch else 2)


def test_safetensors_and_torch_checkpoints_load(tmp_path):
    torch.manual_seed(1)
    net = build_model("mbt2018-mean", N=16, M=24)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "w.pth.tar")
    for name in ("w.safetensors", "w.pth.tar"):
        other = build_model("mbt2018-mean", N=16, M=24)
        load_weights(other, tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))


def test_exported_files_leave_out_the_gaussian_tables_and_load_them_back_checked(tmp_path):
    from safetensors import safe_open

    from itc_core.finetune import export_lic

    torch.manual_seed(2)
    net = build_model("mbt2018-mean", N=16, M=24)
    path = export_lic(net, tmp_path / "q1.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "gaussian_conditional.scale_table" in keys and "entropy_bottleneck._quantized_cdf" in keys
    assert not any(k.startswith("gaussian_conditional._") for k in keys)
    loaded = build_model("mbt2018-mean", N=16, M=24)
    load_weights(loaded, path)
    net.update(force=True)  # the tables depend on the scale table alone, not on the weights
    for name in ("_quantized_cdf", "_offset", "_cdf_length"):
        assert torch.equal(getattr(loaded.gaussian_conditional, name), getattr(net.gaussian_conditional, name))
    state = {k: v for k, v in loaded.state_dict().items() if not k.startswith("gaussian_conditional._")}
    save_file(state, str(tmp_path / "forged.safetensors"), metadata={"gaussian_conditional.tables_sha256": "0" * 64})
    with pytest.raises(WeightsError, match="CDF tables rebuilt for gaussian_conditional differ from the checksum"):
        load_weights(build_model("mbt2018-mean", N=16, M=24), tmp_path / "forged.safetensors")


def test_bad_weights_give_one_clear_error(tmp_path):
    net = build_model("mbt2018-mean", N=16, M=24)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(net, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        load_weights(net, tmp_path / "junk.safetensors")
    wider = build_model("mbt2018-mean", N=32, M=24)
    save_file({k: v.contiguous() for k, v in wider.state_dict().items()}, str(tmp_path / "wider.safetensors"))
    with pytest.raises(WeightsError, match="do not fit MeanScaleHyperprior"):
        load_weights(net, tmp_path / "wider.safetensors")


def test_widened_latents_reconstruct_as_the_narrow_model_and_cost_the_same():
    from itc_core.image_codec import widen_latents

    torch.manual_seed(0)
    narrow = ImageCodec.from_config(load_config("tiny").image_codec, quality=3).net  # trained: its latents cost bits
    wide = build_model("mbt2018-mean", N=64, M=112)
    wide.load_state_dict(widen_latents(wide, narrow.state_dict()))
    x = scenes(2)
    with torch.no_grad():
        a, b = narrow(x), wide.eval()(x)
    assert torch.equal(a["x_hat"], b["x_hat"])
    bits = [float(-r["likelihoods"]["y"].log2().sum()) for r in (a, b)]
    assert bits[1] == pytest.approx(bits[0], rel=1e-3)
    assert torch.equal(a["likelihoods"]["z"], b["likelihoods"]["z"])
    with pytest.raises(WeightsError, match="cannot widen to M=96, N=64"):
        widen_latents(narrow.eval(), wide.state_dict())
    with pytest.raises(WeightsError, match="implemented for mbt2018-mean"):
        widen_latents(build_model("bmshj2018-hyperprior", N=64, M=112), narrow.state_dict())


def test_pickled_code_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    torch.save({"state_dict": Boom()}, tmp_path / "evil.pth.tar", _use_new_zipfile_serialization=True)
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        load_weights(build_model("mbt2018-mean", N=16, M=24), tmp_path / "evil.pth.tar")


def test_unknown_architecture_and_quality():
    with pytest.raises(ConfigError, match="unknown LIC architecture 'jpeg'; valid: bmshj2018-factorized"):
        build_model("jpeg")
    with pytest.raises(ConfigError, match="quality 12 not offered"):
        ImageCodec.from_config(load_config("tiny").image_codec, quality=12)


def test_zoo_download_failure_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(zoo_image, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="needs the internet once"):
        ImageCodec.from_config(load_config("laptop").image_codec)


def test_wrong_input_shape(tiny_codec):
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        tiny_codec.compress(torch.rand(2, 3, 8, 8))
