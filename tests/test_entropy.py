"""The one-stream latent coder against CompressAI's own compress/decompress (same symbols), escapes, bounds."""

import numpy as np
import pytest
import torch

from itc_core.entropy import LatentCoder, UnsupportedModel
from itc_core.image_codec import build_model
from itc_core.rangecoder import MARGIN_BITS, StreamDecoder, StreamEncoder, StreamError


def random_net(arch: str, seed: int = 0, y_bias: float = 0.0):
    torch.manual_seed(seed)
    net = build_model(arch, N=16, M=24).eval()
    if y_bias:  # pushes the latents far outside the tables: forces CompressAI's overflow (escape) symbols
        last = net.g_a[-1]
        torch.nn.init.constant_(last.bias, y_bias)
    net.update(force=True)
    return net


def round_trip(net, x):
    coder = LatentCoder(net)
    stream = StreamEncoder()
    x_hat = coder.encode(stream, x)
    data = stream.finish()
    decoded = coder.decode(StreamDecoder(data), x.shape[2], x.shape[3])
    return stream, data, x_hat, decoded


@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"])
@pytest.mark.parametrize("y_bias", [0.0, 300.0])
def test_same_symbols_as_compressai(arch, y_bias):
    net = random_net(arch, y_bias=y_bias)
    x = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(1))
    stream, data, x_hat, decoded = round_trip(net, x)
    assert torch.equal(x_hat, decoded)
    with torch.no_grad():
        out = net.compress(x)
        reference = net.decompress(out["strings"], out["shape"])["x_hat"]
    assert torch.equal(reference, x_hat)  # CompressAI decodes its strings to the same latents we coded
    escapes = [entry for entry in stream._log if entry[0] == "uniform"]
    assert bool(escapes) == bool(y_bias)
    assert stream.info_bits <= 8 * len(data) + MARGIN_BITS


@pytest.mark.parametrize("arch", ["mbt2018", "cheng2020-anchor"])
def test_autoregressive_models_are_refused(arch):
    net = build_model(arch, N=16, M=16) if arch == "mbt2018" else build_model(arch, N=16)
    with pytest.raises(UnsupportedModel, match="not autoregressive"):
        LatentCoder(net)


def test_size_is_checked_against_the_payload_before_decoding():
    coder = LatentCoder(random_net("mbt2018-mean"))
    assert coder.min_bits(128, 128) == pytest.approx(4 * coder.min_bits(64, 64))
    with pytest.raises(StreamError, match="needs at least"):
        coder.decode(StreamDecoder(bytes(8)), 16384, 1024)


def test_garbage_stops_once_its_information_exceeds_the_bytes():
    decoder = StreamDecoder(b"\x5a\xc3\x11")
    uniform = np.full((1, 300), 1 / 300)
    with pytest.raises(StreamError, match="more information"):
        for _ in range(10_000):  # constriction would decode zeros forever past the end
            decoder.categorical(uniform, "caption")
    assert decoder.info_bits <= 24 + MARGIN_BITS + np.log2(300)


def test_trimmed_stream_is_short_and_decodes():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(50) * 0.3, size=40)
    symbols = np.array([rng.choice(50, p=p) for p in probs], dtype=np.int32)
    stream = StreamEncoder()
    stream.categorical(symbols, probs, "caption")
    stream.bytes(b"\x00\xff", "caption")
    data = stream.finish()
    assert 8 * len(data) <= stream.info_bits + 16  # vs whole 32-bit words and a two-word flush before trimming
    decoder = StreamDecoder(data)
    assert np.array_equal(decoder.categorical(probs, "caption"), symbols)
    assert decoder.bytes(2, "caption") == b"\x00\xff"
