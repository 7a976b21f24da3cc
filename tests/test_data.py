import csv
import hashlib
import http.server
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from itc_core.data import (
    DownloadError, download_kodak, image_to_tensor, kodak_checksums, load_image, open_dataset, read_captions_csv,
    tensor_to_image,
)
from itc_core.data import main as data_main
from itc_core.errors import ConfigError, ImageReadError, ItcError
from itc_core.tinyworld import sample


def save(tmp_path, image, name="in.png"):
    path = tmp_path / name
    image.save(path)
    return path


@pytest.mark.parametrize("mode, note", [
    ("RGBA", "dropped the alpha channel"), ("LA", "dropped the alpha channel"), ("L", "grayscale"),
    ("1", "grayscale"), ("P", "palette"),
])
def test_modes_become_rgb_with_a_note(tmp_path, mode, note):
    image = Image.new("RGB", (7, 5), (200, 30, 60)).convert(mode)
    loaded, notes = load_image(save(tmp_path, image))
    assert loaded.mode == "RGB" and loaded.size == (7, 5)
    assert any(note in n for n in notes)


def test_rgb_needs_no_note(tmp_path):
    loaded, notes = load_image(save(tmp_path, Image.new("RGB", (3, 3), (1, 2, 3))))
    assert notes == [] and loaded.getpixel((0, 0)) == (1, 2, 3)


def test_transparent_pixels_composite_on_white(tmp_path):
    image = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    loaded, _ = load_image(save(tmp_path, image))
    assert loaded.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_png_scales_to_8_bit(tmp_path):
    array = np.array([[0, 32768, 65535]], dtype=np.uint16)
    loaded, notes = load_image(save(tmp_path, Image.fromarray(array)))
    assert [loaded.getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]
    assert any("16-bit" in n for n in notes)


def test_cmyk_jpeg(tmp_path):
    loaded, notes = load_image(save(tmp_path, Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "in.jpg"))
    assert loaded.mode == "RGB" and any("CMYK" in n for n in notes)


def test_not_an_image_and_missing_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello, I am not a picture")
    with pytest.raises(ImageReadError, match="notes.png: not a readable image"):
        load_image(text)
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_truncated_png(tmp_path):
    path = save(tmp_path, Image.new("RGB", (64, 64), (9, 9, 9)))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_image(path)


def test_tensor_round_trip_is_exact():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (5, 9, 3), dtype=np.uint8))
    x = image_to_tensor(image)
    assert x.shape == (1, 3, 5, 9) and 0 <= x.min() and x.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_image(x)), np.asarray(image))


# ---------------------------------------------------------------------------------------------- datasets

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


def test_tiny_is_the_test_split_with_true_captions():
    ds = open_dataset("tiny", limit=3)
    assert ds.names == ["scene-2000000", "scene-2000001", "scene-2000002"]
    item = ds[1]
    image, truth = sample(2000001)
    assert item.name == "scene-2000001" and item.caption == item.truth == truth
    assert np.array_equal(np.asarray(item.image), np.asarray(image)) and item.image.mode == "RGB"
    assert len(open_dataset("tiny")) == 200


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name", "item1", "overall_description", "dall_len"])
        writer.writerows([name, "", text, ""] for name, text in rows)


def test_folder_converts_odd_images_and_reads_captions_csv(tmp_path):
    Image.new("RGBA", (8, 6), (10, 20, 30, 128)).save(tmp_path / "b.png")
    Image.fromarray(np.full((5, 5), 40000, dtype=np.uint16)).save(tmp_path / "a.png")
    Image.new("L", (4, 4), 7).save(tmp_path / "c.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    text = ' The image features a red barn, "quoted", with commas,\nand a newline.'
    write_csv(tmp_path / "captions.csv", [("b.png", text), ("a", "stem-keyed caption")])
    ds = open_dataset(str(tmp_path))
    assert ds.names == ["a", "b", "c"]
    a, b, c = list(ds)
    assert all(i.image.mode == "RGB" and i.truth is None for i in (a, b, c))
    assert b.caption == text and a.caption == "stem-keyed caption" and c.caption is None
    assert any("16-bit" in n for n in a.notes) and any("alpha" in n for n in b.notes)
    assert open_dataset(str(tmp_path), limit=2).names == ["a", "b"]


def test_folder_without_csv_and_with_captions_argument(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    assert open_dataset(str(tmp_path))[0].caption is None
    other = tmp_path.parent / f"{tmp_path.name}-caps.csv"
    write_csv(other, [("x.png", "from elsewhere")])
    assert open_dataset(str(tmp_path), captions=other)[0].caption == "from elsewhere"


def test_bad_specs_get_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="'nope' is neither a dataset nor a folder"):
        open_dataset("nope")
    with pytest.raises(ItcError, match="no image files"):
        open_dataset(str(tmp_path))
    (tmp_path / "broken.png").write_text("not a png")
    ds = open_dataset(str(tmp_path))
    with pytest.raises(ImageReadError, match="broken.png: not a readable image"):
        ds[0]
    with pytest.raises(ConfigError, match="limit"):
        open_dataset("tiny", limit=0)
    with pytest.raises(ItcError, match="caption column"):
        (tmp_path / "bad.csv").write_text("image_name,other\nbroken.png,x\n")
        open_dataset(str(tmp_path), captions=tmp_path / "bad.csv")


def test_sample_photo_is_a_real_rgb_photo():
    ds = open_dataset("sample-photo")
    item = ds[0]
    assert ds.names == ["grace_hopper"] and item.image.mode == "RGB" and min(item.image.size) >= 256
    assert item.caption is None


def test_kodak_missing_partial_and_present(tmp_path, monkeypatch):
    monkeypatch.setenv("ITC_DATA_DIR", str(tmp_path))
    with pytest.raises(ItcError, match="run `make data-kodak`"):
        open_dataset("kodak")
    (tmp_path / "kodak").mkdir()
    names = sorted(kodak_checksums())
    for name in names[:3]:
        Image.new("RGB", (8, 8)).save(tmp_path / "kodak" / name)
    with pytest.raises(ItcError, match="21 of the 24 Kodak images are missing"):
        open_dataset("kodak")
    for name in names[3:]:
        Image.new("RGB", (8, 8)).save(tmp_path / "kodak" / name)
    ds = open_dataset("kodak", limit=5)
    llava = read_captions_csv(REFERENCE / "kodak_llava_1.5.csv")
    assert ds.names == ["kodim01", "kodim02", "kodim03", "kodim04", "kodim05"]
    assert ds[4].caption == llava["kodim05.png"] and ds[4].caption.startswith(" The image features")


def test_shipped_kodak_table_names_the_24_images():
    table = kodak_checksums()
    assert sorted(table) == [f"kodim{i:02d}.png" for i in range(1, 25)]
    assert len(set(table.values())) == 24 and all(len(d) == 64 for d in table.values())


# ---------------------------------------------------------------------------------------------- downloader


class FileServer:
    """A local HTTP server on 127.0.0.1 serving ``files``, with Range support and scripted connection drops."""

    def __init__(self, files, honour_range=True):
        self.files, self.honour_range = files, honour_range
        self.drops = {}  # name -> bytes to send before dropping the connection (next request only)
        self.requests = []  # (name, Range header or None)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                wanted = self.headers.get("Range")
                if wanted and server.honour_range:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.drops.pop(name, None)
                self.wfile.write(body[start:] if cut is None else body[start:start + cut])
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def small_files():
    rng = np.random.default_rng(0)
    files = {f"img{i}.png": rng.integers(0, 256, 3000 + 500 * i, dtype=np.uint8).tobytes() for i in range(3)}
    return files, {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}


def download(dest, url, sums, **kwargs):
    lines = []
    paths = download_kodak(dest, url, sums, timeout=10, log=lines.append, **kwargs)
    return paths, lines


def test_download_verifies_and_skips_what_is_already_there(tmp_path):
    files, sums = small_files()
    with FileServer(files) as server:
        paths, _ = download(tmp_path, server.url, sums)
        assert [p.read_bytes() for p in paths] == list(files.values())
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no .part left
        asked = len(server.requests)
        _, lines = download(tmp_path, server.url, sums)
        assert len(server.requests) == asked and all("already downloaded" in line for line in lines)


def test_wrong_checksum_rejects_the_file_and_leaves_nothing(tmp_path):
    files, sums = small_files()
    sums["img1.png"] = hashlib.sha256(b"another file").hexdigest()
    with FileServer(files) as server, pytest.raises(DownloadError) as err:
        download(tmp_path, server.url, sums)
    message = str(err.value)
    assert "img1.png: SHA-256" in message and "deleted" in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img0.png"]


def test_dropped_connection_resumes_with_a_range_request(tmp_path):
    files, sums = small_files()
    with FileServer(files) as server:
        server.drops["img2.png"] = 1000
        with pytest.raises(DownloadError, match="connection dropped.*run `make data-kodak` again to resume"):
            download(tmp_path, server.url, sums, retries=0)
        assert (tmp_path / "img2.png.part").stat().st_size == 1000 and not (tmp_path / "img2.png").exists()
        paths, _ = download(tmp_path, server.url, sums, retries=0)
        assert ("img2.png", "bytes=1000-") in server.requests
        assert paths[2].read_bytes() == files["img2.png"] and not (tmp_path / "img2.png.part").exists()
        server.drops["img0.png"] = 700  # within one call, the retry resumes by itself
        (tmp_path / "img0.png").unlink()
        download(tmp_path, server.url, sums)
        assert (tmp_path / "img0.png").read_bytes() == files["img0.png"]


def test_server_ignoring_range_restarts_the_file(tmp_path):
    files, sums = small_files()
    (tmp_path / "img0.png.part").write_bytes(files["img0.png"][:500])
    with FileServer(files, honour_range=False) as server:
        paths, _ = download(tmp_path, server.url, sums)
    assert paths[0].read_bytes() == files["img0.png"]


def test_offline_and_http_errors_are_one_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/"
    _, sums = small_files()
    with pytest.raises(DownloadError, match="cannot reach .*needs internet"):
        download(tmp_path, refused, sums)
    assert data_main(["kodak", "--dest", str(tmp_path / "k"), "--base-url", refused]) == 2
    err = capsys.readouterr().err
    assert err.startswith("itc: error: cannot reach") and err.count("\n") == 1
    with FileServer({}) as server, pytest.raises(DownloadError, match="HTTP 404"):
        download(tmp_path, server.url, sums)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("preset, steps", [
    ("paper", ["-m itc_core.data kodak", "HF_HUB_OFFLINE=0", "--preset paper", "--dataset kodak",
               "--out outputs/eval-paper"]),
    ("tiny", ["HF_HUB_OFFLINE=1", "--preset tiny", "--dataset tiny", "--out outputs/eval-tiny"]),
])
def test_make_reproduce_recipe(preset, steps):
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["make", "-n", "-C", str(root), "reproduce", f"PRESET={preset}", "-o", ".venv/.installed"],
                         capture_output=True, text=True, check=True).stdout
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), out
    assert preset != "tiny" or "itc_core.data kodak" not in out


def test_names_stay_unique_and_empty_captions_are_none(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "y.png")
    write_csv(tmp_path / "captions.csv", [("x.png", "the png"), ("y.png", "")])
    ds = open_dataset(str(tmp_path))
    assert ds.names == ["x.jpg", "x.png", "y"]
    assert [i.caption for i in ds] == [None, "the png", None]
