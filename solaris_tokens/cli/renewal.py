"""`solaris-tokens renewal ...`: the monthly renewal by hand (SPEC R1, R2); Celery runs it on the 1st."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from solaris_tokens.cli import common
from solaris_tokens.renewal import RenewalResult, renew
from solaris_tokens.runtime import Runtime

app = typer.Typer(no_args_is_help=True, help="Monthly renewal: period summaries, renewal events and emails.")

MonthOption = Annotated[
    str | None,
    typer.Option("--month", metavar="YYYY-MM", help="The month that ended (default: the last one)."),
]


@app.command("run")
def run(month: MonthOption = None, json_out: common.JsonOption = False) -> None:
    """Renew every active user for a month that ended. Safe to repeat: users already renewed are skipped."""
    bar = Progress(
        TextColumn("renewing users"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=common.err_console,
        disable=json_out,
    )
    task = bar.add_task("renewal", total=None)

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    async def work(runtime: Runtime) -> RenewalResult:
        return await renew(runtime, month, progress)

    with bar:
        result = common.run(work)
    if json_out:
        common.print_json(result.as_dict())
        return
    typer.echo(
        f"renewal {result.period}: {common.fmt_tokens(result.users)} active users, "
        f"{common.fmt_tokens(result.renewed)} renewed now ({common.fmt_tokens(result.emails)} emails queued), "
        f"{common.fmt_tokens(result.already_renewed)} already renewed"
    )
