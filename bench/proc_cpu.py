"""CPU time of every process on the machine, grouped, between two snapshots (Linux ``/proc``).

Throughput on a shared 2-core machine depends on what else runs; CPU time per request does
much less, and it says where a request's cost goes (app workers, NGINX, Redis, the load
generator) and how much other load there was. Usage::

    before = snapshot()
    ...                          # the measured run
    per_request = cpu_per_request(before, snapshot(), requests)   # {"app": 812.0, ...} in µs
"""
from __future__ import annotations

import os
from pathlib import Path

GROUPS = (("gunicorn", "app (gunicorn workers)"), ("nginx", "NGINX"), ("redis-server", "Redis"))
SELF = "load generator"
OTHER = "other processes"
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _group(pid: int, cmdline: str) -> str:
    if pid == os.getpid():
        return SELF
    for needle, label in GROUPS:
        if needle in cmdline:
            return label
    return OTHER


def snapshot() -> dict[int, tuple[str, int]]:
    """pid -> (group, CPU ticks used so far: user + system) for every readable process."""
    out: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state is fields[0]
        out[int(entry.name)] = (_group(int(entry.name), cmdline), int(fields[11]) + int(fields[12]))
    return out


def cpu_per_request(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]],
                    requests: int) -> dict[str, float]:
    """Microseconds of CPU per request by group, for processes alive at both snapshots."""
    totals: dict[str, float] = {}
    for pid, (group, ticks) in after.items():
        if pid in before:
            used = ticks - before[pid][1]
            if used > 0:
                totals[group] = totals.get(group, 0.0) + used / TICKS
    return {group: seconds / max(requests, 1) * 1e6 for group, seconds in totals.items()}


def order(groups: dict[str, float]) -> list[str]:
    """Group names in a fixed reading order: the app first, other load last."""
    names = [label for _, label in GROUPS] + [SELF, OTHER]
    return [n for n in names if n in groups]
