"""Router accuracy and speed on CLINC150: in-scope accuracy, out-of-scope recall, latency, load time, memory."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bot.calibrate import calibrate
from bot.config import OUT_OF_SCOPE, IntentDef, IntentsConfig, RouterSettings
from bot.router import Router

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data/clinc150/data_full.json"
VAL_OOS_RECALL = 0.70   # oos_val is easier than oos_test: aim higher on val than wanted in production
LATENCY_MESSAGES = 2000
REFERENCES = (("BERT (Larson et al. 2019, threshold)", 96.2, 52.3),
              ("SVM (Larson et al. 2019, threshold)", 88.2, 18.0))
ATTRIBUTION = ("Data: CLINC150 `data_full.json` (clinc/oos-eval), CC BY 3.0. Stefan Larson, Anish Mahendran, "
               "Joseph J. Peper, Christopher Clarke, Andrew Lee, Parker Hill, Jonathan K. Kummerfeld, Kevin Leach, "
               "Michael A. Laurenzano, Lingjia Tang, Jason Mars. \"An Evaluation Dataset for Intent Classification "
               "and Out-of-Scope Prediction\". EMNLP-IJCNLP 2019. https://www.aclweb.org/anthology/D19-1131")


def load_data(path: Path = DATA) -> dict[str, list[tuple[str, str | None]]]:
    """The splits as (text, intent) pairs, intent None for out of scope."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {split: [(t, None if label == "oos" else label) for t, label in rows] for split, rows in raw.items()}


def make_intents(data: dict[str, list[tuple[str, str | None]]], classifier: str = "tfidf") -> IntentsConfig:
    """150 intents from ``train`` and an out_of_scope intent from ``oos_train``."""
    examples: dict[str, list[str]] = {}
    for text, label in data["train"] + data["oos_train"]:
        examples.setdefault(label or OUT_OF_SCOPE, []).append(text)
    intents = {name: IntentDef(name, tuple(texts)) for name, texts in examples.items()}
    return IntentsConfig(RouterSettings(classifier=classifier), {}, intents)


def evaluate(router: Router, pairs: list[tuple[str, str | None]], threshold: float,
             margin: float) -> tuple[float, float]:
    """Larson et al. 2019: in-scope accuracy (predicting oos is wrong) and OOS recall, in %."""
    correct = n_in = rejected = n_oos = 0
    for (_, gold), ranked in zip(pairs, router.scores_batch([t for t, _ in pairs])):
        intent = router.decide(ranked, threshold, margin)[0]
        if gold is None:
            n_oos += 1
            rejected += intent is None
        else:
            n_in += 1
            correct += intent == gold
    return 100.0 * correct / n_in, 100.0 * rejected / n_oos


def _rss_of_loaded_router(cache_dir: Path) -> float:
    """Resident memory (MiB) of a fresh process that loads the 150-intent router from the cache."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
            "from bench.router_clinc150 import load_data, make_intents; from bot.router import Router;"
            "r = Router(make_intents(load_data()), cache_dir=Path(sys.argv[2])); assert r.from_cache;"
            "r.route('hello'); print(open('/proc/self/status').read())")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(cache_dir)], capture_output=True,
                         text=True, check=True).stdout
    kib = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def run() -> str:
    """Build, calibrate on val, test on test; return the Markdown section."""
    if not DATA.exists():
        return f"## Router on CLINC150\n\nSkipped: {DATA} not found.\n"
    data = load_data()
    config = make_intents(data)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        started = time.perf_counter()
        router = Router(config, cache_dir=cache)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        loaded = Router(config, cache_dir=cache)
        load_s = time.perf_counter() - started
        assert loaded.from_cache
        rss = _rss_of_loaded_router(cache)
    val = data["val"] + data["oos_val"]
    test = data["test"] + data["oos_test"]
    chosen = calibrate(router, val, target_oos_recall=VAL_OOS_RECALL)
    balanced = calibrate(router, val)
    acc, rec = evaluate(router, test, chosen.threshold, chosen.margin)
    acc_b, rec_b = evaluate(router, test, balanced.threshold, balanced.margin)
    acc_0, rec_0 = evaluate(router, test, 0.0, 0.0)
    texts = [t for t, _ in test][:LATENCY_MESSAGES]
    for t in texts[:50]:
        router.route(t)
    times = []
    for t in texts:
        started = time.perf_counter()
        router.route(t)
        times.append(time.perf_counter() - started)
    p50, p99 = (float(np.percentile(times, q)) * 1000 for q in (50, 99))
    rows = [f"| hybridbot default (TF-IDF + LR), threshold {chosen.threshold:.2f} chosen on val | **{acc:.1f}** | **{rec:.1f}** |",
            f"| same, threshold {balanced.threshold:.2f} (calibrate's default: max accuracy + recall on val) | {acc_b:.1f} | {rec_b:.1f} |",
            f"| same, no threshold (argmax, out_of_scope as a class) | {acc_0:.1f} | {rec_0:.1f} |"]
    rows += [f"| {name} | {a:.1f} | {r:.1f} |" for name, a, r in REFERENCES]
    n_examples = sum(len(i.examples) for i in config.intents.values())
    return "\n".join([
        "## Router on CLINC150", "",
        f"Train on `train` ({len(data['train'])} examples, 150 intents) + `oos_train` ({len(data['oos_train'])}, "
        f"as `out_of_scope`); threshold chosen on `val` + `oos_val` only with `calibrate(..., target_oos_recall="
        f"{VAL_OOS_RECALL})` (val recall {chosen.oos_recall:.1%}; margin {chosen.margin:.2f} does not change "
        "the intent returned); scored on `test` (4,500) + `oos_test` (1,000). In-scope accuracy counts "
        "out-of-scope predictions as wrong; OOS recall is the share of `oos_test` sent to the fallback "
        "(Larson et al. 2019).", "",
        "| model | in-scope accuracy % | OOS recall % |", "|---|---|---|", *rows, "",
        "Targets for the default router: in-scope accuracy >= 93.5 %, OOS recall >= 55 %.", "",
        "| speed and size (150 intents) | value |", "|---|---|",
        f"| `route()` latency per message, p50 / p99 (single messages, {len(texts)} test texts) | "
        f"{p50:.2f} ms / {p99:.2f} ms |",
        f"| build the model from {n_examples:,} examples | {build_s:.1f} s |",
        f"| load the model from the cache (`Router(...)` with an unchanged config) | {load_s:.2f} s |",
        f"| RSS of a process with the loaded router | {rss:.0f} MiB |", "",
        ATTRIBUTION, ""])
