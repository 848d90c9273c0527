"""Every kind of YAML/action mistake gets one exact `file:line:col: message` (issue: foundation)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigErrors

MIN = Path(__file__).parent / "data" / "minimal"
INTENTS = (MIN / "intents.yaml").read_text(encoding="utf-8")
PRICE = (MIN / "flows/ask_price.yaml").read_text(encoding="utf-8")

# Each case: a broken copy of the minimal bot (file -> new content, None deletes it).
CASES = {
 'tab': {'intents.yaml': INTENTS.replace('  threshold: 0.3', '\tthreshold: 0.3')},
 'unclosed': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - say: "Hello"\n    buttons: [Prices, Book\n'},
 'dupkey': {'flows/greet.yaml': 'version: 1\ntrigger: greet\ntrigger: greet\nsteps:\n  - say: Hello\n'},
 'unknown_key_intent': {'intents.yaml': INTENTS.replace('    description: Say hello\n', '    description: Say hello\n    exampels: [yo]\n')},
 'unknown_key_flow': {'flows/greet.yaml': 'version: 1\ntrigger: greet\ntriger: greet\nsteps:\n  - say: Hello\n'},
 'wrong_type': {'intents.yaml': INTENTS.replace('threshold: 0.3', 'threshold: high')},
 'missing_steps': {'flows/greet.yaml': 'version: 1\ntrigger: greet\n'},
 'missing_version': {'flows/greet.yaml': 'trigger: greet\nsteps:\n  - say: Hello\n'},
 'version_2': {'flows/greet.yaml': 'version: 2\ntrigger: greet\nsteps:\n  - say: Hello\n'},
 'unknown_intent': {'flows/greet.yaml': 'version: 1\ntrigger: gret\nsteps:\n  - say: Hello\n'},
 'unknown_action': {'flows/ask_price.yaml': PRICE.replace('action: lookup_price', 'action: lookup_prce')},
 'unknown_slot': {'flows/ask_price.yaml': PRICE.replace('- ask: car_model', '- ask: car_modle')},
 'unknown_entity': {'flows/ask_price.yaml': PRICE.replace('{entity: car_model,', '{entity: car_modl,')},
 'unknown_goto': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - say: Hello\n  - goto: ask_prise\n'},
 'unreachable': {'flows/orphan.yaml': 'version: 1\nsteps:\n  - say: Nobody gets here\n'},
 'undefined_var': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - say: "Hello {{ usr.name }}"\n'},
 'undefined_slot': {'flows/ask_price.yaml': PRICE.replace('{{ slots.car_label }} costs {{ result.price | money }} and', '{{ slots.car_lable }} costs {{ result.price | money }} and')},
 'dup_intent_files': {'intents/more.yaml': 'version: 1\nintents:\n  greet:\n    examples: [howdy]\n'},
 'empty_examples': {'intents.yaml': INTENTS.replace('examples: [hi, hello, hey there, good morning, hello bot, hi there, hey, good evening]', 'examples: []')},
 'bad_regex': {'intents.yaml': INTENTS.replace(r"'\bprice of {car_model}\b'", r"'\bprice (of {car_model}\b'")},
 'non_utf8': {'flows/greet.yaml': b'version: 1\ntrigger: greet\nsteps:\n  - say: "Gr\xfc\xdfe"\n'},
 'empty_file': {'flows/greet.yaml': ''},
 'two_kinds': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - say: Hello\n    goto: greet\n'},
 'template_syntax': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - say: "Hello {{ user.name "\n'},
 'catastrophic': {'intents.yaml': INTENTS.replace(r"'\bprice of {car_model}\b'", r"'(a+)+b'")},
 'enum': {'intents.yaml': INTENTS.replace('  margin: 0.02\n', '  margin: 0.02\n  classifier: tfid\n')},
 'bad_name': {'intents.yaml': INTENTS.replace('  opening_hours:\n', '  Opening-Hours:\n')},
 'dup_step_id': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - id: hello\n    say: Hello\n  - id: hello\n    say: Hi\n'},
 'if_without_then': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - if: "text"\n  - say: Hello\n'},
 'unknown_placeholder': {'intents.yaml': INTENTS.replace('"what does the {car_model} cost"', '"what does the {car_modle} cost"')},
 'no_flow_for_intent': {'flows/opening_hours.yaml': None},
 'dup_action': {'actions/more.py': 'from bot import action\n\n\n@action\ndef lookup_price(ctx):\n    return "dup"\n'},
 'action_syntax': {'actions/broken.py': 'from bot import action\n\n@action\ndef oops(ctx)\n    return 1\n'},
 'action_import_error': {'actions/broken.py': 'import no_such_module_here\n'},
 'no_intents': {'intents.yaml': None},
 'fallback_unknown_key': {'flows/fallback.yaml': 'version: 1\nsystem_prompt: hi\nunavailable: sorry\ntemprature: 0.2\n'},
 'bad_buttons_type': {'flows/greet.yaml': 'version: 1\ntrigger: greet\nsteps:\n  - say: Hello\n    buttons: Prices\n'},
 'shared_example': {'intents.yaml': INTENTS.replace('examples: ["when are you open", ', 'examples: ["when are you open", "Hello  Bot", ')},
 'entity_two_kinds': {'intents.yaml': INTENTS.replace("      sedan_s: [\"Sedan S\", \"s sedan\"]\n", "      sedan_s: [\"Sedan S\", \"s sedan\"]\n    regex: 'x\\d'\n")},
}

EXPECTED = {
    'tab': ["intents.yaml:4:1: YAML syntax error: found character '\\t' that cannot start any token (YAML indentation must use spaces, not tabs)"],
    'unclosed': ["flows/greet.yaml:5:14: YAML syntax error: expected ',' or ']', but got '<stream end>' (a '[' list is not closed with ']'); it was opened on line 5"],
    'dupkey': ["flows/greet.yaml:3:1: YAML syntax error: duplicate key 'trigger' (first defined on line 2)"],
    'unknown_key_intent': ["intents.yaml:15:5: unknown key 'exampels' in intent 'greet' (did you mean 'examples'?); allowed: description, examples, patterns"],
    'unknown_key_flow': ["flows/greet.yaml:3:1: unknown key 'triger' in the file (did you mean 'trigger'?); allowed: description, error, slots, steps, trigger, version"],
    'wrong_type': ["intents.yaml:4:14: 'threshold' must be a number, got 'high'"],
    'missing_steps': ["flows/greet.yaml:1:1: missing required key 'steps' in the file"],
    'missing_version': ["flows/greet.yaml:1:1: missing required key 'version'; add 'version: 1' at the top of the file"],
    'version_2': ["flows/greet.yaml:1:10: 'version' must be 1, got 2"],
    'unknown_intent': ["flows/greet.yaml:2:10: unknown intent 'gret' in 'trigger' (did you mean 'greet'?)", "intents.yaml:13:3: intent 'greet' starts no flow: add a flow file flows/greet.yaml with 'trigger: greet'"],
    'unknown_action': ["flows/ask_price.yaml:11:13: unknown action 'lookup_prce' (did you mean 'lookup_price'?); registered actions: book_drive, lookup_price"],
    'unknown_slot': ["flows/ask_price.yaml:10:10: unknown slot 'car_modle' in 'ask' (did you mean 'car_model'?); declare it under 'slots:' at the top of this flow"],
    'unknown_entity': ["flows/ask_price.yaml:6:3: slot 'car_model' uses unknown entity 'car_modl' (did you mean 'car_model'?); declare it under 'entities:' in intents.yaml or use a built-in one (number, money, date, time, email, phone)"],
    'unknown_goto': ["flows/greet.yaml:5:11: goto target 'ask_prise' is neither a step id in this flow nor a flow (did you mean 'ask_price'?)"],
    'unreachable': ["flows/orphan.yaml:1:1: flow 'orphan' can never start: add 'trigger: <intent>' or a 'goto: orphan' step in another flow"],
    'undefined_var': ["flows/greet.yaml:4:20: undefined template variable 'usr' (did you mean 'user'?); available: slots, result, entities, text, intent, user, flow, options"],
    'undefined_slot': ["flows/ask_price.yaml:14:28: undefined slot 'car_lable' in template (did you mean 'car_label'?); declare it under 'slots:' at the top of this flow"],
    'dup_intent_files': ["intents/more.yaml:3:3: intent 'greet' is defined twice: also at intents.yaml:13"],
    'empty_examples': ["intents.yaml:15:15: 'examples' must not be empty"],
    'bad_regex': ["intents.yaml:21:25: intent 'ask_price': pattern '\\\\bprice (of {car_model}\\\\b': invalid regular expression: missing ), unterminated subpattern"],
    'non_utf8': ['flows/greet.yaml:4:13: file is not valid UTF-8 (byte 0xfc); save it as UTF-8'],
    'empty_file': ["flows/greet.yaml:1:1: the file is empty; it must be a mapping that starts with 'version: 1'"],
    'two_kinds': ['flows/greet.yaml:4:5: step 1 needs exactly one of say, ask, action, set, if, goto, llm, handoff, end; found say, goto'],
    'template_syntax': ["flows/greet.yaml:4:5: template error: unexpected end of template, expected 'end of print statement'."],
    'catastrophic': ["intents.yaml:21:21: intent 'ask_price': pattern '(a+)+b': nested quantifier (like '(a+)+' or '(.*)*') can take exponential time on some messages; rewrite it without a repeat inside a repeat, or make the inner part atomic ('(?>...)') or possessive ('a++')"],
    'enum': ["intents.yaml:6:15: 'classifier' must be one of 'tfidf', 'embeddings', got 'tfid' (did you mean 'tfidf'?)"],
    'bad_name': ["intents.yaml:26:3: 'Opening-Hours' is not a valid name in 'intents': use lower_snake_case (small letters, digits and '_', starting with a letter)"],
    'dup_step_id': ["flows/greet.yaml:7:5: step id 'hello' is used twice in this flow (first at line 5)"],
    'if_without_then': ["flows/greet.yaml:4:5: an 'if' step needs 'then:' steps"],
    'unknown_placeholder': ["intents.yaml:18:77: intent 'ask_price' uses unknown entity {car_modle} in 'what does the {car_modle} cost' (did you mean 'car_model'?)"],
    'no_flow_for_intent': ["intents.yaml:26:3: intent 'opening_hours' starts no flow: add a flow file flows/opening_hours.yaml with 'trigger: opening_hours'"],
    'dup_action': ["actions/more.py:4:1: action 'lookup_price' is defined twice: at actions/cars.py:7 and at actions/more.py:4; rename one with @action(name=...)"],
    'action_syntax': ["actions/broken.py:4:14: Python syntax error: expected ':'"],
    'action_import_error': ["actions/broken.py:1:1: importing this file failed: ModuleNotFoundError: No module named 'no_such_module_here'"],
    'fallback_unknown_key': ["flows/fallback.yaml:4:1: unknown key 'temprature' in the file (did you mean 'temperature'?); allowed: budgets, buttons, description, history, knowledge, max_retries, max_tokens, model, system_prompt, temperature, timeouts, unavailable, version"],
    'bad_buttons_type': ["flows/greet.yaml:5:14: 'buttons' must be a list, got 'Prices'"],
    'shared_example': ["intents.yaml:28:37: example 'Hello  Bot' of intent 'opening_hours' is also an example of intent 'greet' (intents.yaml:15:52); a message can mean only one intent: keep it under one of them"],
    'entity_two_kinds': ["intents.yaml:7:3: entity 'car_model' needs exactly one of 'values', 'regex' or 'type'; it has values and regex"],
}


def broken_copy(tmp_path: Path, name: str) -> Path:
    bot = tmp_path / name
    shutil.copytree(MIN, bot, ignore=shutil.ignore_patterns("var", "__pycache__"))
    for file, content in CASES[name].items():
        path = bot / file
        if content is None:
            path.unlink()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    return bot


def test_minimal_bot_is_valid() -> None:
    config = load_config(MIN)
    assert sorted(config.flows) == ["ask_price", "book_test_drive", "greet", "opening_hours"]
    assert config.fallback is not None and config.fallback.history_turns == 4
    assert "lookup_price" in config.action_names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_mistake_is_reported_with_file_line_col(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(broken_copy(tmp_path, name))
    assert [str(e) for e in info.value.errors] == EXPECTED[name]


def test_there_are_at_least_25_distinct_mistakes() -> None:
    assert len(EXPECTED) >= 25


def test_directory_without_intents_yaml(tmp_path: Path) -> None:
    bot = broken_copy(tmp_path, "no_intents")
    with pytest.raises(ConfigErrors) as info:
        load_config(bot)
    (error,) = info.value.errors
    assert (error.file, error.line) == ("intents.yaml", 0)
    assert error.message.startswith(f"no intents.yaml in {bot.as_posix()!r}")


def test_errors_of_several_files_are_sorted_and_counted(tmp_path: Path) -> None:
    bot = broken_copy(tmp_path, "unknown_action")
    (bot / "flows" / "greet.yaml").write_text("version: 1\ntrigger: gret\nsteps:\n  - say: Hi\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(bot)
    files = [e.file for e in info.value.errors]
    assert files == sorted(files)
    assert info.value.summary() == f"{len(files)} errors in {len(set(files))} files."


def test_formatted_error_has_source_line_and_caret(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(broken_copy(tmp_path, "unknown_action"))
    assert info.value.format() == (
        "flows/ask_price.yaml:11:13: unknown action 'lookup_prce' (did you mean 'lookup_price'?); "
        "registered actions: book_drive, lookup_price\n"
        "  - action: lookup_prce\n"
        "            ^\n"
        "1 error in 1 file.")


def test_duplicate_errors_are_dropped() -> None:
    from bot.errors import ConfigError

    e = ConfigError("a.yaml", 1, 1, "x")
    assert ConfigErrors([e, ConfigError("a.yaml", 1, 1, "x")]).errors == [e]
