"""The ``hybridbot report --html`` page: one self-contained file, inline SVG charts, no scripts."""
from __future__ import annotations

import html
import logging
from datetime import datetime, timezone

from .report import Report, TurnLine

log = logging.getLogger(__name__)

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;margin:0 auto;max-width:980px;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.muted{color:#5b6475}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #dde2ea;border-radius:8px;padding:10px 14px;min-width:140px}.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eef1f5;vertical-align:top}
th{font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f5f7fa;border:1px solid #dde2ea;border-radius:6px;padding:10px;overflow:auto;font-size:13px}
.turn{margin:2px 0}.turn .who{display:inline-block;width:64px;color:#5b6475}.down{border-left:3px solid #c62828;padding-left:8px;margin:12px 0}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def fallback_chart(report: Report, width: int = 900, height: int = 220) -> str:
    """Bars of the fallback rate per day, 0-100 %, with the day under every few bars."""
    days = report.days
    if not days:
        return "<p class=muted>No turns.</p>"
    left, bottom, top = 44, 36, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    step = plot_w / len(days)
    bar = max(1.0, step * 0.8)
    every = max(1, round(len(days) / 12))
    parts = [f'<svg role="img" aria-label="Fallback rate per day" viewBox="0 0 {width} {height}" '
             f'width="100%" xmlns="http://www.w3.org/2000/svg">']
    for pct in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - pct / 100)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef1f5"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{pct}%</text>')
    for i, day in enumerate(days):
        h = plot_h * day.rate
        x = left + i * step + (step - bar) / 2
        parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'fill="#2457d6"><title>{_e(day.day)}: {day.rate:.1%} ({day.fallbacks} of {day.turns} '
                     f'turns)</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                         f'{_e(day.day[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def intents_chart(report: Report, width: int = 900) -> str:
    """Horizontal bars: turns per intent."""
    rows = report.top_intents
    if not rows:
        return "<p class=muted>No intent matched yet.</p>"
    label_w, row_h = 220, 22
    most = max(n for _, n in rows)
    height = row_h * len(rows) + 4
    parts = [f'<svg role="img" aria-label="Turns per intent" viewBox="0 0 {width} {height}" width="100%" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for i, (name, n) in enumerate(rows):
        y = i * row_h + 2
        w = (width - label_w - 60) * n / most
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="#2e7d32"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _turn(line: TurnLine, mark: str = "") -> str:
    return (f'<div class=turn><span class=who>{mark}visitor</span>{_e(line.text)}</div>'
            f'<div class=turn><span class=who>{mark}bot</span>{_e(line.reply)}</div>')


def format_html(report: Report) -> str:
    """The whole report as one HTML page (no external assets, no JavaScript)."""
    period = f"{_when(report.first_at)} to {_when(report.last_at)}"
    cards = [("turns", report.turns), ("conversations", report.conversations),
             ("fallback rate", f"{report.fallback_rate:.1%}"), ("LLM turns", report.llm_turns),
             ("thumbs up", report.votes.get("up", 0)), ("thumbs down", report.votes.get("down", 0))]
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
           '<meta name=viewport content="width=device-width, initial-scale=1">',
           "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">",
           f"<title>hybridbot report {_e(period)}</title><style>{STYLE}</style></head><body>",
           f"<h1>hybridbot report</h1><p class=muted>{_e(period)}"
           + (f" · since {_e(report.since.isoformat())}" if report.since else "") + "</p>",
           "<div class=cards>" + "".join(f"<div class=card><b>{_e(v)}</b>{_e(k)}</div>" for k, v in cards) + "</div>",
           "<h2>Fallback rate per day (UTC)</h2>", fallback_chart(report),
           "<h2>Top intents</h2>", intents_chart(report)]
    if report.llm_errors:
        out.append("<p>LLM errors: " + ", ".join(f"{_e(k)} {n}" for k, n in report.llm_errors) + "</p>")
    out.append("<h2>Lowest-confidence routes</h2><p class=muted>The bot acted on a classifier score, "
               "not a rule; the weakest first. Add examples where it chose wrong.</p>")
    if report.low_confidence:
        out.append("<table><tr><th class=num>score</th><th>intent</th><th>message</th><th class=num>times</th><th>runners-up</th></tr>")
        for w in report.low_confidence:
            others = ", ".join(f"{n} {s:.2f}" for n, s in w.candidates[1:])
            out.append(f"<tr><td class=num>{w.turn.score:.2f}</td><td>{_e(w.turn.intent or '-')}</td>"
                       f"<td>{_e(w.turn.text)}</td><td class=num>{w.count}</td><td>{_e(others)}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p class=muted>None.</p>")
    out.append(f"<h2>Thumbs down ({len(report.thumbs_down)})</h2>")
    for down in report.thumbs_down:
        out.append(f"<div class=down><p class=muted>conversation {_e(down.turn.conversation_id)} · "
                   f"{_e(_when(down.turn.created_at))}"
                   + (f" · comment: “{_e(down.comment)}”" if down.comment else "") + "</p>"
                   + "".join(_turn(c) for c in down.context) + _turn(down.turn, "▶ ") + "</div>")
    if not report.thumbs_down:
        out.append("<p class=muted>None.</p>")
    out.append(f"<h2>Handed to a person ({report.handoff_count})</h2>")
    if report.handoffs:
        out.append("<table><tr><th>when</th><th>conversation</th><th>flow</th><th>slots</th></tr>")
        for h in report.handoffs:
            out.append(f"<tr><td>{_e(_when(h.turn.created_at))}</td><td>{_e(h.turn.conversation_id)}</td>"
                       f"<td>{_e(h.flow or '-')}</td><td>{_e(h.slot_text)}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p class=muted>None.</p>")
    out.append(f"<h2>Candidate new intents ({len(report.clusters)})</h2><p class=muted>Fallback messages "
               f"grouped by similarity ({report.unclustered} stayed alone). Paste a group under "
               "<code>intents:</code> in intents.yaml, add the flow, then run <code>hybridbot validate</code>.</p>")
    for cluster in report.clusters:
        out.append(f"<h3>{_e(cluster.name)} · {cluster.size} messages</h3>"
                   f"<pre>{_e(cluster.intent_yaml)}</pre><p class=muted>flows/{_e(cluster.name)}.yaml</p>"
                   f"<pre>{_e(cluster.flow_yaml)}</pre>")
    out.append("</body></html>\n")
    return "\n".join(out)
