"""The interactive (or piped) terminal chat behind ``hybridbot shell``."""
from __future__ import annotations

import json
import logging
from typing import Any, TextIO

import click

log = logging.getLogger(__name__)

HELP = "commands: /trace (toggle route traces), /slots (show slots), /reset (new conversation), /quit"


class Shell:
    def __init__(self, bot: Any, *, trace: bool = False) -> None:
        self.bot = bot
        self.trace = trace
        self.conversation_id: str | None = None
        self.last: Any = None

    def run(self, lines: TextIO, *, interactive: bool) -> None:
        if interactive:
            click.echo(f"Talking to the bot in {self.bot.config.root}. {HELP}")
        while True:
            if interactive:
                try:
                    text = click.prompt("you", prompt_suffix="> ", default="", show_default=False)
                except (EOFError, click.Abort):
                    click.echo()
                    return
            else:
                raw = lines.readline()
                if not raw:
                    return
                text = raw.rstrip("\n")
            if not text.strip():
                continue
            if text.startswith("/") and self.command(text.strip()):
                if text.strip() == "/quit":
                    return
                continue
            self.say(text, interactive)

    def command(self, text: str) -> bool:
        if text == "/trace":
            self.trace = not self.trace
            click.echo(f"trace {'on' if self.trace else 'off'}")
        elif text == "/slots":
            click.echo(json.dumps(self.last.slots if self.last else {}, ensure_ascii=False, default=str))
        elif text == "/reset":
            self.conversation_id = None
            self.last = None
            click.echo("new conversation")
        elif text in ("/quit", "/exit"):
            return True
        elif text == "/help":
            click.echo(HELP)
        else:
            return False
        return True

    def say(self, text: str, interactive: bool) -> None:
        turn = self.bot.handle(self.conversation_id, text)
        self.conversation_id = turn.conversation_id
        self.last = turn
        prefix = "bot> " if interactive else ""
        for reply in turn.replies:
            click.echo(prefix + reply["text"])
            buttons = reply.get("buttons") or []
            if buttons:
                click.echo(("     " if interactive else "") + "  ".join(f"[{b['title']}]" for b in buttons))
        if self.trace:
            route = turn.route
            click.echo(f"  ~ {route.get('kind')} intent={route.get('intent')} score={route.get('score')} "
                       f"flow={turn.flow} slots={json.dumps(turn.slots, default=str)}")
