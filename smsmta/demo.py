"""`smsmta demo`: the whole stack on one machine, with nothing configured.

The demo process is the supervisor of everything it starts, in this order:

1. an embedded PostgreSQL (pgserver) in a fresh directory, migrated to the heads;
2. the SMSC simulator (`smsmta smsc-sim`), answering with receipts after a short delay
   and failing a few percent of them, as providers do;
3. the mid server, the MTA (2 children), the SMS process and the marketing service, each
   the real `smsmta <service>` command with its own settings file and log file;
4. an operator `demo` (a random password, kept in the demo's files) and a delivery of
   `--messages` recipients made with `smsmta delivery create` from a generated CSV.

It then follows the delivery in the marketing KPIs with a live progress bar (sent,
delivered, failed), prints the KPI table with `smsmta delivery status`, and says where
metrics and logs are. Without `--keep-running` it then stops every service with SIGTERM
(each drains and exits 0) and removes its files; Ctrl-C, SIGTERM and SIGHUP to the demo do
the same at any time (the whole stack, the embedded PostgreSQL last; a second signal
during the stop is ignored, the stop being bounded). Its services run in their own
sessions, so that Ctrl-C reaches the demo alone, and get SIGTERM from the kernel if the
demo dies without stopping them (PR_SET_PDEATHSIG); the embedded PostgreSQL has its own
watchdog (smsmta.db.engine).
Touches: child processes, local ports, a directory under /tmp (or `--data-dir`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from smsmta.db.engine import database, libpq_dsn
from smsmta.testing.settings import (
    marketing_document,
    mid_document,
    simulator_account,
    write_document,
)
from smsmta.testing.stack import Stack, free_port

SERVICES = ("mid", "mta", "sms-process", "marketing")
FAILURE_SHARE = 0.05
DLR_DELAY_MS = 300


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does (KeyboardInterrupt: every finally
    runs); once stopping, further signals are ignored so that the stop completes."""

    def stop(signum: int, frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)


def write_settings(stack: Stack, password: str) -> tuple[Path, Path]:
    ports = stack.ports
    account = simulator_account(
        "demo_sms",
        "demo",
        ports["smsc"],
        smsc_name="Simulator",
        throughput={"window": 20, "max_mt_per_second": 0, "reconnect_delay": 1},
        label="The SMSC simulator",
        channel={"transliteration": True, "short_code": "38000"},
        auto_replies=[
            {"keyword": "STOP", "reply": "You will get no more messages.", "action": "blacklist"}
        ],
    )
    mid = mid_document(
        [account],
        host_id="demo",
        level="info",
        mid={"listen": "127.0.0.1", "port": ports["mid"], "metrics_port": ports["mid_metrics"]},
        mta={"children": 2, "metrics_port": ports["mta_metrics"], "poll_interval": 0.2},
        sms_process={"metrics_port": ports["sms_metrics"]},
    )
    marketing = marketing_document(
        ports["mid"],
        "demo",
        password,
        {"name": "demo", "label": "Demo", "max_parts": 3},
        level="info",
        metrics_port=ports["marketing_metrics"],
        pull_interval=0.5,
        push_interval=0.2,
    )
    # both readable by their owner only: the marketing file holds the operator's password
    return (
        write_document(stack.folder / "mid.yaml", mid, private=True),
        write_document(stack.folder / "marketing.yaml", marketing, private=True),
    )


def kpis(url: str, delivery_id: int) -> tuple[int, int, int, int, str]:
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_send, sent, delivered, failed_hard + failed_soft, state::text "
            "FROM marketing.delivery WHERE id = %s",
            (delivery_id,),
        ).fetchone()
    assert row is not None
    to_send, sent, delivered, failed, state = row
    return to_send, sent, delivered, failed, state


def follow(stack: Stack, console: Console, delivery_id: int, total: int, timeout: float) -> float:
    """Live progress until every message has its final status; returns the seconds taken."""
    started = time.monotonic()
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        sent = progress.add_task("sent", total=total)
        delivered = progress.add_task("delivered", total=total)
        failed = progress.add_task("failed", total=total)
        while True:
            stack.check()
            to_send, _, n_delivered, n_failed, state = kpis(stack.url, delivery_id)
            progress.update(sent, completed=total - to_send)  # left the queue
            progress.update(delivered, completed=n_delivered)
            progress.update(failed, completed=n_failed)
            if state == "done" or n_delivered + n_failed >= total:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the delivery did not finish within {timeout:g} s")
            time.sleep(0.2)


@contextlib.contextmanager
def demo_folder(data_dir: str | None) -> Iterator[Path]:
    if data_dir is not None:
        folder = Path(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="smsmta-demo-", dir="/tmp"))
    folder.chmod(0o711)  # the embedded PostgreSQL's system user must traverse it (as root)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(messages: int, keep_running: bool, data_dir: str | None, timeout: float = 600.0) -> int:
    console = Console()
    if messages < 1:
        console.print("[red]--messages must be at least 1[/red]")
        return 2
    from smsmta.db import migrate

    _stop_on_signals()
    with demo_folder(data_dir) as folder, database(None, folder / "pgdata") as url:
        rendered = url.render_as_string(hide_password=False)
        stack = Stack(folder, rendered, logs=folder / "logs", die_with_parent=True, tail_chars=1500)
        try:
            console.print(f"[bold]smsmta demo[/bold] in {folder}")
            for side in ("mid", "marketing"):
                migrate.upgrade(url, side)
            console.print("  PostgreSQL 16 (embedded) started and migrated")
            for name in ("smsc", "mid", "mid_metrics", "mta_metrics", "sms_metrics",
                         "marketing_metrics"):  # fmt: skip
                stack.ports[name] = free_port()
            password = secrets.token_urlsafe(12)
            mid_path, marketing_path = write_settings(stack, password)
            stack.start(
                "smsc-sim",
                "smsc-sim",
                "--port", str(stack.ports["smsc"]),
                "--dlr-delay-ms", str(DLR_DELAY_MS),
                "--fail-rate", str(FAILURE_SHARE),
                "--seed", "1",
            )  # fmt: skip
            stack.wait_for_port(stack.ports["smsc"])
            console.print(f"  SMSC simulator on 127.0.0.1:{stack.ports['smsc']}")
            added = stack.run(
                "operator", "add", "demo", "--label", "Demo operator", "--password-stdin",
                "--config", str(mid_path),
                stdin=password + "\n",
            )  # fmt: skip
            if added.returncode != 0:
                raise RuntimeError(f"smsmta operator add failed: {added.stderr}")
            stack.start("mid", "mid", "--config", str(mid_path))
            stack.wait_for_port(stack.ports["mid"])
            stack.start("mta", "mta", "--config", str(mid_path))
            stack.start("sms-process", "sms-process", "--config", str(mid_path))
            stack.start("marketing", "marketing", "--config", str(marketing_path))
            console.print("  mid server, MTA (2 children), SMS process, marketing service started")
            csv_path = folder / "recipients.csv"
            rows = ["mobile,first_name"] + [f"+3361{i:07d},Guest{i}" for i in range(messages)]
            csv_path.write_text("\n".join(rows) + "\n")
            created = stack.run(
                "delivery", "create", "--template", "demo", "--recipients", str(csv_path),
                "--text", "Bonjour {first_name}, votre code promo expire ce soir !",
                "--label", "Demo delivery", "--json", "--config", str(marketing_path),
            )  # fmt: skip
            if created.returncode != 0:
                raise RuntimeError(f"smsmta delivery create failed: {created.stderr}")
            delivery_id = int(json.loads(created.stdout)["delivery_id"])
            console.print(f"  delivery {delivery_id}: {messages:,} recipients\n")
            seconds = follow(stack, console, delivery_id, messages, timeout)
            status = stack.run(
                "delivery", "status", str(delivery_id), "--config", str(marketing_path)
            )
            console.print(status.stdout)
            console.print(
                f"{messages:,} messages sent, delivered or failed in {seconds:.1f} s "
                f"(the simulator fails {FAILURE_SHARE:.0%} of them, as a provider would)."
            )
            p = stack.ports
            console.print("\nMetrics (Prometheus):")
            for name, key in (("mid server", "mid_metrics"), ("MTA", "mta_metrics"),
                              ("SMS process", "sms_metrics"),
                              ("marketing", "marketing_metrics")):  # fmt: skip
                console.print(f"  {name:<12} http://127.0.0.1:{p[key]}/metrics")
            console.print(f"Mid API: http://127.0.0.1:{p['mid']}/docs (operator demo)")
            console.print(f"Logs (JSON lines): {folder / 'logs'}")
            if keep_running:
                console.print("\nEverything keeps running; Ctrl-C stops it.")
                while True:
                    stack.check()
                    time.sleep(1.0)
            return 0
        except KeyboardInterrupt:
            console.print("\nStopping ...")
            return 0
        except RuntimeError as error:
            console.print(f"[red]demo failed:[/red] {error}")
            return 1
        finally:
            stack.stop()
            if data_dir is None:
                console.print("Stopped; the demo's files are removed.")
