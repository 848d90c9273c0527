"""Paths and a fixed clock shared by the tests (imported by name; pytest puts tests/ on sys.path)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

MINIMAL = Path(__file__).parent / "data" / "minimal"
NOW = datetime(2026, 11, 25, 10, 0)  # a Wednesday
