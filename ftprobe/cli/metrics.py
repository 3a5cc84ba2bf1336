"""``ftprobe metrics``: every metric in the ``ftprobe.metrics`` entry-point group, with its provider."""

from __future__ import annotations

import click

from .app import App


@click.command(short_help="List the installed metrics and who provides them.")
@click.option("--disable-metric", "disabled", multiple=True, metavar="NAME", help="Leave a metric out.")
@click.pass_obj
def metrics(app: App, disabled: tuple[str, ...]) -> None:
    """List every metric found in the ftprobe.metrics entry-point group (built-in and third-party)."""
    from rich.table import Table

    from ftprobe.core.errors import PluginError
    from ftprobe.core.registry import metric_specs

    table = Table(title="metrics", title_justify="left")
    for col in ("name", "provider", "version", "needs", "scope"):
        table.add_column(col, no_wrap=col in ("name", "provider"))
    table.add_column("description", ratio=1)
    for name, spec in sorted(metric_specs(disabled).items()):
        try:
            cls = spec.load()
        except PluginError as exc:
            table.add_row(name, spec.provider, spec.version, "", "", f"[red]broken:[/red] {exc}")
            continue
        table.add_row(name, spec.provider, spec.version, cls.needs.describe(), cls.scope.value, cls.describe())
    app.print(table)
