"""`solaris-tokens report ...`: the admins' monthly report (SPEC R3); Celery emails it on the 1st."""

from __future__ import annotations

from typing import Annotated

import typer

from solaris_tokens.cli import common
from solaris_tokens.report import MonthlyReport, monthly_report, send_monthly_report
from solaris_tokens.runtime import Runtime

app = typer.Typer(no_args_is_help=True, help="Reports for the admins.")

MonthOption = Annotated[
    str | None,
    typer.Option("--month", metavar="YYYY-MM", help="The month to report (default: the last one that ended)."),
]


@app.command("monthly")
def monthly(
    month: MonthOption = None,
    json_out: common.JsonOption = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="One CSV row per user (the email's attachment).")] = False,
    send: Annotated[
        bool, typer.Option("--send", help="Also email it to the admins (SOLARIS_ADMIN_EMAILS), once per month.")
    ] = False,
) -> None:
    """Per user, plan and model: tokens, requests, thresholds reached, credits, anomalies, projection."""
    if json_out and csv_out:
        common.err_console.print("[red]error:[/red] choose one of --json and --csv")
        raise typer.Exit(2)

    async def work(runtime: Runtime) -> tuple[MonthlyReport, int]:
        if send:
            return await send_monthly_report(runtime, month)
        return await monthly_report(runtime, month), 0

    report, emailed = common.run(work)
    if json_out:
        common.print_json(report.as_dict())
    elif csv_out:
        typer.echo(report.to_csv(), nl=False)
    else:
        typer.echo(report.to_text(), nl=False)
    if send:
        common.err_console.print(f"{emailed} report email(s) queued for {report.period} (admins who had it skipped)")
