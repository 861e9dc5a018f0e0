"""worker.data: the bundled C4 sample, local shards, the token cache, rows and order.

All on the real bundled sample and T5 SentencePiece model; builds are limited to a few
hundred documents so the file runs in seconds.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import torch

from tests.worker_fixtures import LLAMA_DOCUMENTS, llama_config
from worker.data import corpus
from worker.data.batches import IGNORE_INDEX, Rows, TrainOrder
from worker.data.token_cache import TokenizedSplit, tokenized_split
from worker.data.tokenizer import (
    BYTES,
    T5_SPIECE,
    ByteTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
)
from worker.workloads import build_workload

FIRST_TRAIN = "Beginners BBQ Class Taking Place in Missoula!"
FIRST_TRAIN_IDS = [12847, 277, 15068, 4501, 3, 12297, 3399, 16, 5964, 7115, 9, 55]
FIRST_VALIDATION = "The woman who died after falling from a bridge over the A21"


@pytest.fixture(scope="module")
def t5() -> SentencePieceTokenizer:
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def train_sources() -> list[str]:
    return corpus.resolve_sources(None, "train")


@pytest.fixture(scope="module")
def train_texts(train_sources) -> list[str]:
    return list(corpus.documents(train_sources, "train", LLAMA_DOCUMENTS))


@pytest.fixture(scope="module")
def train_split(train_sources, t5, token_cache_dir) -> TokenizedSplit:
    """The same split the llama training tests use (shared session cache)."""
    return tokenized_split(train_sources, "train", t5, token_cache_dir, LLAMA_DOCUMENTS)


def _cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


# --- the bundled sample and tokenizer -------------------------------------------------


@pytest.mark.parametrize(
    ("split", "count", "first"),
    [("train", 3744, FIRST_TRAIN), ("validation", 400, FIRST_VALIDATION)],
)
def test_bundled_sample_resolves(split, count, first):
    sources = corpus.resolve_sources(None, split)
    assert sources == [str(p) for p in corpus.SAMPLE_FILES[split]]
    assert all(Path(s).is_file() for s in sources)
    assert corpus.resolve_sources([], split) == sources
    texts = list(corpus.documents(sources, split))
    assert len(texts) == count
    assert texts[0].startswith(first)
    assert len(set(texts)) == count  # the README: every text in a file is unique
    assert list(corpus.documents(sources, split, limit=5)) == texts[:5]


def test_t5_tokenizer(t5):
    assert (t5.vocab_size, t5.eos_id, t5.pad_id) == (32000, 1, 0)
    assert t5.encode([FIRST_TRAIN]) == [FIRST_TRAIN_IDS]
    assert t5.fingerprint.startswith("spm:")


def test_byte_tokenizer_round_trips_c4(train_texts):
    tokenizer = load_tokenizer(BYTES)
    assert isinstance(tokenizer, ByteTokenizer)
    assert (tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id) == (258, 256, 257)
    encoded = tokenizer.encode(train_texts)
    assert encoded[0][: len(FIRST_TRAIN)] == list(FIRST_TRAIN.encode())
    for text, ids in zip(train_texts, encoded, strict=True):
        assert all(0 <= i < 256 for i in ids)  # EOS and pad are never text
        assert bytes(ids).decode("utf-8") == text  # exact, unlike T5's normalisation
    # the sample is not all ASCII: multi-byte characters round-trip too
    assert sum(len(ids) != len(text) for text, ids in zip(train_texts, encoded, strict=True)) > 10


# --- token cache ----------------------------------------------------------------------


def test_documents_decode_back(train_split, train_texts):
    split = train_split
    assert split.num_documents == LLAMA_DOCUMENTS
    assert split.offsets[0] == 0 and split.offsets[-1] == len(split.tokens)
    assert split.tokens.dtype == np.uint16
    assert split.tokens[: len(FIRST_TRAIN_IDS)].tolist() == FIRST_TRAIN_IDS
    sp = sentencepiece.SentencePieceProcessor(model_file=str(T5_SPIECE))
    exact = 0
    for i, text in enumerate(train_texts):
        ids = split.tokens[split.offsets[i] : split.offsets[i + 1]].tolist()
        assert ids[-1] == 1, f"document {i} does not end in EOS"
        assert 1 not in ids[:-1]
        decoded = sp.decode(ids[:-1])
        if i == 0:
            assert decoded.startswith(FIRST_TRAIN)
            assert decoded == " ".join(text.split())
        exact += decoded == " ".join(text.split())
    # T5's vocabulary maps some characters (e.g. '{', rare unicode) to <unk>; most of C4
    # round-trips exactly up to whitespace normalisation.
    assert exact >= 0.8 * len(train_texts)


def test_cache_built_once_then_reused(tmp_path, train_sources, t5):
    started = time.perf_counter()
    first = tokenized_split(train_sources, "train", t5, tmp_path, 200)
    build_time = time.perf_counter() - started
    stem = first.path
    meta = stem.with_suffix(".json")
    files = _cache_files(tmp_path)
    assert files == sorted(stem.with_suffix(s).name for s in (".json", ".offsets.npy", ".tokens"))
    mtimes = {name: (tmp_path / name).stat().st_mtime_ns for name in files}
    info = json.loads(meta.read_text())
    assert info["documents"] == 200 == first.num_documents
    assert info["tokens"] == len(first.tokens)
    assert info["sources"] == train_sources
    assert info["tokenizer"] == t5.fingerprint

    time.sleep(0.05)  # so a rebuild would show in a coarse-grained mtime
    started = time.perf_counter()
    second = tokenized_split(train_sources, "train", t5, tmp_path, 200)
    reuse_time = time.perf_counter() - started
    assert second.path == stem
    assert _cache_files(tmp_path) == files
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in files} == mtimes
    assert np.array_equal(first.tokens, second.tokens)
    assert np.array_equal(first.offsets, second.offsets)
    assert isinstance(second.tokens, np.memmap)
    assert reuse_time < build_time


def _tiny_sentencepiece(directory: Path, texts: list[str]) -> Path:
    """A real (if small) SentencePiece model, trained on sample text in a second or so."""
    corpus_file = directory / "spm-corpus.txt"
    corpus_file.write_text("\n".join(" ".join(t.split()) for t in texts), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus_file),
        model_prefix=str(directory / "tiny"),
        vocab_size=400,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    return directory / "tiny.model"


def test_cache_key_changes_with_documents_and_tokenizer(tmp_path, train_sources, train_texts, t5):
    cache = tmp_path / "cache"
    hundred = tokenized_split(train_sources, "train", t5, cache, 100)
    fifty = tokenized_split(train_sources, "train", t5, cache, 50)
    assert hundred.path != fifty.path
    assert (hundred.num_documents, fifty.num_documents) == (100, 50)
    # the same documents in the same order: the smaller build is a prefix of the larger
    assert np.array_equal(fifty.offsets, hundred.offsets[:51])
    assert np.array_equal(fifty.tokens, hundred.tokens[: fifty.offsets[-1]])

    tiny = load_tokenizer(str(_tiny_sentencepiece(tmp_path, train_texts[:200])))
    assert isinstance(tiny, SentencePieceTokenizer) and tiny.vocab_size == 400
    assert tiny.fingerprint != t5.fingerprint
    other = tokenized_split(train_sources, "train", tiny, cache, 100)
    assert other.path not in (hundred.path, fifty.path)
    assert other.num_documents == 100
    assert int(other.tokens.max()) < 400
    assert len(other.tokens) != len(hundred.tokens)
    assert len(list(cache.glob("train-*.json"))) == 3


def test_cache_keyed_by_byte_tokenizer(tmp_path, train_sources, train_texts, t5):
    spm = tokenized_split(train_sources, "train", t5, tmp_path, 100)
    raw = tokenized_split(train_sources, "train", load_tokenizer(BYTES), tmp_path, 100)
    assert raw.path != spm.path
    assert json.loads(raw.path.with_suffix(".json").read_text())["tokenizer"].startswith("bytes:")
    assert raw.tokens.dtype == np.uint16
    expected = [b for text in train_texts[:100] for b in [*text.encode(), 256]]
    assert raw.tokens.tolist() == expected
    assert len(list(tmp_path.glob("train-*.json"))) == 2


def _build_in_subprocess(cache_dir: str, limit: int, barrier) -> tuple[str, list[int], bytes]:
    """Run in a spawned process: wait for the sibling, then build (or wait for) the split."""
    from worker.data import corpus as corpus_module
    from worker.data.token_cache import tokenized_split as build
    from worker.data.tokenizer import load_tokenizer as load

    tokenizer = load(None)
    sources = corpus_module.resolve_sources(None, "train")
    barrier.wait(timeout=60)
    split = build(sources, "train", tokenizer, Path(cache_dir), limit)
    return str(split.path), split.offsets.tolist(), np.asarray(split.tokens).tobytes()


def test_concurrent_builders_produce_one_valid_cache(tmp_path, train_sources, t5):
    shared = tmp_path / "shared"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        barrier = manager.Barrier(2)
        jobs = [
            pool.apply_async(_build_in_subprocess, (str(shared), 250, barrier)) for _ in range(2)
        ]
        results = [job.get(timeout=180) for job in jobs]
    (path_a, offsets_a, tokens_a), (path_b, offsets_b, tokens_b) = results
    assert path_a == path_b
    assert offsets_a == offsets_b and tokens_a == tokens_b

    alone = tokenized_split(train_sources, "train", t5, tmp_path / "alone", 250)
    assert Path(path_a).name == alone.path.name  # the key is independent of the directory
    assert offsets_a == alone.offsets.tolist()
    assert tokens_a == np.asarray(alone.tokens).tobytes()
    stem = Path(path_a).name
    # exactly one published cache, and no temporary files left behind
    assert _cache_files(shared) == sorted(stem + s for s in (".json", ".offsets.npy", ".tokens"))
    reread = tokenized_split(train_sources, "train", t5, shared, 250)
    assert np.array_equal(reread.tokens, alone.tokens)


# --- rows and order -------------------------------------------------------------------


def test_pack_rows_are_contiguous_windows(train_split):
    length = 64
    rows = Rows(train_split, length, "pack", pad_id=0)
    assert rows.count == len(train_split.tokens) // length
    picked = np.array([0, 1, 7, rows.count - 1])
    ids, labels = rows.get(picked)
    assert ids.dtype == np.int64 and ids.shape == (4, length)
    assert np.array_equal(labels, ids)
    for row, index in zip(ids, picked, strict=True):
        expected = train_split.tokens[index * length : (index + 1) * length]
        assert np.array_equal(row, expected)
    everything, _ = rows.get(np.arange(rows.count))
    assert np.array_equal(everything.reshape(-1), train_split.tokens[: rows.count * length])
    assert (everything != IGNORE_INDEX).all()


def test_truncate_rows_are_one_document_each(train_split):
    lengths = np.diff(train_split.offsets)
    length = 64
    assert (lengths < length).any() and (lengths > length).any()  # both cases occur
    rows = Rows(train_split, length, "truncate", pad_id=0)
    assert rows.count == train_split.num_documents
    ids, labels = rows.get(np.arange(rows.count))
    assert ids.shape == labels.shape == (rows.count, length)
    for doc in range(rows.count):
        start = train_split.offsets[doc]
        kept = min(int(lengths[doc]), length)
        expected = train_split.tokens[start : start + kept]
        assert np.array_equal(ids[doc, :kept], expected)
        assert np.array_equal(labels[doc, :kept], expected)
        assert (ids[doc, kept:] == 0).all()
        assert (labels[doc, kept:] == IGNORE_INDEX).all()
    short = int(np.argmax(lengths < length))
    assert labels[short, -1] == IGNORE_INDEX and ids[short, lengths[short] - 1] == 1  # EOS kept
    long = int(np.argmax(lengths > length))
    assert (labels[long] != IGNORE_INDEX).all() and 1 not in ids[long].tolist()  # tail cut


def test_rows_reject_seq_len_longer_than_split(train_split):
    with pytest.raises(ValueError, match="seq_len"):
        Rows(train_split, len(train_split.tokens) + 1, "pack", pad_id=0)


def test_train_order_deterministic_and_covers_each_epoch():
    count = 37
    order = TrainOrder(count, seed=3)
    epoch0 = order.rows(0, count)
    epoch1 = order.rows(count, count)
    assert sorted(epoch0.tolist()) == list(range(count))
    assert sorted(epoch1.tolist()) == list(range(count))
    assert not np.array_equal(epoch0, epoch1)  # epochs reshuffle
    again = TrainOrder(count, seed=3)
    assert np.array_equal(again.rows(0, 2 * count), np.concatenate([epoch0, epoch1]))
    # any chunking gives the same sequence, across the epoch boundary too
    chunks = [again.rows(first, 5) for first in range(0, 2 * count - 4, 5)]
    flat = np.concatenate(chunks)
    assert np.array_equal(flat, np.concatenate([epoch0, epoch1])[: len(flat)])
    assert np.array_equal(order.rows(count - 2, 4), np.concatenate([epoch0[-2:], epoch1[:2]]))
    other = TrainOrder(count, seed=4)
    assert not np.array_equal(other.rows(0, count), epoch0)
    assert sorted(other.rows(0, count).tolist()) == list(range(count))


# --- local shards and sources ---------------------------------------------------------


def _sample_records(n: int) -> list[dict]:
    with gzip.open(corpus.SAMPLE_FILES["train"][0], "rt", encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def test_local_shard_formats(tmp_path, t5):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = _sample_records(12)  # includes records with null url/timestamp
    texts = [r["text"] for r in records]
    jsonl = tmp_path / "c4-a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records[:4]) + "\n", encoding="utf-8")
    gz = tmp_path / "c4-b.json.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records[4:8])
    parquet = tmp_path / "c4-c.parquet"
    pq.write_table(pa.Table.from_pylist(records[8:]), parquet, row_group_size=2)

    sources = corpus.resolve_sources([str(jsonl), str(gz), str(parquet)], "train")
    assert sources == [str(p.resolve()) for p in (jsonl, gz, parquet)]
    assert list(corpus.documents(sources, "train")) == texts
    assert list(corpus.documents(sources, "train", limit=6)) == texts[:6]
    for path, part in ((jsonl, texts[:4]), (gz, texts[4:8]), (parquet, texts[8:])):
        assert list(corpus.documents([str(path)], "train")) == part

    # the same texts from a different file format tokenize to the same ids
    one_file = tmp_path / "all.parquet"
    pq.write_table(pa.Table.from_pylist(records), one_file)
    from_shards = tokenized_split(sources, "train", t5, tmp_path / "cache", None)
    from_parquet = tokenized_split([str(one_file)], "train", t5, tmp_path / "cache", None)
    assert from_shards.path != from_parquet.path  # keyed by file contents
    assert np.array_equal(from_shards.tokens, from_parquet.tokens)
    assert np.array_equal(from_shards.offsets, from_parquet.offsets)
    assert corpus.fingerprint(sources, "train") != corpus.fingerprint([str(one_file)], "train")


def test_relative_glob(tmp_path, monkeypatch):
    records = _sample_records(4)
    for i in range(2):
        path = tmp_path / "shards" / f"c4-train.{i:05d}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(records[2 * i]) + "\n" + json.dumps(records[2 * i + 1]) + "\n")
    monkeypatch.chdir(tmp_path)
    sources = corpus.resolve_sources(["shards/c4-train.*.jsonl"], "train")
    assert [Path(s).name for s in sources] == ["c4-train.00000.jsonl", "c4-train.00001.jsonl"]
    assert list(corpus.documents(sources, "train")) == [r["text"] for r in records]


def test_absolute_glob(tmp_path):
    """Shards are usually named by an absolute glob, e.g. '/data/c4/en/c4-train.*.json.gz'.

    Bug: ``resolve_sources`` globs with ``Path().glob(source)``, which raises
    NotImplementedError("Non-relative patterns are unsupported") for absolute patterns.
    """
    records = _sample_records(2)
    for i, record in enumerate(records):
        (tmp_path / f"c4-train.{i:05d}.jsonl").write_text(json.dumps(record) + "\n")
    sources = corpus.resolve_sources([str(tmp_path / "c4-train.*.jsonl")], "train")
    assert list(corpus.documents(sources, "train")) == [r["text"] for r in records]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_missing_file_names_the_field(tmp_path, monkeypatch, split):
    with pytest.raises(ValueError, match=f"{split}_files") as info:
        corpus.resolve_sources([str(tmp_path / "nope.jsonl")], split)
    assert "nope.jsonl" in str(info.value)
    monkeypatch.chdir(tmp_path)  # a relative glob (absolute ones: see test_absolute_glob)
    with pytest.raises(ValueError, match=f"{split}_files"):
        corpus.resolve_sources(["nothing-*.jsonl"], split)


def test_missing_file_fails_the_workload(tmp_path, token_cache_dir):
    config = llama_config(token_cache_dir, train_files=[str(tmp_path / "missing.json.gz")])
    with pytest.raises(ValueError, match="train_files"):
        build_workload(config, torch.device("cpu"))


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is not None, reason="needs `datasets` to be absent"
)
def test_hub_source_without_datasets():
    source = "hf:allenai/c4:en"
    assert corpus.resolve_sources([source], "train") == [source]
    assert len(corpus.fingerprint([source], "train")) == 64  # hashed by name, no network
    with pytest.raises(ValueError, match="datasets"):
        next(corpus.documents([source], "train"))
