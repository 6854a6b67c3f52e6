"""The go-live check's output, and the command `smsmta account test` runs.

What it does
    `render_step` and `render_summary` turn a `Step` and a `Report` into rich text (plain
    text when the console is not a terminal); `run_command` is what `smsmta account test
    --config FILE NAME --to MSISDN` does: load and check the settings file, run
    `run_check` with the account's bind slots and database, and print the steps as they
    come, or the report as one JSON document with `--json`.

Contract
    `run_command` returns the exit code: 0 when every step passed, 1 when one failed,
    2 for bad input (settings file, account name, MSISDN), which needs no SMSC. Passwords
    are never printed: the report only names the fields.

What it touches
    The settings file, stdout and stderr, the logging set-up (errors only, on the
    console); through `run_check`, the SMSC and the database (see smsmta.golive.probe).
"""

from __future__ import annotations

import re
from typing import Any

from smsmta.binds import TestSlots
from smsmta.golive.diagnosis import FAIL, PASS, SKIP, Report, Step
from smsmta.golive.probe import run_check

_MARKS = {PASS: ("PASS", "green"), FAIL: ("FAIL", "bold red"), SKIP: ("SKIP", "yellow")}


def render_step(step: Step) -> Any:
    """A step as rich renderables (plain text when the console is not a terminal)."""
    from rich.text import Text

    label, style = _MARKS[step.status]
    out = Text()
    out.append(f"[{label}] ", style=style)
    out.append(step.name, style="bold")
    out.append(f": {step.summary}\n")
    for key, value in step.details:
        out.append(f"    {key}: ", style="dim")
        out.append(f"{value}\n")
    for fix in step.fixes:
        out.append("    -> ", style="bold yellow")
        out.append(f"{fix}\n", style="yellow")
    out.rstrip()
    return out


def render_summary(report: Report) -> Any:
    """The report's last line: every step passed, or the steps that failed."""
    from rich.text import Text

    failed = [s.name for s in report.steps if s.status == FAIL]
    if not failed:
        return Text(f"go-live check of {report.account}: every step passed", style="bold green")
    return Text(
        f"go-live check of {report.account}: FAILED at {', '.join(failed)}", style="bold red"
    )


def run_command(
    config_path: str, name: str, to: str, *, wait: float, text: str, as_json: bool
) -> int:
    """What `smsmta account test` does; returns the exit code (0 ok, 1 failed, 2 bad input)."""
    import json
    import sys

    import uvloop
    from rich.console import Console

    from smsmta import obs, settings

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        cfg = settings.load(config_path)
    except settings.ConfigError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        return 2
    if not isinstance(cfg, settings.MidConfig):
        err.print(f"{config_path}: the go-live check needs a 'kind: mid' settings file")
        return 2
    try:
        account = cfg.account(name)
    except KeyError:
        names = ", ".join(a.name for a in cfg.accounts) or "none"
        err.print(f"no mid account {name!r} in {config_path} (accounts: {names})", markup=False)
        return 2
    if not to.strip() or not re.fullmatch(r"\+?[0-9 ]{3,20}", to.strip()):
        err.print(f"--to {to!r}: give a phone number (MSISDN), e.g. +33612345678", markup=False)
        return 2
    obs.configure_logging("account-test", "error", "console", cache=False)
    # The receipt may reach the running SMS process's bind: look where it stores it too.
    url = settings.database_url(cfg)
    database_dsn = None
    slots = None
    if url:
        from smsmta.db.engine import libpq_dsn

        database_dsn = libpq_dsn(url)
        if account.throughput.max_binds:  # every test bind takes one of the slots
            slots = TestSlots(database_dsn, account, cfg.host_id, ttl=wait + 60.0)
    out = Console(highlight=False, soft_wrap=True)

    def step(s: Step) -> None:
        out.print(render_step(s))

    def note(message: str) -> None:
        out.print(f"  ... {message}", style="dim", markup=False)

    report = uvloop.run(
        run_check(
            account,
            to.strip(),
            text=text,
            wait=wait,
            on_step=None if as_json else step,  # JSON: the whole report at the end
            on_note=None if as_json else note,
            slots=slots,
            database_dsn=database_dsn,
        )
    )
    if as_json:
        json.dump(report.as_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        out.print(render_summary(report))
    return 0 if report.ok else 1
