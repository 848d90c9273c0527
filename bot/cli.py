"""The hybridbot command line: run | validate | shell | test | route | explain | report | purge | schema | fake-llm."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .errors import BotError, ConfigError, ConfigErrors

log = logging.getLogger(__name__)

DIR = click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))


def _load_bot(directory: Path, **kwargs: object):  # noqa: ANN202 - Bot, imported lazily
    from .app import Bot
    from .store import MemoryStore

    try:
        return Bot.from_path(directory, store=kwargs.pop("store", None) or MemoryStore(), **kwargs)
    except ConfigErrors as exc:
        click.echo(exc.format(), err=True)
        raise SystemExit(1) from None
    except BotError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def cli(verbose: bool) -> None:
    """hybridbot: website chatbots that mix YAML rules with an LLM fallback."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@DIR
def validate(directory: Path) -> None:
    """Check a bot's YAML and actions; print every mistake with file:line:col."""
    from .config import load_config

    try:
        config = load_config(directory)
    except ConfigErrors as exc:
        click.echo(exc.format())
        raise SystemExit(1) from None
    intents = [n for n in config.intents.intents if n != "out_of_scope"]
    click.echo(f"{len(intents)} intents, {len(config.flows)} flows, {len(config.action_names)} actions: OK")


@cli.command()
@click.option("-o", "--output", default="schema", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the JSON Schemas to.")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the YAML reference (Markdown) to this file instead.")
def schema(output: Path, markdown_file: Path | None) -> None:
    """Write the JSON Schemas of intents.yaml, flows and fallback.yaml (for editors)."""
    from .schemacheck import SCHEMA_NAMES, schema as load_schema

    if markdown_file is not None:
        from .schemadoc import markdown

        markdown_file.write_text(markdown(), encoding="utf-8")
        click.echo(str(markdown_file))
        return
    output.mkdir(parents=True, exist_ok=True)
    for name in SCHEMA_NAMES:
        path = output / f"{name}.schema.json"
        path.write_text(json.dumps(load_schema(name), indent=2) + "\n", encoding="utf-8")
        click.echo(str(path))


@cli.command()
@DIR
@click.option("--trace/--no-trace", default=False, help="Show the route trace of every reply.")
def shell(directory: Path, trace: bool) -> None:
    """Talk to a bot in the terminal (/trace, /slots, /reset, /quit). Reads lines when piped."""
    from .chatshell import Shell

    Shell(_load_bot(directory), trace=trace).run(sys.stdin, interactive=sys.stdin.isatty())


@cli.command("test")
@DIR
def test_command(directory: Path) -> None:
    """Run the YAML conversation tests in DIR/tests/conversations."""
    from .testing import conversation_files, load_cases, run_case

    files = conversation_files(directory)
    if not files:
        click.echo(f"no conversation tests in {directory / 'tests' / 'conversations'}", err=True)
        raise SystemExit(1)
    bot = _load_bot(directory)
    passed = failed = 0
    for path in files:
        try:
            cases = load_cases(path, directory.resolve())
        except ConfigError as exc:
            click.echo(exc.format())
            failed += 1
            continue
        for case in cases:
            result = run_case(bot, case)
            if result.passed:
                passed += 1
            else:
                failed += 1
                click.echo(f"FAIL {case.file}:{case.line} {case.name}")
                for failure in result.failures:
                    click.echo(f"  {failure}")
    click.echo(f"{passed} passed, {failed} failed")
    raise SystemExit(1 if failed else 0)


@cli.command()
@DIR
def route(directory: Path) -> None:
    """Route one message per stdin line; print one JSON object per line."""
    from .router import route_lines

    bot = _load_bot(directory)
    out = sys.stdout
    for row in route_lines(bot.router, (line.rstrip("\n") for line in sys.stdin)):
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()


@cli.command()
@DIR
@click.argument("text", required=False)
@click.option("--calibrate", "labelled", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CSV of text,intent to pick threshold and margin from.")
def explain(directory: Path, text: str | None, labelled: Path | None) -> None:
    """Show how a message is routed, or calibrate threshold/margin from labelled data."""
    from .calibrate import calibrate, format_calibration, read_labelled
    from .router import format_trace

    bot = _load_bot(directory)
    if labelled is not None:
        click.echo(format_calibration(calibrate(bot.router, read_labelled(labelled))))
        return
    if text is None:
        raise click.UsageError("give a TEXT to explain, or --calibrate FILE")
    click.echo(format_trace(bot.router.route(text)))
    click.echo(f"model:      {bot.router.describe()}")


@cli.command()
@DIR
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2, 20), help="Groups of examples.")
@click.option("--show", default=15, show_default=True, type=click.IntRange(0), help="Lines per list.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of the text report.")
@click.option("--min-right", type=click.FloatRange(0, 100), default=None,
              help="Exit 1 when fewer than this percentage of examples is routed right (for CI).")
def evaluate(directory: Path, folds: int, show: int, as_json: bool, min_right: float | None) -> None:
    """Cross-validate the router on the intents' own examples: what it confuses, and where."""
    from .crossval import cross_validate, format_cross_validation, summary

    bot = _load_bot(directory)
    result = cross_validate(bot.config.intents, folds=folds, base_dir=directory)
    click.echo(json.dumps(summary(result), indent=2) if as_json else format_cross_validation(result, show=show))
    if min_right is not None and result.share_right() * 100 < min_right:
        click.echo(f"{result.share_right():.1%} of examples routed right, below --min-right {min_right:g} %", err=True)
        raise SystemExit(1)


@cli.command()
@DIR
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--reload/--no-reload", default=True, help="Reload when YAML or action files change.")
def run(directory: Path, host: str, port: int, reload: bool) -> None:
    """Serve the bot and its chatbox (development server; use gunicorn in production)."""
    from .web import serve

    logging.getLogger().setLevel(logging.INFO)
    try:
        serve(directory, host=host, port=port, reload=reload)
    except ConfigErrors as exc:
        click.echo(exc.format(), err=True)
        raise SystemExit(1) from None


@cli.command()
@DIR
@click.option("--since", default=None, help="Only turns from then on: 7d, 24h, 30m, or an ISO date or date-time.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as one self-contained HTML page.")
@click.option("--store", "store_url", default=None,
              help="Store URL (default: BOT_STORE, else DIR/var/hybridbot.sqlite3).")
def report(directory: Path, since: str | None, html_path: Path | None, store_url: str | None) -> None:
    """Summarise transcripts: top intents, fallback rate, weak routes, thumbs-down, candidate intents."""
    from .report import run_report

    try:
        click.echo(run_report(directory, since=since, html=html_path, store_url=store_url), nl=False)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    except BotError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


@cli.command("fake-llm", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def fake_llm(ctx: click.Context) -> None:
    """Run a local fake OpenAI-compatible server (--port, --token-delay, --reply) for development."""
    from .fake_openai import main as fake_main

    raise SystemExit(fake_main(list(ctx.args)))


def _add_commands() -> None:
    from .retention import purge

    cli.add_command(purge)


_add_commands()


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="hybridbot", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
