"""``ftprobe metrics``: every metric in the ``ftprobe.metrics`` entry-point group, with its provider, and with
``--options`` the options each one takes (its declared help, and the ``compare`` shorthand flag that sets it)."""

from __future__ import annotations

import inspect

import click

from .app import App


@click.command(short_help="List the installed metrics and who provides them.")
@click.option("--disable-metric", "disabled", multiple=True, metavar="NAME", help="Leave a metric out.")
@click.option("--options", "show_options", is_flag=True,
              help="Also list each metric's options (for -o METRIC.KEY=VALUE), their defaults and help.")
@click.pass_obj
def metrics(app: App, disabled: tuple[str, ...], show_options: bool) -> None:
    """List every metric found in the ftprobe.metrics entry-point group (built-in and third-party)."""
    from rich.table import Table

    from ftprobe.core.errors import PluginError
    from ftprobe.core.registry import metric_specs

    table = Table(title="metrics", title_justify="left")
    for col in ("name", "provider", "version", "needs", "scope", "direction"):
        table.add_column(col, no_wrap=col in ("name", "provider"))
    table.add_column("description", ratio=1)
    loaded = []
    for name, spec in sorted(metric_specs(disabled).items()):
        try:
            cls = spec.load()
        except PluginError as exc:
            table.add_row(name, spec.provider, spec.version, "", "", "", f"[red]broken:[/red] {exc}")
            continue
        loaded.append((name, cls))
        table.add_row(name, spec.provider, spec.version, cls.needs.describe(), cls.scope.value,
                      _direction(cls.higher_is_more_similar), cls.describe())
    app.print(table)
    if show_options:
        for name, cls in loaded:
            app.print(_options_table(name, cls))


def _direction(higher_is_more_similar: bool | None) -> str:
    return {True: "higher = similar", False: "higher = changed"}.get(higher_is_more_similar, "")  # type: ignore[arg-type]


def _options_table(name: str, cls: type) -> object:
    """One metric's ``__init__`` options: ``-o NAME.KEY=VALUE``, the default, the shorthand flag and the help."""
    from rich.table import Table

    declared = cls.declaration()["option_help"]  # type: ignore[attr-defined]
    table = Table(title=f"{name} options", title_justify="left")
    for col in ("-o", "default", "shorthand"):
        table.add_column(col, no_wrap=True)
    table.add_column("help", ratio=1)
    for pname, param in inspect.signature(cls.__init__).parameters.items():  # type: ignore[misc]
        if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        doc = declared.get(pname, {})
        default = "" if param.default is param.empty else repr(param.default)
        flag = f"--{doc['flag']}" if doc.get("flag") else ""
        table.add_row(f"{name}.{pname}=…", default, flag, doc.get("help", ""))
    return table
