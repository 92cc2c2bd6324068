"""The README's numbers, read from the README itself, so a test compares what a run gives with what
the README promises (and a README edited without rerunning fails)."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
NUMBER = r"[−+-]?\d+(?:\.\d+)?(?:e[−+-]?\d+)?"


def to_float(text: str) -> float:
    return float(text.replace("−", "-"))


def readme_numbers(pattern: str) -> list[float]:
    """The numbers captured by ``pattern`` (a regex with groups; ``{n}`` stands for a number) at its
    one match in the README (whitespace in the README may be a line break)."""
    regex = re.escape(pattern).replace(re.escape("{n}"), f"({NUMBER})").replace(r"\ ", r"\s+")
    matches = re.findall(regex, README)
    assert len(matches) == 1, f"{pattern!r} matches the README {len(matches)} times"
    found = matches[0] if isinstance(matches[0], tuple) else (matches[0],)
    return [to_float(x) for x in found]


def numbers_in(text: str) -> list[float]:
    return [to_float(x) for x in re.findall(NUMBER, text)]
