"""The hybridbot command line, run the way a person runs it (a subprocess or click's runner)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from bot.cli import cli
from botdata import MINIMAL

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=120)


def test_validate_ok_prints_a_summary() -> None:
    result = CliRunner().invoke(cli, ["validate", str(MINIMAL)])
    assert result.exit_code == 0
    assert result.output == "4 intents, 4 flows, 2 actions: OK\n"


def test_validate_repository_demo_bot() -> None:
    result = run("validate", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_validate_broken_bot_exits_1_with_caret(tmp_path: Path) -> None:
    bot = tmp_path / "bot"
    shutil.copytree(MINIMAL, bot, ignore=shutil.ignore_patterns("var", "__pycache__"))
    flow = bot / "flows" / "ask_price.yaml"
    flow.write_text(flow.read_text().replace("action: lookup_price", "action: lookup_prce"))
    result = CliRunner().invoke(cli, ["validate", str(bot)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "flows/ask_price.yaml:11:13: unknown action 'lookup_prce' (did you mean 'lookup_price'?); "
        "registered actions: book_drive, lookup_price",
        "  - action: lookup_prce",
        "            ^",
        "1 error in 1 file."]
    assert "Traceback" not in result.output


def test_validate_missing_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no such directory" in result.output


def test_schema_writes_the_three_schemas(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schema", "-o", str(tmp_path)])
    assert result.exit_code == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["fallback.schema.json", "flow.schema.json", "intents.schema.json"]
    assert json.loads((tmp_path / "flow.schema.json").read_text())["title"] == "hybridbot flow"


def test_shell_reads_piped_lines_and_holds_a_conversation() -> None:
    result = run("shell", str(MINIMAL), stdin="hi\nhow much is it?\nthe sedan s\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] in ("Hello! How can I help?", "Hi there! What can I do for you?")
    assert "Which model are you interested in?" in lines
    assert lines[-1] == "The Sedan S costs $32,500 and is in stock."


def test_shell_commands() -> None:
    result = run("shell", str(MINIMAL), stdin="book a test drive for the X3\n/slots\n/reset\n/slots\n")
    assert '{"car_model": "x3"}' in result.stdout
    assert "new conversation" in result.stdout and result.stdout.rstrip().endswith("{}")


def test_route_reads_many_lines_and_writes_json_lines() -> None:
    lines = ["hi", "price of the X3", "tell me a joke", ""] * 2500
    result = run("route", str(MINIMAL), stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 10_000
    assert rows[0]["intent"] == "greet" and rows[1] == {"text": "price of the X3", "intent": "ask_price",
                                                          "score": 1.0, "kind": "rule"}
    assert rows[3]["intent"] is None and rows[3]["kind"] == "fallback"


def test_explain_prints_the_trace() -> None:
    result = CliRunner().invoke(cli, ["explain", str(MINIMAL), "price of the X3"])
    assert result.exit_code == 0
    assert "rule" in result.output and "ask_price" in result.output and "car_model" in result.output
    assert "\nmodel:      tfidf, 4 intents; " in result.output  # a small bot: no word vectors


def test_explain_calibrate_prints_a_table(tmp_path: Path) -> None:
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,intent\nhello there,greet\nhow much does the x5 cost,ask_price\n"
                        "can I drive one on saturday,book_test_drive\nare you open late,opening_hours\n"
                        "what's the capital of spain,out_of_scope\nsing me something,\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["explain", str(MINIMAL), "--calibrate", str(labelled)])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output.lower()


def _bot_with_tests(tmp_path: Path, conversation: str) -> Path:
    bot = tmp_path / "bot"
    shutil.copytree(MINIMAL, bot, ignore=shutil.ignore_patterns("var", "__pycache__"))
    (bot / "tests" / "conversations").mkdir(parents=True)
    (bot / "tests" / "conversations" / "price.yaml").write_text(conversation, encoding="utf-8")
    return bot


PASSING = """\
version: 1
tests:
  - name: price in two turns
    turns:
      - user: how much is it?
        bot: Which model are you interested in?
        flow: ask_price
      - user: the X5
        bot_contains: "$61,900"
        route: flow
        flow: null
  - name: offline fallback
    offline: true
    turns:
      - user: what is the meaning of life
        bot: I can only help with prices, test drives and opening hours right now.
        route: fallback
"""


def test_test_command_passes(tmp_path: Path) -> None:
    result = run("test", str(_bot_with_tests(tmp_path, PASSING)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "2 passed, 0 failed"


def test_test_command_reports_the_failing_step_with_file_and_line(tmp_path: Path) -> None:
    failing = PASSING.replace("bot_contains: \"$61,900\"", "bot_contains: \"$99\"")
    result = run("test", str(_bot_with_tests(tmp_path, failing)))
    assert result.returncode == 1
    assert "FAIL tests/conversations/price.yaml:3 price in two turns" in result.stdout
    assert ("tests/conversations/price.yaml:8: 'the X5': expected the reply to contain '$99', "
            "got 'The X5 costs $61,900; it is sold out right now.'") in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "1 passed, 1 failed"


def test_unexpected_llm_call_fails_the_conversation_test(tmp_path: Path) -> None:
    failing = PASSING.replace("    offline: true\n", "")
    result = run("test", str(_bot_with_tests(tmp_path, failing)))
    assert result.returncode == 1
    assert "unexpected LLM call #1" in result.stdout


def test_pytest_plugin_collects_conversation_files(tmp_path: Path) -> None:
    bot = _bot_with_tests(tmp_path, PASSING)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(bot / "tests" / "conversations")], capture_output=True, text=True, cwd=bot,
                            timeout=120)
    assert "2 passed" in result.stdout, result.stdout + result.stderr
