"""Bounded, parallel, resumable token caches for large C4 sources (issue 13).

The hub is never touched: ``hf:allenai/c4:en`` reads a local stand-in laid out like the
hub repository (``<mirror>/allenai/c4/en/c4-train.00000-of-01024.json.gz`` ...), made of
the bundled real C4 sample, through ``MAGMA_HUB_MIRROR``. Expected document counts come
from tokenizing the sample's texts here, independently of the cache; that nothing past
the budget is read is shown by a stand-in whose lines past a point are not JSON at all.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from worker.config import DEFAULT_EVAL_TOKENS, TrialConfig
from worker.data import corpus
from worker.data.token_cache import tokenized_split
from worker.data.tokenizer import ByteTokenizer, load_tokenizer
from worker.settings import get_settings
from worker.workloads import build_workload
from worker.workloads.llama_c4 import read_budget

HUB = "hf:allenai/c4:en"
ROOT = Path(__file__).resolve().parent.parent
TRAIN_SHARDS = 4  # of the stand-in; allenai/c4 has 1024
VALIDATION_SHARDS = 2  # of 8
POISON = "this line is not JSON: the reader went past its budget\n"


def _records(split: str) -> list[dict]:
    with gzip.open(corpus.SAMPLE_FILES[split][0], "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _write_mirror(root: Path, poison_after: int | None = None) -> None:
    """The bundled sample in allenai/c4's layout: train in 4 shards, validation in 2, in
    order. With ``poison_after``, every train line after that many documents is junk."""
    directory = root / "allenai" / "c4" / "en"
    directory.mkdir(parents=True)
    for split, shards, total in (
        ("train", TRAIN_SHARDS, 1024),
        ("validation", VALIDATION_SHARDS, 8),
    ):
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in _records(split)]
        if split == "train" and poison_after is not None:
            lines = lines[:poison_after] + [POISON] * (len(lines) - poison_after)
        size = -(-len(lines) // shards)
        for shard in range(shards):
            name = f"c4-{split}.{shard:05d}-of-{total:05d}.json.gz"
            with gzip.open(directory / name, "wt", encoding="utf-8", compresslevel=1) as f:
                f.writelines(lines[shard * size : (shard + 1) * size])


@pytest.fixture
def environ(monkeypatch) -> Iterator[Callable[..., None]]:
    """Set environment variables for ``get_settings``; the settings are read afresh
    after each change and once more after the test, when monkeypatch restores them."""

    def set_variables(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_variables
    get_settings.cache_clear()


@pytest.fixture
def mirror(tmp_path, environ) -> Path:
    root = tmp_path / "hf"
    _write_mirror(root)
    environ(MAGMA_HUB_MIRROR=str(root))
    return root


@pytest.fixture(scope="module")
def train_texts() -> list[str]:
    return [r["text"] for r in _records("train")]


@pytest.fixture(scope="module")
def t5_lengths(train_texts) -> np.ndarray:
    """Each train document's T5 length with its EOS, straight from sentencepiece."""
    import sentencepiece

    from worker.data.tokenizer import T5_SPIECE

    sp = sentencepiece.SentencePieceProcessor(model_file=str(T5_SPIECE))
    return np.array([len(ids) + 1 for ids in sp.encode(train_texts)])


def _documents_for(lengths: np.ndarray, budget: int) -> int:
    """The fewest leading documents with at least ``budget`` tokens."""
    return int(np.searchsorted(np.cumsum(lengths), budget) + 1)


def _meta(split) -> dict:
    return json.loads(split.path.with_suffix(".json").read_text())


# --- the local stand-in for the hub -------------------------------------------------------


def test_mirror_reads_hub_id_in_shard_order(mirror, train_texts):
    assert corpus.resolve_sources([HUB], "train") == [HUB]
    files = corpus.mirror_files(HUB, "train")
    assert [Path(f).name for f in files] == [
        f"c4-train.{i:05d}-of-01024.json.gz" for i in range(TRAIN_SHARDS)
    ]
    assert list(corpus.documents([HUB], "train")) == train_texts
    validation = [r["text"] for r in _records("validation")]
    assert list(corpus.documents([HUB], "validation")) == validation
    assert list(corpus.documents([HUB], "validation", limit=3)) == validation[:3]

    with pytest.raises(ValueError, match="validation_files") as info:
        corpus.resolve_sources(["hf:allenai/c4:realnewslike"], "validation")
    assert "MAGMA_HUB_MIRROR" in str(info.value)


def test_mirror_identity_is_in_the_key(mirror, monkeypatch):
    with_mirror = corpus.fingerprint([HUB], "train")
    assert corpus.fingerprint([HUB], "validation") != with_mirror
    shard = Path(corpus.mirror_files(HUB, "train")[0])
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert corpus.fingerprint([HUB], "train") != with_mirror
    monkeypatch.delenv("MAGMA_HUB_MIRROR")
    get_settings.cache_clear()  # the fixture clears it again afterwards
    assert corpus.mirror_files(HUB, "train") == []
    # the hub itself is known by name alone
    by_name = hashlib.sha256(HUB.encode()).hexdigest()
    assert corpus.fingerprint([HUB], "train") == by_name


def test_which_sources_are_large(tmp_path):
    sample = corpus.resolve_sources(None, "train")
    assert not corpus.is_large(sample)
    assert corpus.is_large([HUB])
    big = tmp_path / "c4-train.00000-of-01024.json"
    with open(big, "wb") as f:
        f.truncate(corpus.CONTENT_HASH_LIMIT + 1)  # sparse: nothing is written
    assert corpus.is_large([str(big)])
    small = tmp_path / "small.jsonl"
    small.write_text('{"text": "a"}\n')
    assert not corpus.is_large([str(small)])


def test_read_budget():
    base = {"steps": 3, "batch_size": 4, "seq_len": 64}
    pack = TrialConfig(**base)
    assert read_budget(pack, 12, large=True) == (None, 12 * 64)
    assert read_budget(pack, 12, large=False) == (None, None)  # the sample: read whole
    capped = TrialConfig(**base, max_documents=5)
    assert read_budget(capped, 12, large=True) == (5, 12 * 64)
    assert read_budget(capped, 12, large=False) == (5, None)
    truncate = TrialConfig(**base, packing="truncate")
    assert read_budget(truncate, 12, large=True) == (12, None)  # one document per row
    assert read_budget(truncate.model_copy(update={"max_documents": 5}), 12, True) == (5, None)


# --- eval_tokens: a fixed validation set by default ----------------------------------------


def test_eval_tokens_default_is_fixed():
    assert DEFAULT_EVAL_TOKENS == 10_000_000
    assert TrialConfig().eval_tokens == DEFAULT_EVAL_TOKENS
    assert TrialConfig(eval_tokens=None).eval_tokens == DEFAULT_EVAL_TOKENS  # not "all"
    assert TrialConfig.model_validate_json('{"eval_tokens": null}').eval_tokens == 10**7
    assert TrialConfig(eval_tokens=4096).eval_tokens == 4096
    with pytest.raises(pydantic.ValidationError, match="eval_tokens"):
        TrialConfig(eval_tokens=0)


# --- bounded reads ---------------------------------------------------------------------


def test_60m_spec_reads_only_its_budget(tmp_path, environ, t5_lengths):
    """The acceptance check: GaLore's 60M setup (llama-60m, 512 x 256) with hf: sources
    for 4 steps reads 4 x 512 x 256 training tokens' worth of documents and 65536
    validation tokens' worth, counted against the stand-in. Past the budget plus the
    read-ahead bound (2 chunks of 256 per process) the stand-in's lines are junk, so a
    reader that went further would fail."""
    steps, batch, seq_len, workers = 4, 512, 256, 2
    budget = steps * batch * seq_len
    expected = _documents_for(t5_lengths, budget)
    assert expected < 0.4 * len(t5_lengths)  # the budget is well short of the stand-in
    poison_after = expected + 2 * workers * 256
    _write_mirror(tmp_path / "hf", poison_after=poison_after)
    environ(MAGMA_HUB_MIRROR=str(tmp_path / "hf"), MAGMA_TOKENIZE_WORKERS=str(workers))
    config = TrialConfig(
        model="llama-60m",
        steps=steps,
        batch_size=batch,
        seq_len=seq_len,
        eval_tokens=65536,
        train_files=[HUB],
        validation_files=[HUB],
        cache_dir=tmp_path / "cache",
        device="cpu",
    )
    workload = build_workload(config, torch.device("cpu"))

    train = _meta(workload.train_rows.split)
    assert train["documents"] == expected
    assert train["tokens"] == int(t5_lengths[:expected].sum()) >= budget
    assert train["max_tokens"] == budget and train["workers"] == workers
    assert expected <= train["documents_tokenized"] <= poison_after
    assert workload.train_rows.count == train["tokens"] // seq_len >= steps * batch

    validation_lengths = np.array(
        [
            len(ids) + 1
            for ids in load_tokenizer(None).encode([r["text"] for r in _records("validation")])
        ]
    )
    validation = _meta(workload.eval_rows.split)
    assert validation["documents"] == _documents_for(validation_lengths, 65536) < 400
    assert len(workload.eval_indices) == 65536 // seq_len


def test_paper_scale_validation_is_10m_tokens_by_default(mirror, tmp_path):
    """With eval_tokens left out (or null, as the presets once had it), a large source's
    validation read stops at 10M tokens: ceil(1e7 / 256) = 39063 rows of 256 tokens,
    10,000,128 tokens. The stand-in holds fewer, so all 400 documents are read."""
    config = TrialConfig(
        steps=2,
        batch_size=4,
        seq_len=256,
        train_files=[HUB],
        validation_files=[HUB],
        eval_tokens=None,
        cache_dir=tmp_path,
        device="cpu",
    )
    workload = build_workload(config, torch.device("cpu"))
    validation = _meta(workload.eval_rows.split)
    assert validation["max_tokens"] == 10_000_128
    assert validation["documents"] == 400
    assert len(workload.eval_indices) == workload.eval_rows.count < 39063
    assert _meta(workload.train_rows.split)["max_tokens"] == 2 * 4 * 256


def test_poisoned_stand_in_fails_a_reader_without_budget(tmp_path, environ):
    """The junk lines do fail a read that goes past them: the checks can fail."""
    _write_mirror(tmp_path / "hf", poison_after=100)
    environ(MAGMA_HUB_MIRROR=str(tmp_path / "hf"))
    with pytest.raises(json.JSONDecodeError):
        tokenized_split([HUB], "train", ByteTokenizer(), tmp_path / "cache", workers=1)


def test_serial_read_stops_within_a_chunk(tmp_path, environ, train_texts):
    """One process and chunks of 16: at most 15 documents are read and dropped."""
    lengths = np.array([len(t.encode()) + 1 for t in train_texts])
    budget = 300_000
    expected = _documents_for(lengths, budget)
    _write_mirror(tmp_path / "hf", poison_after=expected + 15)
    environ(MAGMA_HUB_MIRROR=str(tmp_path / "hf"))
    split = tokenized_split(
        [HUB], "train", ByteTokenizer(), tmp_path / "c", None, budget, workers=1, chunk_documents=16
    )
    assert split.num_documents == expected
    assert split.tokens.tolist() == [b for t in train_texts[:expected] for b in [*t.encode(), 256]]


def test_whole_split_when_the_budget_exceeds_it(mirror, tmp_path):
    """The default 10M validation tokens is more than the stand-in holds: all of it."""
    split = tokenized_split(
        [HUB],
        "validation",
        load_tokenizer(None),
        tmp_path / "c",
        None,
        DEFAULT_EVAL_TOKENS,
        workers=1,
    )
    assert split.num_documents == 400
    assert _meta(split)["documents_tokenized"] == 400


# --- parallel tokenizing -------------------------------------------------------------------


def test_parallel_build_equals_serial(mirror, tmp_path, capfd, t5_lengths):
    t5 = load_tokenizer(None)
    budget = 200_000
    expected = _documents_for(t5_lengths, budget)
    serial = tokenized_split([HUB], "train", t5, tmp_path / "one", None, budget, workers=1)
    parallel = tokenized_split(
        [HUB], "train", t5, tmp_path / "two", None, budget, workers=2, chunk_documents=32
    )
    assert serial.path.name == parallel.path.name  # workers are not part of the key
    assert serial.num_documents == parallel.num_documents == expected
    assert np.array_equal(serial.offsets, parallel.offsets)
    assert np.array_equal(np.asarray(serial.tokens), np.asarray(parallel.tokens))
    assert np.array_equal(np.diff(serial.offsets), t5_lengths[:expected])
    meta = _meta(parallel)
    assert meta["workers"] == 2 and meta["tokens_per_s"] > 0
    err = capfd.readouterr().err
    assert "tokenizing train (2 processes)" in err and "tok/s" in err  # tqdm's rate
    assert f"{meta['tokens']:,} tokens" in err and "tokens/s with 2 processes" in err

    # unbounded too: the whole validation split, in many small chunks
    whole = tokenized_split([HUB], "validation", t5, tmp_path / "two", workers=2, chunk_documents=7)
    reference = tokenized_split(
        corpus.resolve_sources(None, "validation"), "validation", t5, tmp_path / "one", workers=1
    )
    assert whole.num_documents == 400
    assert np.array_equal(np.asarray(whole.tokens), np.asarray(reference.tokens))


# --- resuming a build killed part way ----------------------------------------------------

_KILLED_BUILD = """
import sys, time
from pathlib import Path
from worker.data.token_cache import tokenized_split
from worker.data.tokenizer import ByteTokenizer

class SlowBytes(ByteTokenizer):
    # the real byte tokenizer, slowed so that the build is still running when killed
    def encode(self, texts):
        time.sleep(0.25)
        return super().encode(texts)

tokenized_split(["hf:allenai/c4:en"], "train", SlowBytes(), Path(sys.argv[1]), None,
                int(sys.argv[2]), workers=1, chunk_documents=16, shard_tokens=20_000)
"""


class CountingBytes(ByteTokenizer):
    """The byte tokenizer (same fingerprint), counting the documents it encodes."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts: list[str]) -> list[list[int]]:
        self.encoded += len(texts)
        return super().encode(texts)


def test_killed_build_resumes_from_its_shards(mirror, tmp_path, train_texts):
    budget = 600_000
    lengths = np.array([len(t.encode()) + 1 for t in train_texts])
    expected = _documents_for(lengths, budget)
    cache = tmp_path / "cache"
    env = {**os.environ, "MAGMA_HUB_MIRROR": str(mirror), "PYTHONPATH": str(ROOT)}
    builder = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILD, str(cache), str(budget)], env=env, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 120
        manifest: dict = {}
        while len(manifest.get("shards", [])) < 2:
            assert builder.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline
            found = list(cache.glob("train-*.parts/manifest.json"))
            if found:
                manifest = json.loads(found[0].read_text())
            time.sleep(0.01)
        builder.kill()
    finally:
        builder.kill()
        builder.wait()
    assert not list(cache.glob("*.json")), "killed before publishing"
    manifest = json.loads(next(cache.glob("train-*.parts/manifest.json")).read_text())
    assert not manifest["finished"]
    done = sum(shard["documents"] for shard in manifest["shards"])
    assert 0 < done < expected

    counting = CountingBytes()
    resumed = tokenized_split(
        [HUB], "train", counting, cache, None, budget, workers=1, chunk_documents=16
    )
    meta = _meta(resumed)
    assert meta["resumed_documents"] == done
    assert meta["documents_tokenized"] == counting.encoded
    assert expected - done <= counting.encoded <= expected - done + 15  # not from scratch
    assert resumed.num_documents == expected
    expected_ids = [b for t in train_texts[:expected] for b in [*t.encode(), 256]]
    assert resumed.tokens.tolist() == expected_ids
    assert not list(cache.glob("*.parts")) and not list(cache.glob("*tmp*"))
