"""Experiment: static word vectors (scripts/word_vectors_experiment.py) plus sparse structure features.

The structure features are the other experiment's (``structure_features`` of
scripts/structure_features_experiment.py, imported, not copied): first
word joined with the others when it is a question word (``qword``), skip-bigrams (``skipK``), and an
LR + LinearSVC ensemble (``svm``). Project venv only (numpy/scipy/scikit-learn):

    python scripts/vectors_structure_experiment.py clinc --variant vec0 vec1.5:h1 vec1.5+qword+skip4:w0.7:h1:d5

A variant is ``kinds[:option...]`` with kinds joined by ``+``: ``vecX`` (vector block times X, not
scaled), ``veckX`` (the same scaled by the known share), the structure kinds, ``svm``; options
``wX`` (structure block weight), ``tX`` (SVM temperature), ``cX`` (LR C), ``hX`` (a second vector block:
the first N words' mean vector times X, ``nN``, default 2),
``dN`` (min_df of the structure block; default as the word block's), ``iN`` (L-BFGS iterations,
default 40), ``k3`` (character 3-5-grams instead of 2-5). BLAS is limited to one
thread while fitting (threadpoolctl): the dense block's products are small, and OpenBLAS threads
spinning beside the sparse products' two threads doubled the CPU of every loss evaluation.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bot import classifier as classifier_module  # noqa: E402
from bot import router as router_module  # noqa: E402
from bot.classifier import TfidfModel, _Tfidf  # noqa: E402
from bot.softmax import fit_softmax  # noqa: E402
import structure_features_experiment as structure  # noqa: E402
import word_vectors_experiment as wv  # noqa: E402


class HeadBlock(wv.VectorBlock):
    """The vector block, then the same for the message's first ``n`` words only (times ``head``)."""

    def __init__(self, table: wv.WordVectors, texts: Sequence[str], weight: float, share: bool, head: float,
                 n: int = 2) -> None:
        super().__init__(table, texts, weight, share)
        self.head, self.n = head, n

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        full = super().matrix(texts)
        out = np.zeros((len(texts), self.table.dim), dtype=np.float32)
        for k, text in enumerate(texts):
            ids = [i for w in wv.basic_words(text)[:self.n] for i in self.table.pieces(w)]
            if ids:
                mean = self.table.rows(ids).sum(axis=0)
                norm = float(np.sqrt(mean @ mean))
                out[k] = mean * np.float32(self.head / norm) if norm > 0.0 else 0.0
        return np.hstack([full, out])


class ComboModel(TfidfModel):
    """TfidfModel + optional structure TF-IDF block (sparse) + optional vector block (dense)."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], analyzer, sweight: float,  # type: ignore[no-untyped-def]
                 block: wv.VectorBlock | None, c: float, min_df: int = 0,
                 max_iter: int = 40) -> None:
        self.struct_analyzer, self.sweight, self.block = analyzer, np.float32(sweight), block
        self.max_iter = max_iter
        if analyzer is not None:
            self.struct = _Tfidf(analyzer, [analyzer(t) for t in texts],
                                  min_df or (2 if len(texts) > 2000 else 1))
        self._dense = block.matrix(texts) if block is not None else None
        super().__init__(texts, labels, c=c)

    def _fit(self, features, labels):  # type: ignore[no-untyped-def]
        names, gold = np.unique(labels, return_inverse=True)
        with threadpool_limits(1):
            return fit_softmax(features, gold, len(names), self.c, dense=self._dense, max_iter=self.max_iter)

    def _features(self, texts, word_docs, char_docs):  # type: ignore[no-untyped-def]
        base = super()._features(texts, word_docs, char_docs)
        if getattr(self, "struct_analyzer", None) is None or not hasattr(self, "struct"):
            return base
        return structure.with_struct_block(base, self.struct, self.struct_analyzer, texts, self.sweight)

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, sparse.csr_matrix]:
        x = self.features(texts)
        z = np.asarray(x @ self.coef[:x.shape[1]], dtype=np.float64) + self.intercept
        if self.block is not None:
            z += self.block.matrix(texts) @ self.coef[x.shape[1]:]
        return z, x

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        z, x = self.logits(texts)
        z -= z.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        probs[np.diff(x.indptr) == 0] = 0.0
        return probs


class Ensemble:
    """Mean of the LR's probabilities and LinearSVC's softmax(score / T), on the same features (dense too)."""

    def __init__(self, model: ComboModel, texts: Sequence[str], labels: Sequence[str], t: float) -> None:
        from sklearn.svm import LinearSVC
        self.model, self.classes, self.t = model, model.classes, t
        self.svm = LinearSVC(C=0.5).fit(self._x(texts), list(labels))

    def _x(self, texts: Sequence[str]) -> sparse.csr_matrix:
        x = self.model.features(texts)
        if self.model.block is None:
            return x
        return sparse.hstack([x, sparse.csr_matrix(self.model.block.matrix(texts))], format="csr", dtype=np.float32)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        p = self.model.predict_proba(texts)
        out = structure.averaged(p, self.svm.decision_function(self._x(texts)), self.t)
        out[p.sum(axis=1) == 0] = 0.0
        return out


def parse(spec: str) -> dict[str, object]:
    head, *opts = spec.split(":")
    kinds = head.split("+")
    v: dict[str, object] = {"struct": [k for k in kinds if k in ("first", "qword", "qtype", "qtype1", "first2")
                                       or k.startswith("skip")],
                            "svm": "svm" in kinds, "vec": 0.0, "share": False,
                            "w": 1.0, "t": 0.1, "c": 20.0, "h": 0.0, "n": 2, "d": 0, "i": 40, "k": 2}
    for k in kinds:
        if k.startswith("veck"):
            v["vec"], v["share"] = float(k[4:]), True
        elif k.startswith("vec"):
            v["vec"] = float(k[3:])
    for o in opts:
        v[o[0]] = float(o[1:])
    return v


def make_router(intents: object, v: dict[str, object], table: wv.WordVectors) -> router_module.Router:
    analyzer = structure.structure_features(v["struct"]) if v["struct"] else None

    def build(kind: str, texts: Sequence[str], labels: Sequence[str], cache_dir: Path | None = None) -> object:
        weight, share = float(v["vec"]), bool(v["share"])  # type: ignore[arg-type]
        block: wv.VectorBlock | None = None
        if weight and v["h"]:
            block = HeadBlock(table, texts, weight, share, float(v["h"]), int(v["n"]))  # type: ignore[arg-type]
        elif weight:
            block = wv.VectorBlock(table, texts, weight, share)
        model = ComboModel(texts, labels, analyzer, float(v["w"]), block, float(v["c"]),  # type: ignore[arg-type]
                           int(v["d"]), int(v["i"]))  # type: ignore[call-overload]
        return Ensemble(model, texts, labels, float(v["t"])) if v["svm"] else model  # type: ignore[arg-type]

    original, original_chars = router_module.build_model, classifier_module.char_features
    router_module.build_model = build  # type: ignore[assignment]
    if int(v["k"]) != 2:  # looked up at call time: reaches training and every transform of this experiment
        classifier_module.char_features = lambda t: original_chars(t, int(v["k"]))  # type: ignore[assignment]
    try:
        return router_module.Router(intents)  # type: ignore[arg-type]
    finally:
        router_module.build_model = original


def run_clinc(specs: list[str], table: wv.WordVectors) -> None:
    from bench.router_clinc150 import load_data, make_intents

    data = load_data()
    intents = make_intents(data)
    val, test = data["val"] + data["oos_val"], data["test"] + data["oos_test"]
    original_chars = classifier_module.char_features
    for spec in specs:
        classifier_module.char_features = original_chars
        v = parse(spec)
        started, cpu = time.perf_counter(), time.process_time()
        router = make_router(intents, v, table)
        build, cpu = time.perf_counter() - started, time.process_time() - cpu
        model = getattr(router.model, "model", router.model)
        weights = model.coef.shape[0]
        print(structure.result_line(spec, router, val, test, f"build {build:.1f} s ({cpu:.1f} CPU, {weights} feature rows)"),
              flush=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["clinc"])
    parser.add_argument("--variant", nargs="+", default=["vec1.5", "vec1.5+qword+skip4:w0.7"])
    parser.add_argument("--table", type=Path, default=wv.TABLE)
    args = parser.parse_args()
    run_clinc(args.variant, wv.WordVectors(args.table))


if __name__ == "__main__":
    main()
