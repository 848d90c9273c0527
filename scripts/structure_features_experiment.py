"""Experiment: structure-aware sparse features for the TF-IDF router, on CLINC150 and the demo bot.

Uses the project's venv only (numpy/scipy/scikit-learn):

    python scripts/structure_features_experiment.py clinc --variant base first skip3 first+skip3:w0.7
    python scripts/structure_features_experiment.py demo --variant base first

A variant is ``kinds[:option...]``: ``kinds`` joined by ``+`` from

- ``base``: today's TfidfModel, nothing added;
- ``first``: the first word joined with every other word (``^have&add``);
- ``qtype``: the kind of the first word (``wh`` question word, ``yn`` auxiliary, ``x`` other) joined
  with every other word (``^yn&add``); ``qtype1`` leaves out the ``x`` kind;
- ``first2``: the first two words joined with every later word (``^have i&add``);
- ``qword``: as ``first``, only when the first word is a question or auxiliary word;
- ``skipK``: ordered word pairs at distance 2..K (``add>calendar``; distance 1 is the bigram);
- ``svm``: LR probabilities averaged with LinearSVC's (softmax of scores / T) - an ensemble;

and options ``wX`` (block weight, default 1), ``dfN`` (min_df of the block; default as the word
block), ``inword`` (features go into the word block instead of a third block), ``cX`` (C of the LR),
``bigonly`` (the new block only for bots of more than 2,000 examples).

``clinc`` prints the bench's numbers per variant: calibrated in-scope accuracy / OOS recall on test
(threshold by ``calibrate`` on val), the same on val, in-scope accuracy without a threshold on test
and val, build time and route latency. ``demo`` prints the demo bot's top scores for the messages the
conversation tests are sensitive to. docs/routing.md ("Tried and not shipped") has the results.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import sparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import classifier as classifier_module  # noqa: E402
from bot import router as router_module  # noqa: E402
from bot.classifier import _WORD, TfidfModel, _stem, _Tfidf, tfidf_matrix  # noqa: E402

_ORIGINAL_WORDS = classifier_module.word_features
QWORDS = frozenset("what whats which who whom whose when where why how is are was were do does did have has had can "
                   "could will would should shall may might am isnt dont doesnt didnt".split())
WH = frozenset("what whats which who whom whose when where why how".split())
DEMO_MESSAGES = ("Voyager", "the model t", "does the adaptive cruise control work in traffic jams?", "a mustang",
                 "do you like quantum chromodynamics", "what about a ferrari")


def _words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower())]


def structure_features(kinds: Sequence[str]) -> Callable[[str], list[str]]:
    """An analyzer making the structure features named in ``kinds``."""
    def analyze(text: str) -> list[str]:
        words = _words(text)
        out: list[str] = []
        for kind in kinds:
            if kind == "first" and words:
                out += [f"^{words[0]}&{w}" for w in words[1:]]
            elif kind == "qword" and words and words[0] in QWORDS:
                out += [f"^{words[0]}&{w}" for w in words[1:]]
            elif kind in ("qtype", "qtype1") and words:
                cat = "wh" if words[0] in WH else "yn" if words[0] in QWORDS else "x" if kind == "qtype" else ""
                out += [f"^{cat}&{w}" for w in words[1:]] if cat else []
            elif kind == "first2" and len(words) > 2:
                out += [f"^{words[0]} {words[1]}&{w}" for w in words[2:]]
            elif kind.startswith("skip"):
                k = int(kind[4:])
                out += [f"{a}>{words[i + d]}" for i, a in enumerate(words) for d in range(2, k + 1) if i + d < len(words)]
        return out
    return analyze


class StructModel(TfidfModel):
    """TfidfModel with a third TF-IDF block of structure features (times ``weight``)."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], analyzer: Callable[[str], list[str]],
                 weight: float, min_df: int | None, c: float) -> None:
        self.struct_analyzer, self.weight = analyzer, np.float32(weight)
        df = min_df if min_df is not None else (2 if len(texts) > 2000 else 1)
        self.struct = _Tfidf(analyzer, [analyzer(t) for t in texts], df)
        super().__init__(texts, labels, c=c)

    def _features(self, texts, word_docs, char_docs):  # type: ignore[no-untyped-def]
        base = super()._features(texts, word_docs, char_docs)
        if not hasattr(self, "struct"):
            return base
        return with_struct_block(base, self.struct, self.struct_analyzer, texts, self.weight)


def with_struct_block(base: sparse.csr_matrix, struct: _Tfidf, analyzer: Callable[[str], list[str]],
                      texts: Sequence[str], weight: float) -> sparse.csr_matrix:
    """``base`` with the structure block's TF-IDF rows (times ``weight``) as more columns."""
    extra = tfidf_matrix([struct], [[analyzer(t) for t in texts]], [weight])
    return sparse.hstack([base, extra], format="csr", dtype=np.float32)


class SvmEnsemble:
    """Average of a model's probabilities and LinearSVC's softmax(score / T) on the same features."""

    def __init__(self, model: TfidfModel, texts: Sequence[str], labels: Sequence[str], temperature: float,
                 c: float = 0.5) -> None:
        from sklearn.svm import LinearSVC
        self.model, self.classes, self.t = model, model.classes, temperature
        self.svm = LinearSVC(C=c).fit(model.features(texts), list(labels))
        assert tuple(self.svm.classes_) == self.classes

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        x = self.model.features(texts)
        out = averaged(self.model.predict_proba(texts), self.svm.decision_function(x), self.t)
        out[np.diff(x.indptr) == 0] = 0.0
        return out


def averaged(p: np.ndarray, svm_scores: np.ndarray, t: float) -> np.ndarray:
    """The mean of probabilities ``p`` and softmax(svm_scores / t)."""
    z = svm_scores / t
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    q /= q.sum(axis=1, keepdims=True)
    return (p + q) / 2


def parse_variant(spec: str) -> dict[str, object]:
    head, *opts = spec.split(":")
    v: dict[str, object] = {"kinds": [k for k in head.split("+") if k not in ("base", "svm")], "svm": "svm" in head,
                            "weight": 1.0, "min_df": None, "inword": False, "c": 20.0, "bigonly": False, "t": 0.1}
    for o in opts:
        if o == "inword":
            v["inword"] = True
        elif o == "bigonly":
            v["bigonly"] = True
        elif o.startswith("df"):
            v["min_df"] = int(o[2:])
        elif o.startswith("w"):
            v["weight"] = float(o[1:])
        elif o.startswith("c"):
            v["c"] = float(o[1:])
        elif o.startswith("t"):
            v["t"] = float(o[1:])
        else:
            raise SystemExit(f"unknown option {o!r} in {spec!r}")
    return v


def make_router(intents: object, v: dict[str, object]) -> router_module.Router:
    """A Router (no cache) whose classifier is the variant ``v``."""
    kinds = list(v["kinds"])  # type: ignore[call-overload]
    analyzer = structure_features(kinds)

    def build(kind: str, texts: Sequence[str], labels: Sequence[str], cache_dir: Path | None = None) -> object:
        use = bool(kinds) and (not v["bigonly"] or len(texts) > 2000)
        if use and v["inword"]:
            model: TfidfModel = TfidfModel(texts, labels, c=float(v["c"]))  # type: ignore[arg-type]
        elif use:
            model = StructModel(texts, labels, analyzer, float(v["weight"]), v["min_df"], float(v["c"]))  # type: ignore[arg-type]
        else:
            model = TfidfModel(texts, labels, c=float(v["c"]))  # type: ignore[arg-type]
        return SvmEnsemble(model, texts, labels, float(v["t"])) if v["svm"] else model  # type: ignore[arg-type]

    original_build, original_words = router_module.build_model, classifier_module.word_features
    router_module.build_model = build  # type: ignore[assignment]
    if kinds and v["inword"]:  # the word analyzer is looked up at call time, so this reaches every transform
        classifier_module.word_features = lambda t: original_words(t) + analyzer(t)  # type: ignore[assignment]
    try:
        return router_module.Router(intents)  # type: ignore[arg-type]
    finally:
        router_module.build_model = original_build


def restore() -> None:
    """Undo ``inword``'s replacement of the word analyzer (after a variant is measured)."""
    classifier_module.word_features = _ORIGINAL_WORDS


def run_clinc(specs: list[str]) -> None:
    from bench.router_clinc150 import load_data, make_intents

    data = load_data()
    intents = make_intents(data)
    val, test = data["val"] + data["oos_val"], data["test"] + data["oos_test"]
    for spec in specs:
        v = parse_variant(spec)
        started, cpu = time.perf_counter(), time.process_time()
        router = make_router(intents, v)
        build, cpu = time.perf_counter() - started, time.process_time() - cpu
        line = result_line(spec, router, val, test, f"build {build:.1f} s ({cpu:.1f} CPU)")
        restore()
        print(line, flush=True)


def result_line(spec: str, router: object, val: list, test: list, build: str) -> str:
    """One variant's numbers: calibrated test and val (as the bench's bold row), no-threshold, build, latency."""
    from bench.router_clinc150 import evaluate, latency_ms
    from bot.calibrate import calibrate

    chosen = calibrate(router, val)
    acc, rec = evaluate(router, test, chosen.threshold, chosen.margin)
    acc0, _ = evaluate(router, test, 0.0, 0.0)
    vacc0, _ = evaluate(router, val, 0.0, 0.0)
    texts = [t for t, _ in test][:2000]
    p50, p99 = latency_ms(router, texts, warm_up=texts[:50])
    return (f"{spec:<34} test {acc:.1f} / {rec:.1f} (thr {chosen.threshold:.2f})  no-thr {acc0:.1f} | val "
            f"{100 * chosen.in_scope_accuracy:.1f} / {100 * chosen.oos_recall:.1f} no-thr {vacc0:.1f} | {build}  "
            f"p50 {p50:.2f} p99 {p99:.2f} ms")


def run_demo(specs: list[str]) -> None:
    from bot.config import load_config

    config = load_config(ROOT)
    for spec in specs:
        router = make_router(config.intents, parse_variant(spec))
        print(spec)
        for text in DEMO_MESSAGES:
            top = ", ".join(f"{name} {score:.2f}" for name, score in router.scores(text)[:2])
            print(f"    {text!r}: {top}")
        restore()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["clinc", "demo"])
    parser.add_argument("--variant", nargs="+", default=["base", "first"])
    args = parser.parse_args()
    (run_clinc if args.what == "clinc" else run_demo)(args.variant)


if __name__ == "__main__":
    main()
