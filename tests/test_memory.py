"""Slots with ``remember``: a value the visitor named in an earlier turn fills a later flow's slot."""
from __future__ import annotations

import textwrap

import pytest

from bot.config import REMEMBER_TURNS, load_config
from bot.errors import ConfigErrors
from bot.testing import ChatTester

INTENTS = """\
    version: 1
    router: {threshold: 0.5, margin: 0.02}
    entities:
      colour:
        values:
          red: [red, crimson]
          blue: [blue, navy]
          green: [green]
      size:
        values:
          small: [small]
          large: [large, big]
    intents:
      paint:
        description: Paint the car
        examples: [paint my car, I want a new paint job, repaint it, paint it please, can you paint it,
                   a paint job for my car, I'd like it painted, paint the car]
      touch_up:
        description: Touch up the paint
        examples: [touch up the scratches, fix a scratch, touch up my car, small scratch repair,
                   touch up paint, repair the scratches, scratch touch up please, cover a scratch]
      compare:
        description: Compare two colours
        examples: [compare colours, "compare it with {colour}", which colour is better, "compare {colour} and {colour}",
                   colour comparison, compare the colours, "what about {colour} instead", compare them]
      like:
        description: Say what you like
        examples: ["I like {colour}", "{colour} is nice", "I love {colour}", "{colour} looks great",
                   "my favourite is {colour}", "what a nice {colour}", "{colour} cars are lovely", "I really like {colour}"]
      weather:
        description: Ask about the weather
        examples: [what's the weather, is it raining, weather forecast, will it be sunny, how cold is it,
                   is it going to snow, temperature outside, weather today]
      out_of_scope:
        examples: [tell me a joke, who won the football, recipe for soup, what is the capital of peru,
                   sing a song, how old is the universe, seven, banana bread]
"""

PAINT = """\
    version: 1
    description: painting
    trigger: paint
    slots:
      colour: {entity: colour, ask: "Which colour?", remember: true, validate: check_colour}
    steps:
      - ask: colour
      - say: "Painting it {{ slots.colour }}."
"""
TOUCH_UP = """\
    version: 1
    trigger: touch_up
    slots:
      colour: {entity: colour, ask: "Which colour is the car?"}
    steps:
      - ask: colour
      - say: "Touching up in {{ slots.colour }}."
"""
COMPARE = """\
    version: 1
    trigger: compare
    slots:
      first: {entity: colour, ask: "First colour?", remember: 2}
      second: {entity: colour, ask: "Second colour?", remember: 2}
    steps:
      - ask: first
      - ask: second
      - say: "{{ slots.first }} against {{ slots.second }}."
"""
LIKE = """\
    version: 1
    trigger: like
    steps:
      - say: "Nice!"
"""
WEATHER = """\
    version: 1
    trigger: weather
    steps:
      - say: "It's sunny."
"""


def check_colour(ctx):
    """The paint shop is out of green."""
    return "We're out of green paint." if ctx.slots["colour"] == "green" else None


@pytest.fixture
def chat(make_bot) -> ChatTester:
    bot = make_bot(INTENTS, {"paint": PAINT, "touch_up": TOUCH_UP, "compare": COMPARE, "like": LIKE,
                             "weather": WEATHER}, {"check_colour": check_colour})
    return ChatTester(bot)


def test_a_remembering_slot_takes_the_value_named_in_an_earlier_turn(chat: ChatTester) -> None:
    assert chat.say("I like navy").text == "Nice!"
    painted = chat.say("can you paint it")
    assert painted.text == "Painting it blue."
    assert painted.slots == {} and painted.flow is None


def test_a_slot_without_remember_still_asks(chat: ChatTester) -> None:
    chat.say("I like red")
    assert chat.say("touch up the scratches").text == "Which colour is the car?"


def test_the_message_itself_wins_over_memory(chat: ChatTester) -> None:
    chat.say("I like red")
    assert chat.say("paint it blue please").text == "Painting it blue."


def test_a_slot_answer_is_remembered_too(chat: ChatTester) -> None:
    assert chat.say("touch up the scratches").text == "Which colour is the car?"
    assert chat.say("crimson").text == "Touching up in red."
    assert chat.say("paint my car").text == "Painting it red."


def test_the_last_mention_counts(chat: ChatTester) -> None:
    chat.say("I like red")
    chat.say("blue looks great")
    assert chat.say("paint my car").text == "Painting it blue."


def test_memory_lasts_the_given_number_of_turns(chat: ChatTester) -> None:
    chat.say("I like red")
    for _ in range(REMEMBER_TURNS - 1):
        chat.say("what's the weather")
    assert chat.say("paint my car").text == "Painting it red."   # named REMEMBER_TURNS turns ago
    chat.say("I like blue")
    for _ in range(REMEMBER_TURNS):
        chat.say("what's the weather")
    assert chat.say("paint my car").text == "Which colour?"      # one turn too long ago


def test_a_remembered_value_the_slot_refuses_is_asked_for(chat: ChatTester) -> None:
    chat.say("I like green")
    asked = chat.say("paint my car")
    assert asked.text == "Which colour?"
    assert "green" not in asked.text


def test_two_slots_of_one_entity_do_not_take_the_same_value(chat: ChatTester) -> None:
    chat.say("I like red")
    compared = chat.say("compare it with navy")
    assert compared.text == "blue against red."     # the message's colour first, memory for the other
    chat.say("I like green")
    assert chat.say("compare colours").text == "Second colour?"   # one remembered value fills one slot
    assert chat.say("red").text == "green against red."


def test_a_turn_that_names_two_values_leaves_nothing_to_recall(chat: ChatTester) -> None:
    chat.say("I like red")
    assert chat.say("compare red and navy").text == "red against blue."
    assert chat.say("paint my car").text == "Which colour?"     # "it" could be either


def test_restart_forgets_and_only_remembered_entities_are_kept(chat: ChatTester) -> None:
    chat.say("I like a big red car")
    with chat.bot.store.open(chat.conversation_id) as conv:
        state = conv.state
    assert set(state["memory"]) == {"colour"}       # size is named but no slot remembers it
    chat.say("restart")
    assert chat.say("paint my car").text == "Which colour?"


def test_a_bot_without_remember_keeps_no_memory(make_bot) -> None:
    forgetful = PAINT.replace(", remember: true", "")
    chat = ChatTester(make_bot(INTENTS, {"paint": forgetful, "touch_up": TOUCH_UP, "compare": COMPARE.replace("remember: 2", ""),
                                         "like": LIKE, "weather": WEATHER}, {"check_colour": check_colour}))
    chat.say("I like red")
    with chat.bot.store.open(chat.conversation_id) as conv:
        assert "memory" not in conv.state


BAD_SLOTS = {
    "no entity": ("      colour: {ask: 'Which colour?', remember: true}\n",
                  "flows/paint.yaml:4:38: slot 'colour': 'remember' reuses"),
    "negative": ("      colour: {entity: colour, remember: -1}\n", "flows/paint.yaml:4:"),
    "not a number": ("      colour: {entity: colour, remember: maybe}\n", "flows/paint.yaml:4:"),
}


@pytest.mark.parametrize("case", list(BAD_SLOTS))
def test_remember_mistakes_are_reported_with_their_place(tmp_path, case: str) -> None:
    slot, message = BAD_SLOTS[case]
    (tmp_path / "flows").mkdir()
    (tmp_path / "intents.yaml").write_text(textwrap.dedent(INTENTS), encoding="utf-8")
    for name, text in (("touch_up", TOUCH_UP), ("compare", COMPARE), ("like", LIKE), ("weather", WEATHER)):
        (tmp_path / "flows" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    (tmp_path / "flows" / "paint.yaml").write_text(
        "version: 1\ntrigger: paint\nslots:\n" + slot + "steps:\n  - ask: colour\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path, discover_actions=False)
    assert any(str(error).startswith(message) for error in caught.value.errors), caught.value.format()


def test_a_value_the_bot_no_longer_knows_is_not_recalled(make_bot) -> None:
    """A hot reload can drop an entity value that a conversation still remembers."""
    chat = ChatTester(make_bot(INTENTS, {"paint": PAINT, "touch_up": TOUCH_UP, "compare": COMPARE, "like": LIKE,
                                         "weather": WEATHER}, {"check_colour": check_colour}))
    chat.say("I like navy")
    reloaded = make_bot(INTENTS.replace("          blue: [blue, navy]\n", ""),
                        {"paint": PAINT, "touch_up": TOUCH_UP, "compare": COMPARE, "like": LIKE, "weather": WEATHER},
                        {"check_colour": check_colour})
    reloaded.store = chat.bot.store  # the same conversations, as after a reload
    chat.bot = reloaded
    assert chat.say("paint my car").text == "Which colour?"


def test_the_stored_trace_says_which_slots_came_from_memory(chat: ChatTester) -> None:
    chat.say("I like navy")
    painted = chat.say("paint my car")
    assert painted.route["trace"]["recalled"] == {"colour": "blue"}
    stored = chat.bot.store.transcript(chat.conversation_id)
    assert stored[-1]["route"]["trace"]["recalled"] == {"colour": "blue"}
    assert "recalled" not in stored[0]["route"]["trace"]      # nothing came from memory there
