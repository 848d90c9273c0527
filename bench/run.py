"""Run the benchmarks and write their sections into bench/RESULTS.md.

Usage: ``python -m bench.run`` (all) or ``python -m bench.run router llm`` (some). Each benchmark
module exposes ``run() -> str`` returning a Markdown section that starts with a ``## `` heading;
sections of benchmarks not run this time are kept from the previous RESULTS.md.
"""
from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import platform
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)

BENCHMARKS = {
    "router": "bench.router_clinc150",
    "llm": "bench.llm_overhead",
    "http": "bench.http_throughput",
}
RESULTS = Path(__file__).with_name("RESULTS.md")


def _previous_sections() -> dict[str, str]:
    if not RESULTS.exists():
        return {}
    text = RESULTS.read_text(encoding="utf-8")
    found = re.findall(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->", text, flags=re.S)
    return {name: body for name, body in found}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wanted = argv or list(BENCHMARKS)
    unknown = [w for w in wanted if w not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    sections = _previous_sections()
    for name in wanted:
        module = importlib.import_module(BENCHMARKS[name])
        print(f"== {name} ==", flush=True)
        body = module.run().rstrip() + "\n"
        stamp = f"_Measured {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}._\n"
        sections[name] = body + "\n" + stamp
        print(body)
    parts = ["# Benchmark results\n",
             "Written by `make bench` (`python -m bench.run`); every number below comes from that run.\n"]
    for name in BENCHMARKS:
        if name in sections:
            parts.append(f"<!-- bench:{name} -->\n{sections[name]}<!-- /bench:{name} -->\n")
    RESULTS.write_text("\n".join(parts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
