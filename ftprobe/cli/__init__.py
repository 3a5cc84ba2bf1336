"""The ``ftprobe`` command: one module per subcommand; heavy imports happen inside the commands."""

from __future__ import annotations

import click

from .app import App

__all__ = ["cli", "main"]

ARGV: list[str] = []  # the arguments of the running command, recorded in the result's provenance


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--quiet", "-q", is_flag=True, help="No notices and no progress bar.")
@click.option("--verbose", "-v", is_flag=True, help="Show a traceback for user errors too.")
@click.version_option(package_name="ftprobe")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """What did fine-tuning change inside my network? Compare a base model with its fine-tuned versions."""
    ctx.obj = App(quiet=quiet, verbose=verbose)


def _register() -> None:
    from .compare import compare
    from .demo import demo
    from .layers import layers
    from .metrics import metrics
    from .report import report
    from .top_images import top_images
    from .visualize import visualize

    for command in (compare, demo, layers, metrics, visualize, report, top_images):
        command.params += _output_flags()
        cli.add_command(command)


def _output_flags() -> list[click.Option]:
    """``-q`` and ``-v`` after the sub-command too (``ftprobe compare ... -q``), with the group's meaning."""

    def set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            setattr(ctx.ensure_object(App), param.name or "", True)

    return [click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, callback=set_flag,
                         help="No notices and no progress bar (also accepted before the command)."),
            click.Option(["--verbose", "-v"], is_flag=True, expose_value=False, callback=set_flag,
                         help="Show a traceback for user errors too.")]


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one message (exit 1), bugs show a traceback."""
    import sys

    from ftprobe.core.errors import FtprobeError

    global ARGV
    ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="ftprobe", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FtprobeError as exc:
        if "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv):
            raise
        App().abort(str(exc))
