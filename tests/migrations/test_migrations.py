"""Migrations: one head per branch, up and down with data, and no drift from the models."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Engine, create_engine, inspect, pool, text
from sqlalchemy.orm import Session

from smsmta import db
from smsmta.db import migrate
from smsmta.db.engine import DATABASE_URL_ENV, EMBEDDED_DIR_ENV
from tests.conftest import embedded_home

ROOT = Path(__file__).resolve().parents[2]


def engine_for(url: URL) -> Engine:
    return create_engine(url, poolclass=pool.NullPool)


MID_HEAD, MARKETING_HEAD = "mid_0011", "marketing_0003"


def test_one_head_per_branch() -> None:
    assert migrate.heads("mid") == (MID_HEAD,)
    assert migrate.heads("marketing") == (MARKETING_HEAD,)


def add_a_row_to_every_table(url: URL) -> None:
    engine = engine_for(url)
    with Session(engine) as session:
        account = db.ExternalAccount(
            internal_name="ops_sms", operator_login="ops", marketing_account="sms"
        )
        session.add(db.Operator(login="ops", label="Ops", rights=["ADMINISTRATION"]))
        session.add(account)
        session.flush()
        delivery = db.Delivery(account_id=account.id, marketing_delivery_id="42")
        log_msg = db.BroadLogMsg(key="SR sim UNDELIV 001|#MESSAGE#", first_text="SR ...")
        session.add_all([delivery, log_msg])
        session.flush()
        message = db.BroadLog(
            delivery_id=delivery.id,
            account_id=account.id,
            address="+33600000001",
            text="Hello",
            status=db.MessageStatus.FAILED,
            failure_type=db.FailureType.HARD,
            broad_log_msg_id=log_msg.id,
        )
        session.add(message)
        session.flush()
        session.add_all(
            [
                db.ProviderMsgId(
                    account_id=account.id,
                    provider_id="abc123",
                    broad_log_id=message.id,
                    delivery_id=delivery.id,
                ),
                db.InSms(
                    account_id=account.id,
                    source_addr="+33600000001",
                    destination_addr="38000",
                    text="STOP",
                    data_coding=0,
                ),
                db.ShortCodeBlacklist(short_code="38000", address="+33600000001"),
                db.MtaLease(owner="h:1:0", host_id="h", pid=1, expires_at=datetime.now(UTC)),
                db.Inbox(account_id=account.id, kind=db.InboxKind.RECEIPT, pdu=b"\x00"),
                db.Receipt(
                    account_id=account.id,
                    provider_id="abc123",
                    broad_log_id=message.id,
                    part_no=1,
                    stat="UNDELIV",
                    err="001",
                    outcome=db.ReceiptOutcome.FAILED,
                    result=db.ReceiptResult.APPLIED,
                    text="id:abc123 stat:UNDELIV err:001",
                    received_at=datetime.now(UTC),
                ),
            ]
        )
        session.flush()
        session.add_all(
            [
                db.RateShare(account_id=account.id, owner="h:1:0", share=50.0),
                db.BindSlot(account_id=account.id, slot=0, owner="h:1:0"),
                db.ReplyOutbox(
                    account_id=account.id,
                    source_addr="38000",
                    source_ton=0,
                    source_npi=0,
                    destination_addr="33600000001",
                    dest_ton=1,
                    dest_npi=1,
                    text="Bye.",
                ),
                db.DeliverySync(delivery_id=delivery.id, pushed_total=1),
                db.OperatorToken(
                    token_hash="0" * 64,
                    operator_id=session.query(db.Operator.id).scalar(),
                    expires_at=datetime.now(UTC),
                ),
                db.LoginFailure(login="nobody", failures=1),
            ]
        )
        template = db.DeliveryTemplate(internal_name="t", label="T", external_account="sms")
        recipient = db.Recipient(mobile="+33600000001", fields={"first_name": "Ada"})
        session.add_all([template, recipient])
        session.flush()
        mkt = db.MarketingDelivery(template_id=template.id, text="Hi {first_name}")
        session.add(mkt)
        session.flush()
        session.add_all(
            [
                db.DeliveryMessage(
                    delivery_id=mkt.id, recipient_id=recipient.id, address="+3360", text="Hi"
                ),
                db.DeliveryError(delivery_id=mkt.id, error="SR x", failure_type="hard", count=1),
            ]
        )
        session.commit()
    engine.dispose()


def row_counts(url: URL) -> dict[str, int]:
    engine = engine_for(url)
    counts = {}
    with engine.connect() as connection:
        for metadata in db.SIDES.values():
            for table in metadata.sorted_tables:
                counts[table.fullname] = connection.execute(
                    text(f"SELECT count(*) FROM {table.fullname}")
                ).scalar_one()
    engine.dispose()
    return counts


def test_upgrade_and_downgrade_with_rows_in_every_table(fresh_db_url: URL) -> None:
    for side in migrate.SIDE_NAMES:
        migrate.upgrade(fresh_db_url, side)
        assert migrate.current(fresh_db_url, side) == migrate.heads(side)
    add_a_row_to_every_table(fresh_db_url)
    assert set(row_counts(fresh_db_url).values()) == {1}

    for side in migrate.SIDE_NAMES:
        migrate.downgrade(fresh_db_url, side, "base")
        assert migrate.current(fresh_db_url, side) == ()
    engine = engine_for(fresh_db_url)
    with engine.connect() as connection:
        inspector = inspect(connection)
        for side, metadata in db.SIDES.items():
            assert inspector.get_table_names(schema=metadata.schema) == ["alembic_version"]
            types = connection.execute(
                text(
                    "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = :schema AND t.typtype = 'e'"
                ),
                {"schema": side},
            ).scalar_one()
            assert types == 0, f"enum types left behind in schema {side}"
    engine.dispose()

    for side in migrate.SIDE_NAMES:
        migrate.upgrade(fresh_db_url, side)
    add_a_row_to_every_table(fresh_db_url)
    assert set(row_counts(fresh_db_url).values()) == {1}


def test_models_and_migrations_agree(migrated_db_url: URL) -> None:
    engine = engine_for(migrated_db_url)
    with engine.connect() as connection:
        for side, metadata in db.SIDES.items():
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, _parents, side=side: (
                        type_ != "schema" or name == side
                    ),
                    "compare_type": True,
                    "version_table_schema": side,
                },
            )
            diff = compare_metadata(context, metadata)
            assert diff == [], f"{side}: models and migrations differ: {diff}"
    engine.dispose()


def test_sides_can_live_in_separate_databases(fresh_db_url: URL, pg_server_url: URL) -> None:
    migrate.upgrade(fresh_db_url, "marketing")
    assert migrate.current(fresh_db_url, "marketing") == (MARKETING_HEAD,)
    assert migrate.current(fresh_db_url, "mid") == ()
    engine = engine_for(fresh_db_url)
    with engine.connect() as connection:
        assert "mid" not in inspect(connection).get_schema_names()
    engine.dispose()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smsmta.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_db_upgrade_command_against_a_url(fresh_db_url: URL) -> None:
    url = fresh_db_url.render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    result = cli("db", "upgrade", "--url", url, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"mid: at {MID_HEAD}", f"marketing: at {MARKETING_HEAD}"]

    down = {**env, DATABASE_URL_ENV: url}
    result = cli("db", "downgrade", "--side", "marketing", "--revision", "marketing_0001", env=down)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["marketing: at marketing_0001"]
    result = cli("db", "current", env={**env, DATABASE_URL_ENV: url})
    assert result.stdout.splitlines() == [
        f"mid: at {MID_HEAD} (up to date)",
        f"marketing: at marketing_0001 (head is {MARKETING_HEAD})",
    ]


@pytest.mark.timeout(180)
def test_db_upgrade_command_against_the_embedded_default() -> None:
    data_dir = embedded_home("smsmta-embedded-") / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env[EMBEDDED_DIR_ENV] = str(data_dir)
    result = cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"mid: at {MID_HEAD}", f"marketing: at {MARKETING_HEAD}"]
    # the data outlives the server: a second start finds the schemas migrated
    result = cli("db", "current", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"mid: at {MID_HEAD} (up to date)",
        f"marketing: at {MARKETING_HEAD} (up to date)",
    ]
    assert (data_dir / "PG_VERSION").exists()


def test_timestamps_are_timezone_aware(migrated_db_url: URL) -> None:
    engine = engine_for(migrated_db_url)
    with Session(engine) as session:
        session.add(db.Operator(login="tz", label="TZ"))
        session.commit()
        created = session.query(db.Operator.created_at).scalar()
    engine.dispose()
    assert created.tzinfo is not None
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
