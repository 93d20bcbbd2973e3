"""Runs named checks one after another and reports each as PASS or FAIL, for the client checks.

A failing check does not stop the others: one run shows everything that works and everything that does not, with
the reason, which is what someone implementing the missing pieces needs. The process exits non-zero if any failed.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Awaitable, Callable

HERE = Path(__file__).resolve().parent


def _where(e: BaseException) -> str:
    """The innermost line of these scripts the exception passed through (not the SDK's internals)."""
    ours = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve().parent == HERE]
    return f" [{Path(ours[-1].filename).name}:{ours[-1].lineno}]" if ours else ""


class Report:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, name: str, fn: Callable[..., object], *args: object, **kwargs: object) -> bool:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure of a check is reported, then the next check runs
            return self._failed(name, e)
        return self._passed(name)

    async def acheck(self, name: str, fn: Callable[..., Awaitable[object]], *args: object, **kwargs: object) -> bool:
        """The same for a coroutine function (KServe's clients are asynchronous)."""
        try:
            await fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - as above
            return self._failed(name, e)
        return self._passed(name)

    def _passed(self, name: str) -> bool:
        self.passed.append(name)
        print(f"PASS {name}", flush=True)
        return True

    def _failed(self, name: str, e: Exception) -> bool:
        detail = " ".join(str(e).split()) or type(e).__name__
        self.failed.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {detail}{_where(e)}", flush=True)
        return False

    def finish(self, ok_line: str) -> int:
        """Prints the summary; `ok_line` (what the Rust test looks for) only when every check passed."""
        print(f"{len(self.passed)} passed, {len(self.failed)} failed", flush=True)
        if self.failed:
            return 1
        print(ok_line, flush=True)
        return 0


def fail_fast_if(condition: bool, message: str) -> None:
    """For preconditions without which no check can mean anything (the server is not even up)."""
    if condition:
        print(f"FAIL precondition: {message}", flush=True)
        sys.exit(1)
