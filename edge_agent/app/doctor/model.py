"""The doctor's verdict: one :class:`Check` line per thing looked at (OK, WARN, FAIL)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_TIMEOUT",
    "Check",
    "Level",
    "fail",
    "failed",
    "ok",
    "warn",
]

DEFAULT_TIMEOUT = 3.0


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level.value:<4} {self.name}: {self.detail}"
        return f"{text} (fix: {self.fix})" if self.fix and self.level != Level.OK else text

    def doc(self) -> dict[str, str]:
        d = asdict(self)
        d["level"] = self.level.value
        return d


def ok(name: str, detail: str) -> Check:
    return Check(name, Level.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Level.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Level.FAIL, detail, fix)


def failed(checks: Iterable[Check]) -> bool:
    return any(c.level == Level.FAIL for c in checks)
