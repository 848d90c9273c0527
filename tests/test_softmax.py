"""The trainer of the TF-IDF classifier: multinomial logistic regression by our own L-BFGS."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from bot.softmax import fit_softmax


@pytest.mark.parametrize("n_classes", [2, 4])
def test_fit_softmax_reaches_scikit_learns_logistic_regression(n_classes: int) -> None:
    from sklearn.linear_model import LogisticRegression

    x = sparse.random(300, 40, density=0.2, random_state=0, format="csr", dtype=np.float32)
    gold = np.asarray(x @ np.random.default_rng(0).normal(size=(40, n_classes))).argmax(axis=1)
    w, b = fit_softmax(x, gold, n_classes, 1.0, max_iter=500, gtol=1e-7)
    logits = np.asarray(x @ w) + b
    ours = np.exp(logits - logits.max(axis=1, keepdims=True))
    ours /= ours.sum(axis=1, keepdims=True)
    # two softmax columns, both penalised, are one sigmoid vector with half the penalty
    reference = LogisticRegression(C=2.0 if n_classes == 2 else 1.0, tol=1e-10, max_iter=5000).fit(x, gold)
    np.testing.assert_allclose(ours, reference.predict_proba(x), atol=2e-3)
    again = fit_softmax(x, gold, n_classes, 1.0, max_iter=500, gtol=1e-7)
    assert np.array_equal(w, again[0]) and np.array_equal(b, again[1])


def test_a_dense_block_fits_as_the_same_columns_would_in_the_sparse_matrix() -> None:
    x = sparse.random(200, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    dense = np.random.default_rng(1).normal(size=(200, 5)).astype(np.float32)
    gold = np.asarray(sparse.hstack([x, dense]) @ np.random.default_rng(2).normal(size=(35, 3))).argmax(axis=1)
    w, b = fit_softmax(x, gold, 3, 1.0, dense=dense, max_iter=300, gtol=1e-6)
    w_all, b_all = fit_softmax(sparse.hstack([x, dense], format="csr"), gold, 3, 1.0, max_iter=300, gtol=1e-6)
    assert w.shape == (35, 3)
    np.testing.assert_allclose(w, w_all, atol=1e-3)
    np.testing.assert_allclose(b, b_all, atol=1e-3)


def test_the_fit_holds_every_blas_library_to_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """BLAS threads would spin beside the fit's two sparse-product threads (a third more CPU on
    CLINC150); the limit must also cover scipy's own BLAS, which does the L-BFGS updates."""
    from threadpoolctl import threadpool_info

    from bot import softmax

    seen: list[dict[str, int]] = []
    real = softmax._axpy

    def watching(alpha: float, x: np.ndarray, y: np.ndarray) -> None:
        seen.append({i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        real(alpha, x, y)

    monkeypatch.setattr(softmax, "_axpy", watching)
    x = sparse.random(100, 20, density=0.3, random_state=2, format="csr", dtype=np.float32)
    fit_softmax(x, np.arange(100) % 3, 3, 1.0, max_iter=5)
    assert seen and all(threads == 1 for during in seen for threads in during.values())
    assert any("scipy" in path for during in seen for path in during)
