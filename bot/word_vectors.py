"""Static word vectors shipped with the framework: a dense block of the TF-IDF classifier for big bots.

The table (``bot/data/word_vectors.npz``) was distilled from all-MiniLM-L6-v2 (Apache-2.0,
sentence-transformers) by ``scripts/distill_word_vectors.py`` with model2vec: every WordPiece token
of the model's vocabulary through the model alone, mean-pooled, PCA, SIF weights from the token's
Zipf rank. Nothing in it comes from a data set. It is stored as int8 rows with a float32 scale per
row and is read by numpy alone: no torch, no download. ``bot/data/NOTICE`` carries the licence.

A message's block is two vectors side by side: the mean of all its WordPiece token vectors at
unit length times ``WEIGHT``, and the same for its first ``HEAD_WORDS`` words times
``HEAD_WEIGHT`` (it tells "have i added ..." from "add ..."). docs/routing.md has the measurements.
"""
from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

TABLE = Path(__file__).with_name("data") / "word_vectors.npz"
# Part of the router cache key, so a new table never meets a model built on another one.
TABLE_SHA256 = "9306b8b115ddced143d8593653452acf05645de55c86e2f5f8f11ad5d3a7c659"
WEIGHT = 1.5
HEAD_WEIGHT = 1.0
HEAD_WORDS = 2
MIN_KNOWN_SHARE = 0.8   # auto uses the vectors only for examples at least this English (``known_share``)
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")   # BERT's basic tokenizer: words, and each other visible character
_MAX_WORD = 100  # longer "words" are not looked up (WordPiece's own limit)


def basic_words(text: str) -> list[str]:
    """BERT's uncased pre-tokenisation: lower case, accents stripped, punctuation split off."""
    text = unicodedata.normalize("NFD", text.lower())
    return _TOKEN.findall("".join(ch for ch in text if unicodedata.category(ch) != "Mn"))


class WordVectors:
    """The distilled table: WordPiece vocabulary, int8 rows and a float32 scale per row."""

    def __init__(self, path: Path = TABLE) -> None:
        with np.load(path, allow_pickle=False) as data:
            tokens = bytes(data["tokens"]).decode("utf-8").split("\n")
            self.vectors = np.ascontiguousarray(data["vectors"])
            self.scales = data["scales"].astype(np.float32)
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.dim = int(self.vectors.shape[1])
        self._pieces: dict[str, tuple[int, ...]] = {}

    def pieces(self, word: str) -> tuple[int, ...]:
        """WordPiece ids of one word by greedy longest match (``##`` continues a word); () if unknown."""
        known = self._pieces.get(word)
        if known is not None:
            return known
        out: list[int] = []
        start = 0
        while start < len(word) <= _MAX_WORD:
            for end in range(len(word), start, -1):
                found = self.ids.get(word[start:end] if start == 0 else "##" + word[start:end])
                if found is not None:
                    out.append(found)
                    start = end
                    break
            else:
                out = []
                break
        result = tuple(out) if len(word) <= _MAX_WORD else ()
        if len(self._pieces) < 200_000:  # bounded: visitors can send any string
            self._pieces[word] = result
        return result

    def means(self, id_lists: Sequence[Sequence[int]], weight: float) -> np.ndarray:
        """One row per list: the sum of its token vectors at unit length times ``weight`` (0 if empty).

        Row by row, so a message gets the same bits alone as in a batch (and this is as fast as
        numpy's batch operations on 15,000 short texts).
        """
        out = np.zeros((len(id_lists), self.dim), dtype=np.float32)
        for k, ids in enumerate(id_lists):
            if ids:
                idx = np.asarray(ids, dtype=np.intp)
                total = self.scales[idx] @ self.vectors[idx].astype(np.float32)
                norm = float(np.sqrt(total @ total))
                if norm > 0.0:
                    out[k] = total * np.float32(weight / norm)
        return out


@functools.lru_cache(maxsize=1)
def load_table() -> WordVectors:
    """The shipped table, read once per process."""
    return WordVectors(TABLE)


def known_share(texts: Sequence[str], sample: int = 3000) -> float:
    """Share of the words (letters only) of the texts that are whole words of the table (about
    ``sample`` texts looked at, spread evenly).

    English examples score about 0.97 (CLINC150, the demo); German, Spanish, French or Dutch text
    0.3-0.5: the table's vocabulary is English, so its vectors would be noise there.
    """
    table = load_table()
    words = [w for text in texts[::max(1, len(texts) // sample)] for w in basic_words(text) if w.isalpha()]
    return sum(1 for w in words if w in table.ids) / len(words) if words else 0.0


def table_digest(path: Path = TABLE) -> str:
    """sha256 of the table file (a test keeps TABLE_SHA256 equal to it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class VectorBlock:
    """The dense block of the classifier: whole-message and first-words mean vectors.

    Holds no table: it is pickled with the model and finds the shipped table when used.
    """

    def __init__(self, weight: float = WEIGHT, head_weight: float = HEAD_WEIGHT, head_words: int = HEAD_WORDS) -> None:
        self.weight, self.head_weight, self.head_words = weight, head_weight, head_words
        self.table_sha256 = TABLE_SHA256

    @property
    def width(self) -> int:
        return 2 * load_table().dim

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text: ``width`` float32 columns."""
        table = load_table()
        every, head = [], []
        for text in texts:
            pieces = [table.pieces(w) for w in basic_words(text)]
            every.append([i for p in pieces for i in p])
            head.append([i for p in pieces[:self.head_words] for i in p])
        return np.hstack([table.means(every, self.weight), table.means(head, self.head_weight)])
