"""Images in, datasets to evaluate on, and the Kodak download.

``load_image``/``to_rgb``: any PNG/JPEG mode in, 8-bit RGB out, with a note on what was converted.
``check_image``: an image file's size from its header (no pixels decoded), refused with
:class:`~itc_core.errors.ImageSizeError` when itc cannot code it: what ``itc`` checks before any model loads.

``open_dataset(spec)``: the images an evaluation runs on, loaded lazily, one :class:`Item` each:

- ``"tiny"``: the tiny-world test split (``split_seeds("test", n)``, 200 scenes unless ``limit``);
  caption and truth are the scene's own caption;
- ``"sample-photo"``: matplotlib's bundled photograph (``grace_hopper.jpg``), a real photo needing no download;
- ``"kodak"``: the 24 Kodak images in ``data/kodak/`` (``make data-kodak``), with the paper repository's
  LLaVA-1.5 captions (``data/reference/kodak_llava_1.5.csv``) as reference captions;
- a folder: every image file in it, sorted by name; reference captions from ``captions=FILE`` or, when
  present, ``captions.csv`` inside the folder (the paper's ``image_name`` + ``overall_description`` columns,
  text kept exactly).

``download_kodak`` fetches the Kodak images with a SHA-256 check of each (``data/reference/kodak.sha256``),
resuming partial files with HTTP Range requests; ``python -m itc_core.data kodak`` is what
``make data-kodak`` runs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ConfigError, ImageReadError, ImageSizeError, ItcError

if TYPE_CHECKING:  # imported where used: `itc encode` checks its images before torch loads
    import torch

__all__ = ["load_image", "check_image", "to_rgb", "image_to_tensor", "tensor_to_image", "Item", "Dataset",
           "open_dataset", "DATASETS", "IMAGE_SUFFIXES", "read_captions_csv", "DownloadError", "KODAK_URL",
           "kodak_checksums", "download_kodak"]

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "reference"
KODAK_CAPTIONS = REFERENCE_DIR / "kodak_llava_1.5.csv"
KODAK_SHA256 = REFERENCE_DIR / "kodak.sha256"
KODAK_URL = "https://r0k.us/graphics/kodak/kodak/"
DATASETS = ("tiny", "sample-photo", "kodak")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"})
TINY_DEFAULT_LIMIT = 200
SAMPLE_PHOTOS = ("grace_hopper.jpg",)


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """``image`` as 8-bit RGB, and one note per conversion made (empty if it already was)."""
    notes = []
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit (or 32-bit integer) grayscale: scale the full range to 8 bits rather than clipping at 255.
        array = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = Image.fromarray(np.round(array / top * 255).clip(0, 255).astype(np.uint8), "L")
        return gray.convert("RGB"), [f"converted {mode} (16-bit grayscale) to 8-bit RGB"]
    if mode == "La":  # premultiplied: PIL converts it to nothing but LA
        image, mode = image.convert("LA"), "LA"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        notes.append("expanded the palette image to RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        notes.append(f"dropped the alpha channel of a {mode} image (composited on white)")
    elif mode in ("L", "1"):
        image = image.convert("RGB")
        notes.append(f"converted grayscale ({mode}) to RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
        notes.append(f"converted {mode} to RGB")
    return image, notes


_READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)  # what PIL raises on bad files


def _image_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    return path


def _too_large(path: Path, err: Image.DecompressionBombError) -> ImageSizeError:
    """PIL's refusal of an image of over ``2 * Image.MAX_IMAGE_PIXELS`` pixels, in itc's words."""
    from .bitstream import MAX_PIXELS

    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"image of {found[1]} pixels" if found else "image too large for PIL to open"
    return ImageSizeError(f"{path}: {size}: itc codes at most {MAX_PIXELS} pixels (tile larger images)")


def check_image(path: str | Path) -> tuple[int, int]:
    """The (width, height) of the image file ``path``, read from its header: no pixels are decoded.

    Raises:
        ImageReadError: the file is missing, a directory, or not an image PIL can identify (a file whose
            header reads but whose pixels do not is refused later, by :func:`load_image`).
        ImageSizeError: a side or the pixel count is beyond what a ``.itc`` file holds
            (``bitstream.MAX_SIDE``, ``bitstream.MAX_PIXELS``).
    """
    from . import bitstream

    path = _image_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size check below is stricter
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        raise _too_large(path, err) from None
    except _READ_ERRORS as err:
        raise ImageReadError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    try:  # the container's own rule, as ImageTextCodec.encode applies it
        bitstream.check_size(width, height)
    except ImageSizeError as err:
        raise ImageSizeError(f"{path}: {err}") from None
    return width, height


def load_image(path: str | Path) -> tuple[Image.Image, list[str]]:
    """Read an image file as 8-bit RGB; returns it and notes on conversions.

    Raises:
        ImageReadError: the file is missing, a directory, or is not an image PIL can read.
        ImageSizeError: the image is too large for PIL to open (over ``2 * PIL.Image.MAX_IMAGE_PIXELS``);
            :func:`check_image` applies itc's stricter limit without decoding.
    """
    path = _image_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            return to_rgb(image)
    except Image.DecompressionBombError as err:
        raise _too_large(path, err) from None
    except _READ_ERRORS as err:
        raise ImageReadError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (1, 3, H, W) float tensor in [0, 1]."""
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) tensor in [0, 1] as an 8-bit RGB PIL image (rounded, clamped)."""
    import torch

    x = x.detach().cpu()
    if x.dim() == 4:
        x = x[0]
    array = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array, "RGB")


# ---------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Item:
    """One image of a dataset.

    Attributes:
        name: unique, stable id ("scene-2000000", "kodim01", the file stem).
        image: the image, 8-bit RGB.
        caption: reference caption (tiny: the true caption; kodak and folders: from the captions CSV), or None.
        truth: tiny world only: the ground-truth scene caption the referee is judged against; else None.
        notes: conversions made to reach RGB (grayscale, alpha, 16-bit...), as :func:`to_rgb` reports them.
    """

    name: str
    image: Image.Image
    caption: str | None
    truth: str | None
    notes: tuple[str, ...] = field(default=())


class Dataset:
    """A lazy, indexable list of :class:`Item`: ``len(ds)``, ``ds.names``, ``ds[i]`` loads one image."""

    def __init__(self, spec: str, names: list[str], load: Callable[[str], Item]):
        self.spec = spec
        self.names = list(names)
        self._load = load

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Item:
        return self._load(self.names[index])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Dataset({self.spec!r}, {len(self)} images)"


def open_dataset(spec: str = "tiny", limit: int | None = None, captions: str | Path | None = None) -> Dataset:
    """The images to evaluate on: ``"tiny"``, ``"sample-photo"``, ``"kodak"`` or a folder path (module docstring).

    Args:
        spec: the dataset's name or a folder of images.
        limit: keep the first ``limit`` images (tiny: 200 scenes when None; others: all).
        captions: a captions CSV for a folder (default: ``captions.csv`` inside it when present; for
            ``kodak`` the shipped LLaVA-1.5 captions).

    Raises:
        ItcError: unknown spec, empty folder, missing Kodak download, bad limit or captions CSV.
            An unreadable image raises :class:`ImageReadError` when its item is loaded.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive whole number of images, not {limit!r}")
    if spec == "tiny":
        if captions is not None:
            raise ConfigError("the tiny world brings its own captions: drop captions=")
        return _tiny(TINY_DEFAULT_LIMIT if limit is None else limit)
    if spec == "sample-photo":
        return _folder_dataset(spec, [_sample_photo(n) for n in SAMPLE_PHOTOS], captions, limit)
    if spec == "kodak":
        return _folder_dataset(spec, _kodak_files(), captions or KODAK_CAPTIONS, limit)
    folder = Path(spec)
    if not folder.is_dir():
        what = "is a file, not a folder of images" if folder.exists() else "is neither a dataset nor a folder"
        raise ConfigError(f"dataset {spec!r} {what}; use {', '.join(DATASETS)} or a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ItcError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if captions is None and (folder / "captions.csv").is_file():
        captions = folder / "captions.csv"
    return _folder_dataset(str(folder), files, captions, limit)


def _tiny(count: int) -> Dataset:
    from .tinyworld import SPLITS, sample, split_seeds

    low, high = SPLITS["test"]
    if count > high - low:
        raise ConfigError(f"the tiny-world test split holds {high - low} scenes; asked for {count}")
    seeds = {f"scene-{seed}": seed for seed in split_seeds("test", count)}

    def load(name: str) -> Item:
        image, truth = sample(seeds[name])
        return Item(name, image, truth, truth)

    return Dataset("tiny", list(seeds), load)


def _sample_photo(name: str) -> Path:
    import matplotlib.cbook

    path = Path(matplotlib.cbook.get_sample_data(name, asfileobj=False))
    if not path.is_file():
        raise ItcError(f"matplotlib's sample photo {name} is missing from this install ({path})")
    return path


def _kodak_files() -> list[Path]:
    from .config import data_dir

    folder = data_dir() / "kodak"
    names = sorted(kodak_checksums())
    missing = [n for n in names if not (folder / n).is_file()]
    if len(missing) == len(names):
        raise ItcError(f"{folder}: no Kodak images; run `make data-kodak` (downloads the 24 images, needs internet)")
    if missing:
        raise ItcError(f"{folder}: {len(missing)} of the 24 Kodak images are missing ({missing[0]}, ...); "
                       "run `make data-kodak` to finish the download")
    return [folder / n for n in names]


def _folder_dataset(spec: str, files: list[Path], captions: str | Path | None, limit: int | None) -> Dataset:
    stems = Counter(p.stem for p in files)
    # Two files with one stem (a.png, a.jpg): keep the whole file name so that names stay unique.
    names = [p.name if stems[p.stem] > 1 else p.stem for p in files]
    table = read_captions_csv(captions) if captions is not None else {}
    # A CSV row names a file ("a.png") or a stem ("a"); a stem matches only when one file has it.
    by_stem = {Path(key).stem: text for key, text in table.items()}
    by_name = dict(zip(names, files))
    if limit is not None:
        names = names[:limit]

    def load(name: str) -> Item:
        path = by_name[name]
        image, notes = load_image(path)
        caption = table.get(path.name) or (by_stem.get(path.stem) if stems[path.stem] == 1 else None)
        return Item(name, image, caption or None, None, tuple(notes))  # an empty CSV cell is no caption

    return Dataset(spec, names, load)


CAPTION_NAME_COLUMNS = ("image_name", "image", "file", "filename")
CAPTION_TEXT_COLUMNS = ("overall_description", "caption", "text")


def read_captions_csv(path: str | Path) -> dict[str, str]:
    """Captions keyed by image file name, from a CSV, text kept exactly (leading spaces included).

    Reads the paper repository's format (``image_name`` and ``overall_description`` columns, e.g.
    ``kodak_llava_1.5.csv``) or any CSV with ``image``/``file`` and ``caption`` columns.

    Raises:
        ItcError: no such file, not UTF-8, or no name / caption column.
    """
    path = Path(path)
    if not path.is_file():
        raise ItcError(f"{path}: no such caption CSV")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            name = next((c for c in CAPTION_NAME_COLUMNS if c in fields), None)
            text = next((c for c in CAPTION_TEXT_COLUMNS if c in fields), None)
            if not name or not text:
                raise ItcError(f"{path}: needs a name column ({', '.join(CAPTION_NAME_COLUMNS)}) and a caption "
                               f"column ({', '.join(CAPTION_TEXT_COLUMNS)}); found {', '.join(fields) or 'none'}")
            return {row[name]: row[text] for row in reader if row.get(name) and row.get(text) is not None}
    except (UnicodeDecodeError, csv.Error) as err:
        raise ItcError(f"{path}: not a readable UTF-8 CSV ({err})") from None


# ---------------------------------------------------------------------------------------------- Kodak download


class DownloadError(ItcError):
    """A download that could not finish: unreachable server, HTTP error, dropped connection, wrong checksum."""


def kodak_checksums(path: str | Path = KODAK_SHA256) -> dict[str, str]:
    """``{file name: SHA-256}`` from a ``sha256sum``-style table (``data/reference/kodak.sha256``)."""
    table = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.strip().partition("  ")
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise ItcError(f"{path}:{number}: not a '<sha256>  <file name>' line")
        table[name] = digest
    return table


def download_kodak(dest: str | Path, base_url: str = KODAK_URL, checksums: dict[str, str] | None = None,
                   timeout: float = 60.0, retries: int = 3, log: Callable[[str], None] | None = print) -> list[Path]:
    """Download the Kodak images into ``dest``, each checked against its SHA-256; returns their paths.

    Files already present with the right checksum are skipped. A file arrives as ``NAME.part`` and is
    renamed only once its checksum matches, so ``dest`` never holds a wrong image under its real name.
    An interrupted ``.part`` is resumed with an HTTP Range request (here, up to ``retries`` times, or on
    the next call); a file with a wrong checksum is deleted.

    Args:
        dest: the folder to fill (created if missing).
        base_url: where ``<base_url><name>`` is served.
        checksums: ``{file name: SHA-256}``; default: :func:`kodak_checksums`.
        timeout: seconds to wait on the connection and on each read.
        retries: resumptions after a dropped connection, per file.
        log: called with one line per file (None: quiet).

    Raises:
        DownloadError: server unreachable, HTTP error, connection dropped more than ``retries`` times,
            or a checksum mismatch (one line saying which file and what to do).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    checksums = kodak_checksums() if checksums is None else checksums
    if not base_url.endswith("/"):
        base_url += "/"
    paths = []
    for name, digest in checksums.items():
        path = dest / name
        if path.is_file() and _sha256(path) == digest:
            _say(log, f"{name}: already downloaded, checksum OK")
        else:
            _fetch(base_url + name, path, digest, timeout, retries)
            _say(log, f"{name}: downloaded, checksum OK")
        paths.append(path)
    return paths


def _say(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, path: Path, digest: str, timeout: float, retries: int) -> None:
    """Fetch ``url`` into ``path`` through ``path.part``, resuming it; verify, then rename."""
    part = path.with_name(path.name + ".part")
    for attempt in range(retries + 1):
        try:
            complete = _fetch_part(url, part, timeout)
        except (urllib.error.HTTPError) as err:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            if attempt == 0 and not part.exists():
                raise DownloadError(f"cannot reach {url} ({reason}); the Kodak download needs internet") from None
            complete = False
        if complete:
            break
    else:
        size = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"{url}: connection dropped {retries + 1} times ({size} bytes kept in {part}); "
                            "run `make data-kodak` again to resume")
    got = _sha256(part)
    if got != digest:
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 {got} is not the expected {digest}; the file was deleted "
                            "(a changed or corrupted server copy)")
    os.replace(part, path)


def _fetch_part(url: str, part: Path, timeout: float) -> bool:
    """Append the rest of ``url`` to ``part``; True when the server's whole file is there."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part is whole (or wrong, the checksum will say)
            return True
        raise
    with response:
        if response.status != 206:  # a full answer (the server ignores Range): start over
            have = 0
        expected = response.headers.get("Content-Length")
        received = 0
        with part.open("ab" if have else "wb") as f:
            for block in iter(lambda: response.read(1 << 16), b""):
                f.write(block)
                received += len(block)
    # http.client returns a short body without complaint when the connection drops: count the bytes.
    return expected is None or received >= int(expected)


# ---------------------------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """``python -m itc_core.data kodak [--dest DIR] [--base-url URL]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m itc_core.data", description="Fetch evaluation datasets.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    kodak = sub.add_parser("kodak", help="download the 24 Kodak images, SHA-256 checked, resumable")
    kodak.add_argument("--dest", help="target folder (default: data/kodak)")
    kodak.add_argument("--base-url", default=KODAK_URL, help=f"where the images are served (default: {KODAK_URL})")
    args = parser.parse_args(argv)
    from .config import data_dir

    try:
        paths = download_kodak(args.dest or data_dir() / "kodak", args.base_url)
    except ItcError as err:
        print(f"itc: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(paths)} Kodak images in {paths[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
