"""The single output layer of the CLI: every command prints through an :class:`App`; nothing else touches rich."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

__all__ = ["App"]


class App:
    """Console output (stdout for results, stderr for notices and progress) and ``abort``."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self._out = None
        self._err = None

    @property
    def out(self) -> Any:
        if self._out is None:
            from rich.console import Console

            # Piped output (files, CI logs) gets a wide fixed width so tables of many columns stay readable.
            self._out = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
        return self._out

    @property
    def err(self) -> Any:
        if self._err is None:
            from rich.console import Console

            self._err = Console(file=sys.stderr, soft_wrap=True)
        return self._err

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.err.print(msg, markup=False, highlight=False)

    def notice(self, msg: str) -> None:
        if not self.quiet:
            self.err.print(f"note: {msg}", markup=False, highlight=False, style="yellow")

    def warn(self, msg: str) -> None:
        self.err.print(f"warning: {msg}", markup=False, highlight=False, style="bold yellow")

    def print(self, renderable: Any) -> None:
        self.out.print(renderable)

    def write_raw(self, text: str) -> None:
        click.echo(text)

    def abort(self, msg: str, code: int = 1) -> NoReturn:
        self.err.print(f"Error: {msg}", markup=False, highlight=False, style="bold red")
        raise SystemExit(code)

    def progress(self, total: int | None, description: str = "streaming") -> Any:
        """A progress bar on stderr (a no-op context when quiet or when stderr is not a terminal)."""
        from contextlib import nullcontext

        if self.quiet or not self.err.is_terminal:
            return nullcontext(lambda n: None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        prog = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=self.err, transient=True)

        class _Ctx:
            def __enter__(self_inner) -> Any:
                prog.__enter__()
                task = prog.add_task(description, total=total)
                return lambda n: prog.advance(task, n)

            def __exit__(self_inner, *exc: Any) -> None:
                prog.__exit__(*exc)

        return _Ctx()
