"""Intent classifiers behind the router (TF-IDF default, sentence embeddings extra) and their disk cache."""
from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import os
import pickle
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
from scipy import sparse

from .errors import ConfigError
from .softmax import fit_softmax
from .word_vectors import MIN_KNOWN_SHARE, TABLE_SHA256, VectorBlock, known_share

log = logging.getLogger(__name__)

_SKLEARN_VERSION = importlib.metadata.version("scikit-learn")
CACHE_VERSION = 8  # bump when a model class changes shape or what it is built from
BIG_BOT = 2000   # training examples above which a bot drops rare n-grams and adds word vectors
_KEEP_CACHE_FILES = 8
_WORD = re.compile(r"\w+")


class IntentModel(Protocol):
    """What the router needs from a classifier: class names and a probability per class."""

    classes: tuple[str, ...]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, one column per class; rows sum to 1."""


def _stem(word: str) -> str:
    """A light suffix strip so 'cars'/'car' and 'booking'/'book' share word features."""
    if len(word) > 4:
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix):
                return word[: -len(suffix)]
    return word


def word_features(text: str) -> list[str]:
    """Lowercase words, lightly stemmed, and their bigrams."""
    words = [_stem(w) for w in _WORD.findall(text.lower())]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def char_features(text: str, low: int = 2, high: int = 5) -> list[str]:
    """Character n-grams inside word boundaries (each word padded with a space), as sklearn's char_wb."""
    grams: list[str] = []
    for word in text.lower().split():
        grams.extend(_word_grams(word, low, high))
    return grams


@functools.lru_cache(maxsize=1 << 16)
def _word_grams(word: str, low: int, high: int) -> tuple[str, ...]:
    """``char_features`` of one word: words repeat, so building a big bot makes each one's n-grams once."""
    w = f" {word} "
    grams: list[str] = []
    for n in range(low, high + 1):
        if len(w) <= n:
            grams.append(w)
            break
        grams.extend(w[i:i + n] for i in range(len(w) - n + 1))
    return tuple(grams)


class _Tfidf:
    """A TF-IDF block (sublinear tf, smooth idf, L2 norm) with its own fast transform."""

    def __init__(self, analyzer: Callable[[str], list[str]], docs: Sequence[list[str]], min_df: int) -> None:
        self.analyzer = analyzer
        df: Counter[str] = Counter()
        for grams in docs:
            df.update(set(grams))
        kept = sorted(g for g, n in df.items() if n >= min_df)
        self.vocab = {g: i for i, g in enumerate(kept)}
        n_docs = len(docs)
        self.idf = np.array([math.log((1 + n_docs) / (1 + df[g])) + 1.0 for g in kept])

    def ids(self, docs: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of every kept n-gram occurrence in the docs, in doc order."""
        get = self.vocab.get
        ids: list[int] = []
        lengths = []
        for grams in docs:
            before = len(ids)
            ids.extend(map(get, grams, repeat(-1)))
            lengths.append(len(ids) - before)
        cols = np.array(ids, dtype=np.int64)
        rows = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
        known = cols >= 0
        return rows[known], cols[known]


def tfidf_matrix(blocks: Sequence[_Tfidf], docs: Sequence[Sequence[list[str]]],
                 weights: Sequence[float] | None = None) -> sparse.csr_matrix:
    """TF-IDF blocks side by side: row i holds doc i of every block, each block's part L2-normalised.

    Sublinear tf x smooth idf, as scikit-learn's TfidfVectorizer. One numpy pass for any number of
    docs: every n-gram occurrence becomes ``row * width + column``, and ``np.unique`` counts them and
    sorts them into CSR order. A doc with no kept n-gram has an empty part. ``weights`` scales the
    blocks (default 1 each).
    """
    n = len(docs[0])
    if len(docs) != len(blocks) or any(len(d) != n for d in docs):
        raise ValueError("tfidf_matrix needs one list of docs per block, all of the same length")
    rows, cols, idf, starts, width = [], [], [], [], 0
    for block, block_docs in zip(blocks, docs):
        r, c = block.ids(block_docs)
        rows.append(r)
        cols.append(c + width)
        idf.append(block.idf)
        starts.append(width)
        width += len(block.vocab)
    keys, counts = np.unique(np.concatenate(rows) * width + np.concatenate(cols), return_counts=True)
    row, col = np.divmod(keys, max(width, 1))
    values = (1.0 + np.log(counts)) * np.concatenate(idf)[col]
    part = row * len(blocks) + np.searchsorted(starts, col, side="right") - 1  # (doc, block) of each value
    norms = np.sqrt(np.bincount(part, weights=values * values, minlength=n * len(blocks)))
    if weights is not None:
        norms /= np.tile(np.asarray(weights, dtype=np.float64), n)
    values /= norms[part]
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(row, minlength=n), out=indptr[1:])
    return sparse.csr_matrix((values.astype(np.float32), col.astype(np.int32), indptr), shape=(n, width))


def wants_vectors(texts: Sequence[str]) -> bool:
    """``word_vectors: auto``: a bot of more than BIG_BOT examples, written in English (the table's language)."""
    return len(texts) > BIG_BOT and known_share(texts) >= MIN_KNOWN_SHARE


@dataclass(frozen=True)
class Profile:
    """How much of the TF-IDF features a bot keeps, and how strongly the fit is regularised."""

    c: float                     # inverse regularisation strength, as scikit-learn's C
    word_min_df: int             # word n-grams seen in fewer examples are dropped
    char_min_df: int
    char_range: tuple[int, int]  # character n-gram lengths


SMALL = Profile(20.0, 1, 1, (2, 5))   # every n-gram counts: one example can be all an intent has
# Over BIG_BOT examples, n-grams seen in one example only are dropped (on CLINC150 the same accuracy
# from 40 % fewer weights). With word vectors the vectors carry what the 2- and 5-grams and rarer
# character n-grams added, and a stronger regularisation of the sparse weights gives them more say:
# on CLINC150 as accurate, and the build 40 % faster (docs/routing.md).
BIG = Profile(20.0, 2, 2, (2, 5))
BIG_WITH_VECTORS = Profile(10.0, 2, 10, (3, 4))


class TfidfModel:
    """Word (1-2 gram, stemmed) and character n-gram TF-IDF (+ word vectors) + multinomial LR.

    Fitted by ``fit_softmax`` (a third of scikit-learn's lbfgs time on 15,000 examples), which is
    deterministic. Features are our own small TF-IDF (scikit-learn's TfidfVectorizer formulas with
    sublinear_tf), so one message takes well under a millisecond; each block is L2-normalised.
    Bots of more than BIG_BOT examples in English also get the shipped word vectors (``vectors``:
    None is that rule, ``wants_vectors``; True or False force them on or off) and the matching
    ``Profile``.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, vectors: bool | None = None,
                 profile: Profile | None = None) -> None:
        big = len(texts) > BIG_BOT
        use_vectors = wants_vectors(texts) if vectors is None else vectors
        if profile is None:
            profile = (BIG_WITH_VECTORS if use_vectors else BIG) if big else SMALL
        self.profile = profile
        word_docs, char_docs = [word_features(t) for t in texts], [self._chars(t) for t in texts]
        self.words = _Tfidf(word_features, word_docs, profile.word_min_df)
        self.chars = _Tfidf(self._chars, char_docs, profile.char_min_df)
        features = self._features(texts, word_docs, char_docs)
        names = sorted(set(labels))
        self.classes = tuple(names)
        self.examples: sparse.csr_matrix | None = None
        self.vectors: VectorBlock | None = None
        if len(names) == 1:  # nothing to discriminate: keep examples for a nearest-neighbour score
            self.examples = features
            self._example_norm = float(np.sqrt(features.multiply(features).sum(axis=1)).max())
            return
        if use_vectors:
            self.vectors = VectorBlock()
        dense = self.vectors.matrix(texts) if self.vectors is not None else None
        coef, intercept = self._fit(features, list(labels), dense)
        if len(names) == 2 and coef.shape[1] == 1:  # binary LR keeps one weight vector; make it two
            coef = np.hstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = intercept.astype(np.float64)

    def _chars(self, text: str) -> list[str]:
        return char_features(text, *self.profile.char_range)

    def _fit(self, features: sparse.csr_matrix, labels: list[str],
             dense: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Weights (sparse features, then dense ones x classes) and intercepts of the multinomial LR."""
        names, gold = np.unique(labels, return_inverse=True)
        return fit_softmax(features, gold, len(names), self.profile.c, dense=dense)

    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The feature matrix: word block then character block."""
        return self._features(texts, [word_features(t) for t in texts], [self._chars(t) for t in texts])

    def _features(self, texts: Sequence[str], word_docs: Sequence[list[str]],
                  char_docs: Sequence[list[str]]) -> sparse.csr_matrix:
        """``features`` with the texts' word and character n-grams already made (training makes them once)."""
        return tfidf_matrix([self.words, self.chars], [word_docs, char_docs])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        x = self.features(texts)
        if self.examples is not None:
            norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel()) * self._example_norm
            sims = (x @ self.examples.T).toarray().max(axis=1) / np.maximum(norms, 1e-12)
            return np.clip(sims, 0.0, 1.0).reshape(-1, 1)  # cosine similarity to the nearest example
        logits = np.asarray(x @ self.coef[:x.shape[1]]).astype(np.float64) + self.intercept  # a view: no copy
        if self.vectors is not None:
            weights = self.coef[x.shape[1]:]
            for k, row in enumerate(self.vectors.matrix(texts)):  # a row at a time: the same bits alone or in a batch
                logits[k] += row @ weights
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        probs = logits / logits.sum(axis=1, keepdims=True)
        probs[np.diff(x.indptr) == 0] = 0.0  # no known word or character n-gram: no evidence at all
        return probs


def write_atomic(path: Path, obj: object) -> None:
    """Pickle ``obj`` to ``path`` through a temp file and a rename; failures are logged only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)


CLASSIFIERS = ("tfidf", "embeddings")


def build_model(kind: str, texts: Sequence[str], labels: Sequence[str],
                cache_dir: Path | None = None, word_vectors: bool | None = None) -> IntentModel:
    """Fit the classifier named ``kind`` (one of CLASSIFIERS) on labelled examples.

    ``word_vectors`` adds the shipped word vectors to the TF-IDF classifier: None (auto) decides by
    ``wants_vectors`` (more than BIG_BOT examples, in English).
    """
    if kind not in CLASSIFIERS:
        raise ConfigError("intents.yaml", 0, 0,
                          f"unknown router classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}")
    if kind == "embeddings":
        from .embeddings import EmbeddingModel  # imports torch only when a bot asks for it

        return EmbeddingModel(texts, labels, cache_dir=cache_dir)
    return TfidfModel(texts, labels, vectors=word_vectors)


def cache_path(cache_dir: Path, digest: str) -> Path:
    """The cache file of a model: keyed by the intents digest, the scikit-learn version and the word-vector table."""
    return cache_dir / f"router-{digest[:24]}-sk{_SKLEARN_VERSION}-v{CACHE_VERSION}-wv{TABLE_SHA256[:8]}.pkl"


def load_cached(path: Path, digest: str) -> IntentModel | None:
    """The model pickled at ``path`` if it is there, readable and for ``digest``; else None."""
    try:
        with path.open("rb") as fh:
            stored = pickle.load(fh)  # our own file under the bot's cache directory
        if stored.get("digest") == digest:
            model = stored["model"]
            model.predict_proba(["hello"])  # a model from other code fails here, not mid-conversation
            return model
        log.warning("router cache %s is for other intents; rebuilding", path)
    except FileNotFoundError:
        return None
    except ConfigError:
        raise
    except Exception as exc:  # any damage to the file (truncated, garbage, old classes) -> rebuild
        log.warning("router cache %s is unreadable (%s); rebuilding", path, exc)
    return None


def save_cached(path: Path, digest: str, model: IntentModel) -> None:
    """Write the model atomically (temp file + rename) and drop old cache files; never raises."""
    write_atomic(path, {"digest": digest, "model": model})
    try:
        old = sorted(path.parent.glob("router-*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[_KEEP_CACHE_FILES:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not prune router cache in %s: %s", path.parent, exc)
