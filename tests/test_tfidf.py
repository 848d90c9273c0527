"""The router's TF-IDF features: scikit-learn's formulas, any batch size, odd docs."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from bot.classifier import _Tfidf, char_features, tfidf_matrix, word_features

TEXTS = ["how much is the X3", "how much is the x3 in red?", "book a test drive on Friday",
         "book book book", "which models do you have", "do you have the X5 in stock", "hi", "???"]


@pytest.mark.parametrize("analyzer", [word_features, char_features], ids=["words", "chars"])
@pytest.mark.parametrize("min_df", [1, 2])
def test_a_block_matches_scikit_learns_tfidf_vectorizer(analyzer, min_df: int) -> None:
    docs = [analyzer(t) for t in TEXTS]
    ours = tfidf_matrix([_Tfidf(analyzer, docs, min_df)], [docs]).toarray()
    reference = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, min_df=min_df, dtype=np.float64)
    theirs = reference.fit_transform(TEXTS).toarray()
    # our columns are the kept n-grams in sorted order, as the vectorizer's vocabulary
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_blocks_sit_side_by_side_each_normalised_on_its_own() -> None:
    words = _Tfidf(word_features, [word_features(t) for t in TEXTS], 1)
    chars = _Tfidf(char_features, [char_features(t) for t in TEXTS], 1)
    both = tfidf_matrix([words, chars], [[word_features(t) for t in TEXTS], [char_features(t) for t in TEXTS]],
                        [1.0, 0.5]).toarray()
    width = len(words.vocab)
    assert both.shape == (len(TEXTS), width + len(chars.vocab))
    np.testing.assert_allclose(np.linalg.norm(both[:, :width], axis=1)[:-1], 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(both[:, width:], axis=1), 0.5, rtol=1e-6)
    assert not both[-1, :width].any()  # '???' has no word: its word part stays empty, not NaN


def test_one_doc_at_a_time_gives_the_batchs_rows() -> None:
    words = _Tfidf(word_features, [word_features(t) for t in TEXTS], 1)
    batch = tfidf_matrix([words], [[word_features(t) for t in TEXTS]])
    for i, text in enumerate(TEXTS):
        one = tfidf_matrix([words], [[word_features(text)]])
        assert one.has_sorted_indices
        np.testing.assert_array_equal(one.toarray()[0], batch.toarray()[i])


def test_blocks_and_their_docs_must_match() -> None:
    words = _Tfidf(word_features, [word_features(t) for t in TEXTS], 1)
    with pytest.raises(ValueError, match="same length"):
        tfidf_matrix([words, words], [[["hi"]], [["hi"], ["ho"]]])
    with pytest.raises(ValueError, match="one list of docs per block"):
        tfidf_matrix([words, words], [[["hi"]]])


def test_unknown_and_empty_docs_make_empty_rows() -> None:
    words = _Tfidf(word_features, [word_features(t) for t in TEXTS], 1)
    matrix = tfidf_matrix([words], [[[], word_features("zebra quantum"), word_features("book")]])
    assert matrix.shape == (3, len(words.vocab))
    assert list(np.diff(matrix.indptr)) == [0, 0, 1]
    assert tfidf_matrix([words], [[]]).shape == (0, len(words.vocab))
