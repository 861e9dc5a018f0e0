"""Tokenizers: the bundled T5 SentencePiece model (GaLore's protocol), UTF-8 bytes (the
CPU-scale models), or any HF one."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from worker.data.corpus import ASSETS

T5_SPIECE = ASSETS / "tokenizer" / "spiece.model"
#: the byte-level tokenizer's name, as ``TrialConfig.tokenizer`` and model configs spell it
BYTES = "bytes"


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int
    pad_id: int
    fingerprint: str

    def encode(self, texts: list[str]) -> list[list[int]]: ...


class SentencePieceTokenizer:
    """T5's 32,000-piece vocabulary: pad 0, eos 1, no BOS."""

    def __init__(self, path: Path = T5_SPIECE) -> None:
        import sentencepiece

        self.path = Path(path)
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self._sp.get_piece_size()
        self.eos_id = self._sp.eos_id()
        self.pad_id = self._sp.pad_id()
        self.fingerprint = "spm:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts)

    def __reduce__(self) -> tuple[type, tuple[Path]]:
        """Pickled by path, so that tokenizing processes each load their own model."""
        return SentencePieceTokenizer, (self.path,)


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255, then EOS 256 and pad 257. Nothing to train or ship and
    no unknown ids; its 258-row embedding and head leave a small model's parameters to
    the attention and MLP weights that Magma masks, as at the paper's scale."""

    vocab_size = 258
    eos_id = 256
    pad_id = 257
    fingerprint = "bytes:utf-8+eos256+pad257"

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]


class HFTokenizer:
    """Any ``transformers`` tokenizer by hub name (needs the network) or local path."""

    def __init__(self, name_or_path: str) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(name_or_path)
        self.vocab_size = len(self._tok)
        self.eos_id = self._tok.eos_token_id
        self.pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_id
        vocab = sorted(self._tok.get_vocab().items())
        self.fingerprint = "hf:" + hashlib.sha256(repr(vocab).encode()).hexdigest()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self._tok(texts, add_special_tokens=False)["input_ids"]


def load_tokenizer(name_or_path: str | None) -> Tokenizer:
    """``None``: the bundled T5 model; ``"bytes"``: UTF-8 bytes; a ``.model`` file:
    SentencePiece; anything else: an HF tokenizer name or path."""
    if name_or_path is None:
        return SentencePieceTokenizer()
    if name_or_path == BYTES:
        return ByteTokenizer()
    path = Path(name_or_path)
    if path.suffix == ".model" and path.is_file():
        return SentencePieceTokenizer(path)
    return HFTokenizer(name_or_path)
