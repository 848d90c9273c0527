"""Multinomial logistic regression fitted by our own float32 L-BFGS (the TF-IDF classifier's trainer)."""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import sparse

log = logging.getLogger(__name__)

_Pair = tuple[np.ndarray, np.ndarray]


def _axpy(alpha: float, x: np.ndarray, y: np.ndarray) -> None:
    """``y += alpha * x`` in place by BLAS ``saxpy``: one pass over the weights, no temporary."""
    from scipy.linalg.blas import saxpy  # here, not at import: a process that only loads a model keeps 7 MiB

    flat = y.reshape(-1)  # a view: y is C-contiguous float32
    if saxpy(x.reshape(-1), flat, a=alpha) is not flat:
        raise RuntimeError("saxpy did not work in place")


def _sdot(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.linalg.blas import sdot

    return float(sdot(a.reshape(-1), b.reshape(-1)))


def fit_softmax(x: sparse.csr_matrix, gold: np.ndarray, n_classes: int, c: float, *,
                dense: np.ndarray | None = None, max_iter: int = 40, memory: int = 3,
                gtol: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by L-BFGS in float32, as scikit-learn's objective.

    Minimises mean cross-entropy + ||W||^2 / (2 c n) (the intercept is not penalised) from zero,
    with Armijo backtracking; stops after ``max_iter`` iterations or when no gradient component
    exceeds ``gtol``. Deterministic: the same input gives the same weights on the same machine
    (BLAS kernels, which differ between CPUs, do the vector updates).

    Args:
        x: sparse features, one row per example.
        gold: the class index (0 .. n_classes - 1) of each row.
        n_classes: number of classes (columns of the result).
        c: inverse regularisation strength, as scikit-learn's ``C``.
        dense: more features as a dense block (rows as ``x``), placed after ``x``'s columns. A
            dense block is multiplied by BLAS, which is far faster than the same values in ``x``.

    Returns:
        The weights (features x classes, float32) and the intercepts (classes).
    """
    x = sparse.csr_matrix(x, dtype=np.float32)
    n = x.shape[0]
    d = np.zeros((n, 0), dtype=np.float32) if dense is None else np.ascontiguousarray(dense, dtype=np.float32)
    lam, half = np.float32(1.0 / (c * n)), int(np.searchsorted(x.indptr, x.nnz // 2))
    blocks = [(0, half), (half, n)]  # x @ w: two row blocks, a thread each
    import scipy.linalg.blas  # noqa: F401 -- loaded before the limit below, which covers loaded libraries only
    from threadpoolctl import threadpool_limits

    # BLAS on one thread: its own threads would spin beside the two sparse-product threads
    with ThreadPoolExecutor(2) as pool, threadpool_limits(1, user_api="blas"):
        return _Fit(x, d, blocks, pool, gold, n_classes, lam).lbfgs(max_iter, memory, gtol)


class _Fit:
    """The loss, its gradient and the L-BFGS loop of ``fit_softmax``."""

    def __init__(self, x: sparse.csr_matrix, dense: np.ndarray, blocks: list[tuple[int, int]],
                 pool: ThreadPoolExecutor, gold: np.ndarray, n_classes: int, lam: np.float32) -> None:
        self.x, self.dense, self.pool = x, dense, pool
        self.parts = [(lo, hi, x[lo:hi], dense[lo:hi]) for lo, hi in blocks]
        xt = x.T.tocsr()  # x.T @ z: two row blocks of x.T (feature ranges), a thread each
        half = int(np.searchsorted(xt.indptr, xt.nnz // 2))
        self.t_parts = [(0, half, xt[:half]), (half, xt.shape[0], xt[half:])]
        self.gold, self.n_classes, self.lam = gold, n_classes, lam
        self.rows = np.arange(x.shape[0])

    def scores(self, w: np.ndarray) -> np.ndarray:
        n, p = self.x.shape
        z = np.empty((n, self.n_classes), dtype=np.float32)
        ws, wd = w[:p], w[p:]

        def block(part: tuple[int, int, sparse.csr_matrix, np.ndarray]) -> None:
            lo, hi, xs, ds = part
            z[lo:hi] = xs @ ws
            if ds.shape[1]:
                z[lo:hi] += ds @ wd

        list(self.pool.map(block, self.parts))  # sparsetools and BLAS release the GIL; a row is one thread's
        return z

    def loss_grad(self, w: np.ndarray, b: np.ndarray, grad_w: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss at (w, b); its gradient by w goes into ``grad_w``, by b is returned."""
        n, p = self.x.shape
        z = self.scores(w)
        z += b
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        loss = (-float(np.log(np.maximum(z[self.rows, self.gold], 1e-30)).sum()) / n
                + 0.5 * float(self.lam) * _sdot(w, w))
        z[self.rows, self.gold] -= 1.0
        z /= n

        partial: list[np.ndarray] = [np.empty(0, np.float32)] * 2

        def block(k: int) -> None:
            lo, hi, xt = self.t_parts[k]
            grad_w[lo:hi] = xt @ z
            if self.dense.shape[1]:  # the dense block's share of this thread's rows
                r0, r1 = self.parts[k][:2]
                partial[k] = self.dense[r0:r1].T @ z[r0:r1]

        list(self.pool.map(block, range(2)))
        if self.dense.shape[1]:
            np.add(partial[0], partial[1], out=grad_w[p:])
        _axpy(float(self.lam), w, grad_w)
        return loss, z.sum(axis=0)

    def lbfgs(self, max_iter: int, memory: int, gtol: float) -> tuple[np.ndarray, np.ndarray]:
        """L-BFGS with Armijo backtracking, on buffers made once.

        The weights are tens of MB on a big bot, so every pass over them counts: the loop works in
        place (two weight buffers and two gradient buffers that swap roles, ``memory`` + 1 pairs of
        history buffers that are reused) and never makes a temporary of their size.
        """
        def dot(a: _Pair, b: _Pair) -> float:
            return _sdot(a[0], b[0]) + float(np.vdot(a[1], b[1]))
        shape = (self.x.shape[1] + self.dense.shape[1], self.n_classes)
        w, w_new, gw, gw_new, qw = (np.zeros(shape, dtype=np.float32) for _ in range(5))
        b = np.zeros(self.n_classes, dtype=np.float32)
        f, gb = self.loss_grad(w, b, gw)
        history: list[tuple[_Pair, _Pair, float]] = []
        free: list[tuple[np.ndarray, np.ndarray]] = []  # history buffers not in use
        for _ in range(max_iter):
            if max(float(gw.max(initial=0.0)), -float(gw.min(initial=0.0)), float(np.abs(gb).max())) <= gtol:
                break
            np.copyto(qw, gw)  # two-loop recursion: the direction is H^-1 g
            qb = gb.copy()
            alphas = []
            for s, y, rho in reversed(history):
                alpha = rho * dot(s, (qw, qb))
                alphas.append(alpha)
                _axpy(-alpha, y[0], qw)
                qb -= np.float32(alpha) * y[1]
            if history:
                s, y, _ = history[-1]
                scale = dot(s, y) / dot(y, y)
            else:
                scale = 1.0 / math.sqrt(dot((gw, gb), (gw, gb)))
            qw *= np.float32(scale)
            qb *= np.float32(scale)
            for (s, y, rho), alpha in zip(history, reversed(alphas)):
                beta = rho * dot(y, (qw, qb))
                _axpy(alpha - beta, s[0], qw)
                qb += np.float32(alpha - beta) * s[1]
            slope = -dot((gw, gb), (qw, qb))
            step = 1.0
            while True:
                np.multiply(qw, np.float32(step), out=w_new)  # w_new = w - step * qw, as two roundings
                np.subtract(w, w_new, out=w_new)
                b_new = b - np.float32(step) * qb
                f_new, gb_new = self.loss_grad(w_new, b_new, gw_new)
                if f_new <= f + 1e-4 * step * slope or step < 1e-6:
                    break
                step /= 2
            sw, yw = free.pop() if free else (np.empty(shape, np.float32), np.empty(shape, np.float32))
            np.subtract(w_new, w, out=sw)
            np.subtract(gw_new, gw, out=yw)
            s_pair, y_pair = (sw, b_new - b), (yw, gb_new - gb)
            sy = dot(s_pair, y_pair)
            if sy > 1e-12:
                history.append((s_pair, y_pair, 1.0 / sy))
                if len(history) > memory:
                    old_s, old_y, _ = history.pop(0)
                    free.append((old_s[0], old_y[0]))
            else:
                free.append((sw, yw))
            w, w_new, gw, gw_new = w_new, w, gw_new, gw
            b, f, gb = b_new, f_new, gb_new
        return w, b.astype(np.float64)
