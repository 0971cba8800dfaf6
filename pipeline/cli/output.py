"""How inspection commands print rows: a table on a terminal; tab-separated full values
when piped (`pipeline runs | grep` sees whole names); JSON with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

json_option = click.option("--json", "as_json", is_flag=True, help="print JSON rows")


def show(columns: Sequence[str], rows: Sequence[dict[str, Any]], *, as_json: bool) -> None:
    """Print `rows` (dicts keyed by `columns`)."""
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=_json))
        return
    cells = [[_text(row.get(column)) for column in columns] for row in rows]
    if not sys.stdout.isatty():
        click.echo("\t".join(columns))
        for line in cells:
            click.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in line))
        return
    table = Table(*columns)
    for line in cells:
        table.add_row(*line)
    Console().print(table)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    return str(value)


def _json(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
