"""Run the ``ftprobe`` command in-process in tests (also for plugin authors testing their metric through the CLI)."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["CliRun", "invoke"]


class CliRun(NamedTuple):
    """What a command did: unpacks as ``code, out, err``."""

    code: int
    out: str
    err: str

    @property
    def exit_code(self) -> int:
        return self.code

    @property
    def output(self) -> str:
        return self.out

    @property
    def stderr(self) -> str:
        return self.err


def invoke(capsys: Any, *args: object) -> CliRun:
    """Run ``ftprobe ARGS`` through its real entry point, capturing output with pytest's ``capsys``.

    Only ``SystemExit`` is caught (a user error exits 1, a usage error 2); anything else is a bug and propagates,
    so a traceback fails the test instead of being swallowed.
    """
    from ftprobe.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return CliRun(code, captured.out, captured.err)
