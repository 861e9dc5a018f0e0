"""Documents from the bundled C4 sample, local C4 shards, or (opt-in) the HF hub.

Local shards may be JSON Lines (``.json``/``.jsonl``, optionally ``.gz``) as allenai/c4
publishes them, or Parquet with a ``text`` column. ``hf:allenai/c4:en`` streams the
full data set with ``datasets``; it needs the network and the ``hub`` extra, and is
never used unless named. With ``MAGMA_HUB_MIRROR`` set, the same name reads a local copy
of the hub repository instead (``<mirror>/allenai/c4/en/c4-train.00000-of-01024.json.gz``
...), in the hub's shard order, and nothing is downloaded.

Every source is read lazily, document by document, so a reader that stops early (the
token cache at its budget) has read only that far.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from worker.settings import get_settings

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_FILES = {
    "train": [ASSETS / "c4" / "c4-sample-train.jsonl.gz"],
    "validation": [ASSETS / "c4" / "c4-sample-validation.jsonl.gz"],
}
HUB_PREFIX = "hf:"


def resolve_sources(sources: list[str] | None, split: str) -> list[str]:
    """Paths (globs expanded, sorted) or hub ids; the bundled sample when None."""
    if not sources:
        return [str(p) for p in SAMPLE_FILES[split]]
    resolved: list[str] = []
    for source in sources:
        if source.startswith(HUB_PREFIX):
            if _mirror_dir(source) is not None and not mirror_files(source, split):
                raise ValueError(
                    f"{split}_files: {source!r} has no {split} files in the hub mirror "
                    f"{str(_mirror_dir(source))!r} (MAGMA_HUB_MIRROR), which should hold "
                    f"files named like '*-{split}.*.json.gz' or '*-{split}-*.parquet'"
                )
            resolved.append(source)
            continue
        matches = sorted(glob.glob(source)) if any(c in source for c in "*?[") else []
        paths = [Path(m) for m in matches] or [Path(source)]
        for path in paths:
            if not path.is_file():
                raise ValueError(f"{split}_files: no such file {str(path)!r}")
            resolved.append(str(path.resolve()))
    return resolved


#: above this many bytes a file is "large": identified by path, size and mtime rather than
#: hashed, and (with the other sources) read only as far as a trial's budget needs
CONTENT_HASH_LIMIT = 64 << 20


def fingerprint(sources: list[str], split: str) -> str:
    """The sources' identity for the token cache's key: content hashes of local files up
    to 64 MiB, path + size + mtime of larger ones (full C4 shards would otherwise be
    re-read by every trial), hub ids by name, plus, when a hub id reads a mirror, each
    mirror file's name, size and mtime (a mirror may not match the hub)."""
    digest = hashlib.sha256()
    for source in sources:
        if source.startswith(HUB_PREFIX):
            digest.update(source.encode())
            for path in mirror_files(source, split):
                stat = os.stat(path)
                digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            continue
        stat = os.stat(source)
        if stat.st_size <= CONTENT_HASH_LIMIT:
            digest.update(file_sha256(source))
        else:
            digest.update(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def is_large(sources: list[str]) -> bool:
    """Whether reading the sources whole would be too much for one trial: any hub id
    (C4 ``en`` is 365M documents) or local files of more than 64 MiB in all. A large
    source is read only as far as the trial's budget; a small one (the bundled sample)
    is read whole, so its cache does not depend on the trial's length."""
    if any(source.startswith(HUB_PREFIX) for source in sources):
        return True
    return sum(os.stat(source).st_size for source in sources) > CONTENT_HASH_LIMIT


def mirror_files(source: str, split: str) -> list[str]:
    """A hub id's files for ``split`` in the local mirror (none without one), in the hub's
    shard order: ``<mirror>/<repo>/<config>/`` files named ``*-<split>.*`` (allenai/c4's
    ``c4-train.00000-of-01024.json.gz``) or ``*-<split>-*`` (Parquet exports)."""
    directory = _mirror_dir(source)
    if directory is None:
        return []
    names = {*glob.glob(f"{directory}/*-{split}.*"), *glob.glob(f"{directory}/*-{split}-*")}
    return sorted(n for n in names if n.endswith((".json", ".jsonl", ".gz", ".parquet")))


def _mirror_dir(source: str) -> Path | None:
    mirror = get_settings().hub_mirror
    if mirror is None:
        return None
    name, _, config = source[len(HUB_PREFIX) :].partition(":")
    return mirror.resolve() / name / config if config else mirror.resolve() / name


def documents(sources: list[str], split: str, limit: int | None = None) -> Iterator[str]:
    """Every document's text, in source order."""
    count = 0
    for source in sources:
        texts = _hub_texts(source, split) if source.startswith(HUB_PREFIX) else _file_texts(source)
        for text in texts:
            if limit is not None and count >= limit:
                return
            count += 1
            yield text


def file_sha256(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def _file_texts(path: str) -> Iterator[str]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
            yield from batch.column("text").to_pylist()
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]


def _hub_texts(source: str, split: str) -> Iterator[str]:
    if _mirror_dir(source) is not None:
        for path in mirror_files(source, split):
            yield from _file_texts(path)
        return
    try:
        import datasets
    except ImportError as exc:  # the offline default never gets here
        raise ValueError(
            f"{source!r} streams from the Hugging Face hub and needs `pip install datasets` "
            "(the `hub` extra) and network access"
        ) from exc
    name, _, config = source[len(HUB_PREFIX) :].partition(":")
    stream = datasets.load_dataset(name, config or None, split=split, streaming=True)
    for row in stream:
        yield row["text"]
