"""The dialogue engine: every step kind, slots, the flow stack, commands (issue: dialogue engine)."""
from __future__ import annotations

import logging
import threading

import pytest

from bot.actions import Reply
from bot.errors import UnknownConversation
from bot.testing import ChatTester, FakeLLM
from botdata import NOW

INTENTS = """\
    version: 1
    router: {threshold: 0.5, margin: 0.02}
    entities:
      colour:
        values:
          red: [red, crimson]
          blue: [blue, navy]
    intents:
      paint:
        description: Choose a paint colour
        examples: [paint my car, I want a new colour, repaint it, change the paint, pick a colour for the car,
                   paint job please, colour options for the paint, I'd like it painted]
      weather:
        description: Ask about the weather
        examples: [what's the weather, is it raining, weather forecast, will it be sunny, how cold is it,
                   is it going to snow, temperature outside, weather today]
      out_of_scope:
        examples: [tell me a joke, who won the football, recipe for soup, what is the capital of peru,
                   sing a song, how old is the universe, green, purple, seven, banana bread]
      loop:
        description: Test a goto loop
        examples: [loop forever, spin around, endless loop please, go in circles, repeat forever,
                   infinite loop, keep looping, loop loop loop]
"""

PAINT = """\
    version: 1
    description: choosing your paint
    trigger: paint
    slots:
      colour: {entity: colour, ask: "Which colour?", reprompt: "Red or blue?", max_attempts: 2}
      coats: {ask: "How many coats?", regex: '^[1-3]$', reprompt: "1, 2 or 3 coats?"}
      price: {}
    error: "The paint shop is closed."
    steps:
      - say: ["Let's paint.", "Painting time."]
      - ask: colour
      - ask: coats
      - set: {price: "{{ (slots.coats | int) * 100 }}"}
      - action: quote
      - if: result.cheap
        then:
          - say: "Only {{ slots.price | money }} for {{ slots.colour }}!"
        else:
          - say: "That is {{ slots.price | money }}."
      - goto: done
      - say: never said
      - id: done
        end: "Enjoy your {{ slots.colour }} car."
"""

WEATHER = """\
    version: 1
    description: the weather
    trigger: weather
    steps:
      - say: "It's sunny."
"""

FALLBACK = """\
    version: 1
    system_prompt: You are a paint shop assistant.
    unavailable: "I can only talk about paint."
"""

LOOP = """\
    version: 1
    trigger: loop
    steps:
      - id: top
        say: round
      - goto: top
"""


def quote(ctx):
    return Reply(result={"cheap": int(ctx.slots["price"]) <= 200})


def paint_bot(make_bot, **actions):
    return make_bot(INTENTS, {"paint": PAINT, "weather": WEATHER, "loop": LOOP}, {"quote": quote, **actions})


def test_say_ask_set_action_if_goto_end(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    first = chat.say("I want to paint my car red")
    assert first.text == "Let's paint.\nHow many coats?"      # colour came with the message
    assert first.flow == "paint" and first.slots["colour"] == "red"
    done = chat.say("2")
    assert [r["text"] for r in done.replies] == ["Only $200 for red!", "Enjoy your red car."]
    assert done.flow is None and done.kind == "flow"


def test_else_branch_and_variants_rotate(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    chat.say("paint my car")
    assert chat.say("blue").text == "How many coats?"
    assert chat.say("3").text == "That is $300.\nEnjoy your blue car."
    second = chat.say("repaint it")
    assert second.replies[0]["text"] == "Painting time."     # the other variant


def test_reprompt_then_give_up_after_max_attempts(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    chat.say("paint my car")
    assert chat.say("green").text == "Red or blue?"
    gave_up = chat.say("purple")
    assert gave_up.text.startswith("Sorry, I still couldn't use that answer")
    assert gave_up.flow is None


def test_a_validators_words_are_said_as_they_are_not_run_as_a_template(make_bot) -> None:
    flow = PAINT.replace('coats: {ask: "How many coats?", regex: \'^[1-3]$\', reprompt: "1, 2 or 3 coats?"}',
                         'coats: {ask: "How many coats?", validate: check_coats}')
    assert flow != PAINT

    def check_coats(ctx):  # echoes the visitor's answer, as handlers may
        return None if str(ctx.slots["coats"]) in ("1", "2", "3") else f"{ctx.slots['coats']} is not 1, 2 or 3."

    bot = make_bot(INTENTS, {"paint": flow, "weather": WEATHER, "loop": LOOP}, {"quote": quote, "check_coats": check_coats})
    chat = ChatTester(bot)
    chat.say("paint it red")
    assert chat.say("{{ 7 * 7 }}").text == "{{ 7 * 7 }} is not 1, 2 or 3."


def test_regex_slot_rejects_then_accepts(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    chat.say("paint it red please")
    assert chat.say("seven").text == "1, 2 or 3 coats?"
    assert "Enjoy your red car." in chat.say("1").text


def test_interruption_and_resume(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    chat.say("paint my car")
    detour = chat.say("what's the weather")
    assert detour.text == "It's sunny.\nShall we get back to choosing your paint?"
    assert detour.buttons == ["Yes", "No"]
    back = chat.say("yes")
    assert back.text == "Which colour?" and back.flow == "paint"
    assert "How many coats?" in chat.say("red").text


def test_declining_resume_drops_the_paused_flow(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    chat.say("paint my car")
    chat.say("what's the weather")
    no = chat.say("no")
    assert no.text == "No problem. What else can I do for you?" and no.flow is None


def test_slot_correction_mid_flow(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    chat.say("paint my car red")
    fixed = chat.say("actually make it navy")
    assert fixed.text == "Got it, I've changed that.\nHow many coats?"
    assert fixed.slots["colour"] == "blue"


def test_handler_that_raises_gives_the_flow_error_text_and_logs_the_step(make_bot, caplog) -> None:
    def quote(ctx):
        raise RuntimeError("database down")

    chat = ChatTester(paint_bot(make_bot, quote=quote))
    chat.say("paint it red")
    with caplog.at_level(logging.ERROR):
        turn = chat.say("2")
    assert turn.text == "The paint shop is closed."
    assert turn.error == "action" and turn.flow is None
    assert any("flows/paint.yaml:14" in r.getMessage() for r in caplog.records)
    assert "database down" not in turn.text
    assert chat.say("what's the weather").text == "It's sunny."   # the conversation goes on


def test_handler_returning_wrong_type(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot, quote=lambda ctx: 42))
    chat.say("paint it red")
    assert chat.say("2").text == "The paint shop is closed."


def hung_quote(release: "threading.Event"):
    """A quote handler that waits for ``release`` (at most 5 s): a handler stuck on a slow service."""
    def quote(ctx):
        release.wait(5)
        return Reply(result={"cheap": True})
    return quote


@pytest.mark.parametrize("own_limit", [False, True])
def test_a_handler_that_hangs_gives_the_error_text_at_its_time_limit(make_bot, caplog, own_limit: bool) -> None:
    from bot.actions import action

    release = threading.Event()
    quote = action(timeout=0.2)(hung_quote(release)) if own_limit else hung_quote(release)
    bot = make_bot(INTENTS, {"paint": PAINT, "weather": WEATHER, "loop": LOOP}, {"quote": quote},
                   action_timeout=30 if own_limit else 0.2)  # the handler's own limit wins over the bot's
    chat = ChatTester(bot)
    chat.say("paint it red")
    with caplog.at_level(logging.ERROR):
        assert chat.say("2").text == "The paint shop is closed."
    release.set()
    assert any("took longer than 0.2 s" in r.getMessage() for r in caplog.records)


def test_a_handler_without_a_time_limit_runs_in_the_requests_thread(make_bot) -> None:
    from bot.actions import action

    seen = []

    @action(timeout=None)
    def quote(ctx):
        seen.append(threading.current_thread())
        if ctx.slots.get("colour") == "blue":
            raise RuntimeError("out of paint")
        return Reply(result={"cheap": True})

    chat = ChatTester(paint_bot(make_bot, quote=quote))
    chat.say("paint it red")
    assert chat.say("2").text == "Only $200 for red!\nEnjoy your red car."
    assert seen == [threading.current_thread()]
    chat.say("paint it blue")
    assert chat.say("3").text == "The paint shop is closed."  # a failure is handled as on the handler threads


@pytest.mark.parametrize("bad", [0, -1, "5", True])
def test_action_timeout_must_be_seconds_or_none(bad) -> None:
    from bot.actions import action

    with pytest.raises(TypeError, match="timeout"):
        action(timeout=bad)


def test_handler_missing_at_run_time(make_bot) -> None:
    bot = paint_bot(make_bot)
    bot.actions._specs.pop("quote")
    chat = ChatTester(bot)
    chat.say("paint it blue")
    assert chat.say("1").text == "The paint shop is closed."


def test_goto_loop_is_bounded(make_bot, caplog) -> None:
    chat = ChatTester(paint_bot(make_bot))
    with caplog.at_level(logging.ERROR):
        turn = chat.say("loop forever")
    assert turn.replies[-1]["text"].startswith("Sorry, something went wrong")
    assert any("steps in one turn" in r.getMessage() for r in caplog.records)


def test_commands_cancel_restart_help(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    chat.say("paint my car")
    helped = chat.say("help")
    assert helped.kind == "command" and helped.replies[-1]["text"] == "Which colour?"
    cancelled = chat.say("cancel")
    assert cancelled.flow is None and cancelled.text.startswith("OK, I've stopped that")
    chat.say("paint it red")
    restarted = chat.say("start over")
    assert restarted.flow is None and restarted.kind == "command"


def test_fallback_goes_to_the_llm_with_history(make_bot) -> None:
    llm = FakeLLM(["I'm only a car bot, but I'd say yes."])
    chat = ChatTester(make_bot(INTENTS, {"paint": PAINT, "weather": WEATHER, "loop": LOOP, "fallback": FALLBACK},
                               {"quote": quote}, llm=llm))
    chat.say("what's the weather")
    turn = chat.say("do you like quantum chromodynamics")
    assert turn.kind == "fallback" and turn.text == "I'm only a car bot, but I'd say yes."
    sent = llm.calls[0]
    assert sent[-1] == {"role": "user", "content": "do you like quantum chromodynamics"}
    assert {"role": "assistant", "content": "It's sunny."} in sent


def test_fallback_without_fallback_flow_uses_built_in_text(make_bot) -> None:
    chat = ChatTester(paint_bot(make_bot))
    turn = chat.say("do you like quantum chromodynamics")
    assert turn.kind == "fallback"
    assert turn.text.startswith("Sorry, I can't help with that here")


def test_fallback_offline_says_the_unavailable_text(make_bot) -> None:
    bot = make_bot(INTENTS, {"paint": PAINT, "weather": WEATHER, "loop": LOOP, "fallback": FALLBACK},
                   {"quote": quote}, llm=FakeLLM(available=False))
    turn = ChatTester(bot).say("do you like quantum chromodynamics")
    assert turn.kind == "fallback" and turn.text == "I can only talk about paint."
    assert turn.error == "no_key" and turn.llm == {"model": "fake-llm", "error": "no_key"}


def test_llm_step_uses_its_own_prompt(make_bot) -> None:
    llm = FakeLLM(["Red suits you."])
    flow = WEATHER.replace("- say: \"It's sunny.\"", "- llm: \"Suggest a colour for {{ text }}\"")
    bot = make_bot(INTENTS, {"paint": PAINT, "weather": flow, "loop": LOOP, "fallback": FALLBACK},
                   {"quote": quote}, llm=llm)
    turn = ChatTester(bot).say("what's the weather")
    assert turn.text == "Red suits you."
    assert llm.calls[0][0]["role"] == "system"
    assert llm.calls[0][0]["content"].startswith("Suggest a colour for what's the weather")


def test_unknown_conversation_id_starts_afresh(minimal_bot) -> None:
    turn = minimal_bot.handle("never-seen-before-id", "hello", now=NOW)
    assert turn.conversation_id == "never-seen-before-id"
    assert turn.intent == "greet"


def test_must_exist_refuses_an_unknown_id_and_stores_nothing(minimal_bot) -> None:
    with pytest.raises(UnknownConversation):
        minimal_bot.handle("never-seen-before-id", "hello", now=NOW, must_exist=True)
    assert minimal_bot.store.transcript("never-seen-before-id") is None
    started = minimal_bot.handle(None, "hello", now=NOW, must_exist=True)  # no id: a new conversation
    again = minimal_bot.handle(started.conversation_id, "hello", now=NOW, must_exist=True)
    assert again.conversation_id == started.conversation_id
    assert len(minimal_bot.store.transcript(started.conversation_id)) == 2


def test_must_exist_answers_another_users_conversation_as_unknown(minimal_bot) -> None:
    cid = minimal_bot.handle(None, "hello", user={"id": "alice"}, now=NOW).conversation_id
    for stranger in (None, {"id": "mallory"}):
        with pytest.raises(UnknownConversation):
            minimal_bot.handle(cid, "hello", user=stranger, now=NOW, must_exist=True)
    assert minimal_bot.handle(cid, "hello", user={"id": "alice"}, now=NOW, must_exist=True).intent == "greet"
    assert len(minimal_bot.store.transcript(cid)) == 2  # the refused messages left no turn
    assert minimal_bot.store.owner_of(cid) == "alice"


def test_template_error_at_run_time_is_logged_not_shown(make_bot, caplog) -> None:
    flow = PAINT.replace("That is {{ slots.price | money }}.", "That is {{ result.missing.deeper }}.")
    chat = ChatTester(make_bot(INTENTS, {"paint": flow, "weather": WEATHER, "loop": LOOP}, {"quote": quote}))
    chat.say("paint it blue")
    with caplog.at_level(logging.ERROR):
        turn = chat.say("3")
    assert turn.text == "The paint shop is closed."
    assert "missing" not in turn.text
    assert any("flows/paint.yaml" in r.getMessage() for r in caplog.records)


def test_same_text_same_route_across_turns(minimal_bot) -> None:
    a = minimal_bot.handle(None, "how much is the X3?", now=NOW)
    b = minimal_bot.handle(None, "how much is the X3?", now=NOW)
    assert (a.intent, a.route["score"], a.text) == (b.intent, b.route["score"], b.text)


def test_on_fail_goes_to_the_named_step_after_max_attempts(make_bot) -> None:
    flow = """\
        version: 1
        trigger: weather
        slots:
          sure: {ask: "Umbrella?", choices: ["yes", "no"], max_attempts: 1, on_fail: skip}
        steps:
          - ask: sure
          - say: "You chose {{ slots.sure }}."
          - id: skip
            end: "Never mind the umbrella."
    """
    chat = ChatTester(make_bot(INTENTS, {"paint": PAINT, "weather": flow, "loop": LOOP}, {"quote": quote}))
    assert chat.say("what's the weather").text == "Umbrella?"
    turn = chat.say("perhaps")
    assert turn.text == "Never mind the umbrella." and turn.flow is None
