"""Experiment (not shipped): the TF-IDF router plus a block of static word vectors, on CLINC150 and the demo bot.

Needs the table made by ``scripts/distill_word_vectors.py`` (default ``var/word_vectors.npz``) and
the project's own venv only (numpy; no torch):

    python scripts/word_vectors_experiment.py clinc --weight 0 1.5 --share known none
    python scripts/word_vectors_experiment.py demo --weight 0 0.75 1.5

``clinc`` prints, per variant, the bench's numbers: in-scope accuracy / OOS recall on test at the
threshold ``calibrate`` picks on val, in-scope accuracy without a threshold, and the build time.
``demo`` prints the demo bot's scores for the messages of tests/conversations whose outcome the
vectors change. The vector block of a message is the mean of its WordPiece token vectors (SIF
weights are in the vectors' lengths, as model2vec does it) at unit length, times ``weight``, times
(``--share known``) the idf mass of its words seen in the training examples over the idf mass of
all its words. The logistic regression is our ``fit_softmax`` with the block as ``dense=``.
docs/routing.md ("Tried and not shipped") has the results.
"""
from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import router as router_module  # noqa: E402
from bot.classifier import TfidfModel  # noqa: E402
from bot.softmax import fit_softmax  # noqa: E402

log = logging.getLogger(__name__)

TABLE = ROOT / "var" / "word_vectors.npz"
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")   # BERT's basic tokenizer: words, and each other visible character
DEMO_MESSAGES = ("Voyager", "the model t", "does the adaptive cruise control work in traffic jams?", "a mustang",
                 "do you like quantum chromodynamics", "what about a ferrari")


def basic_words(text: str) -> list[str]:
    """BERT's uncased pre-tokenisation: lower case, accents stripped, punctuation split off."""
    text = unicodedata.normalize("NFD", text.lower())
    return _TOKEN.findall("".join(ch for ch in text if unicodedata.category(ch) != "Mn"))


class WordVectors:
    """The distilled table: WordPiece vocabulary, int8 rows and a float32 scale per row."""

    def __init__(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            tokens = bytes(data["tokens"]).decode("utf-8").split("\n")
            self.vectors, self.scales = data["vectors"], data["scales"].astype(np.float32)
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.dim = int(self.vectors.shape[1])

    def pieces(self, word: str) -> list[int]:
        """WordPiece ids of one word by greedy longest match (``##`` continues a word); [] if unknown."""
        if word in self.ids:
            return [self.ids[word]]
        out, start = [], 0
        while start < len(word) <= 100:
            for end in range(len(word), start, -1):
                found = self.ids.get(word[start:end] if start == 0 else "##" + word[start:end])
                if found is not None:
                    out.append(found)
                    start = end
                    break
            else:
                return []
        return out

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        idx = np.asarray(ids, dtype=np.intp)
        return self.vectors[idx].astype(np.float32) * self.scales[idx, None]


class VectorBlock:
    """The dense block of a message (see the module docstring)."""

    def __init__(self, table: WordVectors, texts: Sequence[str], weight: float, share: bool) -> None:
        self.table, self.weight, self.share = table, weight, share
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(basic_words(text)))
        self.unseen_idf = math.log(1 + len(texts)) + 1.0
        self.idf = {w: math.log((1 + len(texts)) / (1 + n)) + 1.0 for w, n in df.items()}

    def known_share(self, words: Sequence[str]) -> float:
        idfs = [self.idf.get(w) for w in words]
        total = sum(self.unseen_idf if i is None else i for i in idfs)
        return sum(i for i in idfs if i is not None) / total if total else 0.0

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.table.dim), dtype=np.float32)
        for k, text in enumerate(texts):
            words = basic_words(text)
            ids = [i for w in words for i in self.table.pieces(w)]
            share = self.known_share(words) if self.share else 1.0
            if ids and share > 0.0:
                mean = self.table.rows(ids).sum(axis=0)
                norm = float(np.sqrt(mean @ mean))
                out[k] = mean * np.float32(self.weight * share / norm) if norm > 0.0 else 0.0
        return out


class VectorModel(TfidfModel):
    """TfidfModel with the vector block as more features of the same logistic regression."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], block: VectorBlock) -> None:
        self.block = block
        self._dense = block.matrix(texts)
        super().__init__(texts, labels)
        del self._dense

    def _fit(self, features, labels):  # type: ignore[no-untyped-def]
        names, gold = np.unique(labels, return_inverse=True)
        return fit_softmax(features, gold, len(names), self.c, dense=self._dense)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        x = self.features(texts)
        logits = np.asarray(x @ self.coef[:x.shape[1]], dtype=np.float64) + self.intercept
        logits += self.block.matrix(texts) @ self.coef[x.shape[1]:]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        probs[np.diff(x.indptr) == 0] = 0.0
        return probs


def make_router(intents: object, table: WordVectors | None, weight: float, share: bool) -> router_module.Router:
    """A Router whose classifier is VectorModel (weight 0: today's TfidfModel); no cache."""
    def build(kind: str, texts: Sequence[str], labels: Sequence[str], cache_dir: Path | None = None) -> TfidfModel:
        if not weight or table is None:
            return TfidfModel(texts, labels)
        return VectorModel(texts, labels, VectorBlock(table, texts, weight, share))
    original = router_module.build_model
    router_module.build_model = build  # type: ignore[assignment]
    try:
        return router_module.Router(intents)  # type: ignore[arg-type]
    finally:
        router_module.build_model = original


def run_clinc(table: WordVectors, weights: list[float], shares: list[str]) -> None:
    from bench.router_clinc150 import evaluate, latency_ms, load_data, make_intents
    from bot.calibrate import calibrate

    data = load_data()
    intents = make_intents(data)
    val, test = data["val"] + data["oos_val"], data["test"] + data["oos_test"]
    for weight in weights:
        for share in (shares if weight else ["-"]):
            started, cpu = time.perf_counter(), time.process_time()
            router = make_router(intents, table, weight, share == "known")
            build, cpu = time.perf_counter() - started, time.process_time() - cpu
            chosen = calibrate(router, val)
            acc, rec = evaluate(router, test, chosen.threshold, chosen.margin)
            acc0, _ = evaluate(router, test, 0.0, 0.0)
            texts = [t for t, _ in test][:2000]
            p50, p99 = latency_ms(router, texts, warm_up=texts[:50])
            print(f"weight {weight:<4} share {share:<5} calibrated {acc:.1f} / {rec:.1f} (threshold "
                  f"{chosen.threshold:.2f})  no threshold {acc0:.1f}  build {build:.1f} s ({cpu:.1f} s CPU)  "
                  f"route p50 {p50:.2f} ms p99 {p99:.2f} ms", flush=True)


def run_demo(table: WordVectors, weights: list[float], shares: list[str]) -> None:
    from bot.actions import ActionRegistry
    from bot.config import load_config

    config = load_config(ROOT, ActionRegistry())  # the demo bot at the repository's root
    for weight in weights:
        for share in (shares if weight else ["-"]):
            router = make_router(config.intents, table, weight, share == "known")
            print(f"weight {weight} share {share}")
            for text in DEMO_MESSAGES:
                top = ", ".join(f"{name} {score:.2f}" for name, score in router.scores(text)[:2])
                print(f"    {text!r}: {top}")


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["clinc", "demo"])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--weight", type=float, nargs="+", default=[0.0, 1.5])
    parser.add_argument("--share", choices=["known", "none"], nargs="+", default=["known"])
    args = parser.parse_args()
    before = _rss_mib()
    table = WordVectors(args.table)
    print(f"table {args.table}: {len(table.ids)} tokens x {table.dim}, {args.table.stat().st_size / 1e6:.1f} MB "
          f"on disk, RSS +{_rss_mib() - before:.1f} MiB loaded")
    (run_clinc if args.what == "clinc" else run_demo)(table, args.weight, args.share)


if __name__ == "__main__":
    main()
