"""Candidate new intents for ``hybridbot report``: fallback messages grouped by similarity."""
from __future__ import annotations

import collections
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping

log = logging.getLogger(__name__)

MAX_CLUSTER_TEXTS = 2000  # distinct fallback messages clustered (the most frequent); keeps memory bounded
CLUSTER_DISTANCE = 0.85  # cosine distance below which groups of fallback messages merge
MAX_EXAMPLES = 8
_WORD = re.compile(r"[^\W\d_][\w']*")


@dataclass(frozen=True)
class Cluster:
    """Fallback messages that say much the same thing: a candidate new intent."""

    name: str
    size: int  # messages, repeats included
    terms: tuple[str, ...]
    examples: tuple[str, ...]

    @property
    def intent_yaml(self) -> str:
        """Lines to paste under ``intents:`` in intents.yaml."""
        lines = [f"  {self.name}:",
                 f"    description: {json.dumps(f'TODO: what visitors want ({self.size} fallback messages)')}",
                 "    examples:"]
        lines += [f"      - {json.dumps(example, ensure_ascii=False)}" for example in self.examples]
        return "\n".join(lines) + "\n"

    @property
    def flow_yaml(self) -> str:
        """A starting ``flows/<name>.yaml`` (every intent needs a flow it triggers)."""
        about = ", ".join(self.terms) or self.name
        return (f"version: 1\ndescription: {json.dumps(f'answers questions about {about}')}\n"
                f"trigger: {self.name}\nsteps:\n"
                f"  - say: {json.dumps(f'TODO: the answer for visitors asking about {about}.')}\n")


def _intent_name(terms: Iterable[str], taken: set[str]) -> str:
    words = [re.sub(r"[^a-z0-9]+", "_", t.lower()).strip("_") for t in terms]
    base = "_".join(w for w in words if w)[:40].strip("_") or "new_intent"
    if not base[0].isalpha():
        base = f"ask_{base}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def cluster_messages(counts: Mapping[str, int], known_intents: Collection[str] = (), *, min_size: int = 2,
                     distance: float = CLUSTER_DISTANCE) -> tuple[list[Cluster], int]:
    """Group messages (text -> how often it was sent) into candidate intents.

    Features: TF-IDF of the content words (English stop words dropped, suffixes lightly
    stripped) and, weighted equally, of their character 3-5-grams. Cosine distance,
    average-linkage agglomerative clustering cut at ``distance``: deterministic, and the
    number of groups follows from the data. Groups smaller than ``min_size`` messages
    (repeats count) are left out. Returns the clusters, biggest first, and how many
    messages were left out.
    """
    spellings: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for text, n in counts.items():
        spellings[text.lower()][text] += n
    shown = [(min(c, key=lambda t: (-c[t], t)), sum(c.values())) for c in spellings.values()]
    items = sorted(shown, key=lambda tn: (-tn[1], tn[0]))[:MAX_CLUSTER_TEXTS]
    total = sum(n for _, n in items)
    from sklearn.feature_extraction.text import TfidfVectorizer

    tokens = [_content_words(text) for text, _ in items]
    keep = [i for i, words in enumerate(tokens) if words]
    if not keep:
        return [], total
    words = TfidfVectorizer(analyzer=lambda ws: [_stem(w) for w in ws], sublinear_tf=True)
    word_matrix = words.fit_transform([tokens[i] for i in keep])
    labels = _group([" ".join(tokens[i]) for i in keep], word_matrix, distance)
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for row, label in enumerate(labels):
        groups[label].append(row)
    vocabulary = words.get_feature_names_out()
    taken = set(known_intents)
    clusters: list[Cluster] = []
    for rows in sorted(groups.values(), key=lambda rs: (-sum(items[keep[r]][1] for r in rs), items[keep[rs[0]]][0])):
        size = sum(items[keep[r]][1] for r in rows)
        if size < min_size:
            continue
        centroid = word_matrix[rows].mean(axis=0).A1
        order = sorted(range(len(centroid)), key=lambda j: (-centroid[j], vocabulary[j]))
        spelled = collections.Counter(w for r in rows for w in tokens[keep[r]])
        terms = _distinct_terms([max((w for w in spelled if _stem(w) == vocabulary[j]), key=lambda w: (spelled[w], w))
                                 for j in order[:6] if centroid[j] > 0])
        closeness = (word_matrix[rows] @ centroid).tolist()
        ranked = sorted(((keep[r], c) for r, c in zip(rows, closeness)),
                        key=lambda rc: (-rc[1], -items[rc[0]][1], items[rc[0]][0]))
        examples = tuple(items[r][0].replace("{", "(").replace("}", ")") for r, _ in ranked[:MAX_EXAMPLES])
        clusters.append(Cluster(_intent_name(terms, taken), size, terms, examples))
    return clusters, total - sum(c.size for c in clusters)


def _content_words(text: str) -> list[str]:
    """Lower-case words of ``text`` without English stop words (names of intents come from these)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS and len(w) > 1]


def _stem(word: str) -> str:
    """A light suffix strip so 'finance' and 'financing' count as one word."""
    if len(word) > 4:
        for suffix in ("ing", "ed", "es", "e", "s"):
            if word.endswith(suffix):
                return word[:-len(suffix)]
    return word


def _distinct_terms(ranked: list[str], n: int = 2) -> tuple[str, ...]:
    """The first ``n`` terms that are not variants of an earlier one (finance / financing)."""
    chosen: list[str] = []
    for term in ranked:
        if not any(term[:5] == other[:5] for other in chosen):
            chosen.append(term)
            if len(chosen) == n:
                break
    return tuple(chosen)


def _group(content: list[str], word_matrix: Any, distance: float) -> list[int]:
    if len(content) < 2:
        return [0] * len(content)
    import numpy as np
    import scipy.sparse as sparse
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_distances
    from sklearn.preprocessing import normalize

    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(content)
    features = normalize(sparse.hstack([word_matrix * np.sqrt(0.5), chars * np.sqrt(0.5)]).tocsr())
    model = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                    distance_threshold=distance)
    return [int(label) for label in model.fit_predict(cosine_distances(features))]
