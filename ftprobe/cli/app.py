"""The single output layer of the CLI: every command prints through an :class:`App`; nothing else touches rich."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

__all__ = ["App", "RunFeedback", "Status"]


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

    def status(self, text: str) -> Status:
        """A spinner with ``text`` on stderr while slow work runs (loading models, rendering the report); ``update``
        changes the text, ``stop`` ends it. A no-op when quiet or when stderr is not a terminal."""
        return Status(self.err if not self.quiet and self.err.is_terminal else None, text)

    def feedback(self, text: str) -> RunFeedback:
        """What a user sees during ``ftprobe.compare``: a spinner until the pass starts, then the progress bar."""
        return RunFeedback(self, text)

    def progress(self, total: int | None, description: str = "streaming") -> Any:
        """A progress bar on stderr (a no-op context when quiet or when stderr is not a terminal)."""
        from contextlib import nullcontext

        if self.quiet or not self.err.is_terminal:
            return nullcontext(lambda n: None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        columns: list[Any] = ["[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn()]
        if total:  # an unknown length has no ETA to show
            columns += ["eta", TimeRemainingColumn()]
        prog = Progress(*columns, console=self.err, transient=True)

        class _Ctx:
            def __enter__(self_inner) -> Any:
                prog.__enter__()
                task = prog.add_task(description, total=total)
                return lambda n: prog.advance(task, n)

            def __exit__(self_inner, *exc: Any) -> None:
                prog.__exit__(*exc)

        return _Ctx()


class Status:
    """One spinner line that the caller updates and stops (stop is idempotent; also a context manager)."""

    def __init__(self, console: Any, text: str) -> None:
        self._live: Any = None
        if console is not None:
            from rich.live import Live
            from rich.spinner import Spinner
            from rich.text import Text

            self._text = Text  # Text, not markup: a path with [brackets] shows as typed
            self._spinner = Spinner("dots", self._text(text), style="green")
            self._live = Live(self._spinner, console=console, transient=True, refresh_per_second=12.5)
            self._live.start(refresh=True)

    def update(self, text: str) -> None:
        if self._live is not None:
            self._spinner.update(text=self._text(text))
            self._live.refresh()  # each step is drawn at least once, however quick

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> Status:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RunFeedback:
    """The ``status``, ``on_start`` and ``progress`` callbacks of :func:`ftprobe.compare` (``**feedback.callbacks``):
    a spinner with the current step, replaced by the progress bar when the pass starts. A context manager that
    closes whichever is showing."""

    def __init__(self, app: App, text: str) -> None:
        self._app = app
        self.spinner = app.status(text)
        self._bar: Any = None
        self._advance: Any = lambda n: None

    def status(self, text: str) -> None:
        self.spinner.update(text)

    def on_start(self, total: int | None) -> None:
        self.spinner.stop()  # one live display at a time: the progress bar takes over
        self._bar = self._app.progress(total)
        self._advance = self._bar.__enter__()

    def progress(self, n: int) -> None:
        self._advance(n)

    @property
    def callbacks(self) -> dict[str, Any]:
        return {"status": self.status, "on_start": self.on_start, "progress": self.progress}

    def close(self) -> None:
        self.spinner.stop()
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> RunFeedback:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
