"""The shipped word vectors: the table, a message's block, and when the classifier uses them."""
from __future__ import annotations

import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bot.classifier import BIG, BIG_BOT, TfidfModel, cache_path
from bot.config import IntentDef, IntentsConfig, RouterSettings
from bot.crossval import cross_validate
from bot.errors import ConfigErrors
from bot.loader import load
from bot.router import Router
from bot.word_vectors import (HEAD_WEIGHT, HEAD_WORDS, MIN_KNOWN_SHARE, TABLE, TABLE_SHA256, WEIGHT, VectorBlock,
                              WordVectors, basic_words, known_share, load_table, table_digest)
from botdata import MINIMAL

TOPICS = {  # a bot with more than BIG_BOT examples, made from a few words per intent
    "weather": ["weather", "rain", "forecast", "sunny"], "music": ["song", "music", "playlist", "album"],
    "food": ["recipe", "dinner", "cook", "meal"], "travel": ["flight", "trip", "hotel", "ticket"],
    "money": ["bank", "balance", "account", "transfer"], "health": ["doctor", "medicine", "sick", "appointment"],
}
FRAMES = ["tell me about the {}", "i need help with my {}", "what is the {} today", "show me a {}",
          "can you find a {} for me", "{} please", "is there any {} news", "how do i get a {}",
          "i want a {} now", "any {} for tomorrow", "give me the {} details", "where is my {}"]


def big_bot_texts(copies: int) -> tuple[list[str], list[str]]:
    """Examples over BIG_BOT when ``copies`` is large enough: frames x words x numbered variants."""
    texts, labels = [], []
    for intent, words in TOPICS.items():
        for k in range(copies):
            for frame in FRAMES:
                for word in words:
                    texts.append(f"{frame.format(word)} {k}")
                    labels.append(intent)
    return texts, labels


def test_the_cache_key_names_the_shipped_table() -> None:
    assert table_digest(TABLE) == TABLE_SHA256  # change TABLE_SHA256 with the table: it keys the router cache


def test_words_split_into_wordpieces() -> None:
    table = load_table()
    assert basic_words("Hello, WORLD! Café's") == ["hello", ",", "world", "!", "cafe", "'", "s"]
    assert len(table.pieces("car")) == 1
    pieces = table.pieces("unrecognisably")
    assert len(pieces) > 1 and table.pieces("unrecognisably") == pieces
    reverse = {i: t for t, i in table.ids.items()}
    assert [reverse[i] for i in pieces][1].startswith("##")  # later pieces continue the word
    assert table.pieces("x" * 101) == ()
    assert table.pieces("🙂") == () and table.pieces("") == ()


def test_a_message_block_is_two_unit_vectors_times_their_weights() -> None:
    block = VectorBlock()
    rows = block.matrix(["what is the weather like in paris this week", "hi", "", "🙂🙂"])
    dim = load_table().dim
    assert rows.shape == (4, 2 * dim) and rows.dtype == np.float32
    norms = np.linalg.norm(rows[:, :dim], axis=1), np.linalg.norm(rows[:, dim:], axis=1)
    assert norms[0][:2] == pytest.approx([WEIGHT, WEIGHT], rel=1e-5)
    assert norms[1][:2] == pytest.approx([HEAD_WEIGHT, HEAD_WEIGHT], rel=1e-5)
    assert not rows[2:].any()  # nothing known: no evidence, not a made-up direction
    assert HEAD_WORDS == 2
    short = rows[1]  # one word: its first words are all of it
    assert np.allclose(short[:dim] / WEIGHT, short[dim:] / HEAD_WEIGHT, atol=1e-6)
    long = rows[0]
    assert not np.allclose(long[:dim] / WEIGHT, long[dim:] / HEAD_WEIGHT, atol=1e-3)
    assert np.array_equal(block.matrix(["hi"])[0], short)  # alone or in a batch, the same row


def test_related_words_are_closer_than_unrelated_ones() -> None:
    dim = load_table().dim
    car, auto, banana = (VectorBlock().matrix([w])[0, :dim] for w in ("car", "automobile", "banana"))
    assert float(car @ auto) > float(car @ banana)


def test_big_bots_use_the_vectors_and_small_ones_do_not(tmp_path: Path) -> None:
    texts, labels = big_bot_texts(copies=8)
    assert len(texts) > BIG_BOT
    big = TfidfModel(texts, labels)
    assert big.vectors is not None
    assert big.coef.shape[0] == len(big.words.vocab) + len(big.chars.vocab) + 2 * load_table().dim
    small = TfidfModel(texts[::10], labels[::10])
    assert small.vectors is None and small.coef.shape[0] == len(small.words.vocab) + len(small.chars.vocab)
    assert TfidfModel(texts[::10], labels[::10], vectors=True).vectors is not None
    assert TfidfModel(texts, labels, vectors=False).vectors is None
    probs = big.predict_proba(["what is the forecast for tomorrow", "🙂"])
    assert big.classes[int(probs[0].argmax())] == "weather" and probs[0].sum() == pytest.approx(1.0)
    assert not probs[1].any()  # no known n-gram: no evidence, even though vectors exist
    batch = ["show me a flight", "any song for tomorrow", "my bank balance please", "hi"] * 3
    assert np.array_equal(big.predict_proba(batch), np.vstack([big.predict_proba([t]) for t in batch]))
    again = pickle.loads(pickle.dumps(big))  # the cache pickles the model, never the table
    assert "table" not in vars(again.vectors)
    assert np.array_equal(again.predict_proba(["book me a hotel"]), big.predict_proba(["book me a hotel"]))


GERMAN = {"wetter": ["wetter", "regen", "vorhersage", "sonnig"], "musik": ["lied", "musik", "wiedergabeliste"],
          "essen": ["rezept", "abendessen", "kochen", "mahlzeit"], "reise": ["flug", "reise", "hotel", "fahrkarte"]}
GERMAN_FRAMES = ["erzähl mir etwas über {}", "ich brauche hilfe mit meinem {}", "wie ist das {} heute",
                 "zeig mir bitte {}", "kannst du {} für mich finden", "gibt es neuigkeiten zu {}",
                 "ich möchte jetzt {}", "wo finde ich {}", "{} für morgen bitte", "gib mir die details zu {}"]


def test_auto_leaves_the_vectors_out_of_a_big_bot_in_another_language() -> None:
    texts = [f"{frame.format(word)} {k}" for words in GERMAN.values() for k in range(20)
             for frame in GERMAN_FRAMES for word in words]
    labels = [intent for intent, words in GERMAN.items() for _ in range(20 * len(GERMAN_FRAMES) * len(words))]
    assert len(texts) == len(labels) > BIG_BOT
    assert known_share(texts) < MIN_KNOWN_SHARE <= known_share(big_bot_texts(copies=1)[0])
    german = TfidfModel(texts, labels)
    assert german.vectors is None and german.profile is BIG  # the English table would be noise here
    assert TfidfModel(texts, labels, vectors=True).vectors is not None


def test_vectors_carry_a_word_the_bot_never_saw() -> None:
    texts, labels = big_bot_texts(copies=1)
    with_vectors = TfidfModel(texts, labels, vectors=True)
    without = TfidfModel(texts, labels, vectors=False)
    unseen = {"umbrella": "weather", "guitar": "music", "pasta": "food", "airport": "travel", "loan": "money",
              "nurse": "health"}
    assert set(unseen.values()) == set(TOPICS) and not set(unseen) & {w for ws in TOPICS.values() for w in ws}
    for message, intent in unseen.items():
        p_with = with_vectors.predict_proba([message])[0]
        p_without = without.predict_proba([message])[0]
        idx = with_vectors.classes.index(intent)
        assert with_vectors.classes[int(p_with.argmax())] == intent, message
        assert p_with[idx] > p_without[idx], message


def config_with(word_vectors: bool | None) -> IntentsConfig:
    texts, labels = big_bot_texts(copies=1)
    intents = {name: IntentDef(name, tuple(t for t, l in zip(texts, labels) if l == name)) for name in TOPICS}
    return IntentsConfig(intents=intents, entities={}, router=RouterSettings(threshold=0.3, word_vectors=word_vectors))


def test_the_setting_keys_the_router_cache(tmp_path: Path) -> None:
    auto, on = config_with(None), config_with(True)
    assert auto.digest() != on.digest()
    assert cache_path(tmp_path, auto.digest()).name.endswith(f"-wv{TABLE_SHA256[:8]}.pkl")
    first = Router(on, cache_dir=tmp_path)
    assert first.model.vectors is not None and not first.from_cache  # type: ignore[attr-defined]
    assert first.describe().startswith(f"tfidf + word vectors, {len(TOPICS)} intents; built in ")
    again = Router(on, cache_dir=tmp_path)
    assert again.from_cache and "; loaded from the cache in " in again.describe()
    small = Router(auto, cache_dir=tmp_path)
    assert not small.from_cache and small.model.vectors is None  # type: ignore[attr-defined]
    assert small.describe().startswith(f"tfidf, {len(TOPICS)} intents; built in ")
    assert Router(replace(auto, router=replace(auto.router, word_vectors=False)), cache_dir=tmp_path).from_cache is False


def minimal_bot_with(tmp_path: Path, setting: str) -> Path:
    """The minimal test bot with ``word_vectors: <setting>`` in its router block (line 4, column 17)."""
    shutil.copytree(MINIMAL, tmp_path / "bot")
    main = tmp_path / "bot" / "intents.yaml"
    text = main.read_text()
    assert "router:\n  threshold" in text
    main.write_text(text.replace("router:\n", f"router:\n  word_vectors: {setting}\n", 1))
    return tmp_path / "bot"


@pytest.mark.parametrize(("written", "expected"), [("auto", None), ("on", True), ("off", False), ("true", True),
                                                    ("false", False)])
def test_intents_yaml_sets_word_vectors(tmp_path: Path, written: str, expected: bool | None) -> None:
    assert load(minimal_bot_with(tmp_path, written)).intents.router.word_vectors is expected


def test_a_wrong_word_vectors_value_is_a_load_error_with_its_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(minimal_bot_with(tmp_path, "sometimes"))
    text = caught.value.format()
    assert "intents.yaml:4:17" in text and "sometimes" in text and "one of 'auto', true, false" in text, text


def test_the_table_reads_with_numpy_alone(tmp_path: Path) -> None:
    table = WordVectors(TABLE)
    assert table.vectors.dtype == np.int8 and table.scales.dtype == np.float32
    assert len(table.ids) == table.vectors.shape[0] > 20_000


def test_evaluate_decides_auto_on_the_whole_bot(monkeypatch: pytest.MonkeyPatch) -> None:
    texts, labels = big_bot_texts(copies=8)  # over BIG_BOT; half of it, a fold's training set, is not
    assert len(texts) > BIG_BOT >= len(texts) // 2
    intents = {name: IntentDef(name, tuple(t for t, l in zip(texts, labels) if l == name)) for name in TOPICS}
    config = IntentsConfig(intents=intents, entities={}, router=RouterSettings(threshold=0.3))
    with_vectors: list[bool] = []
    build = Router.__init__

    def spy(self: Router, *args: object, **kwargs: object) -> None:
        build(self, *args, **kwargs)  # type: ignore[arg-type]
        with_vectors.append(self.model.vectors is not None)  # type: ignore[attr-defined]

    monkeypatch.setattr(Router, "__init__", spy)
    report = cross_validate(config, folds=2)
    assert with_vectors == [True, True] and len(report.outcomes) == len(set(texts))

