"""The log's last line of defence: secrets masked by key, and URL passwords in any text."""

from __future__ import annotations

from typing import Any

import pytest

from smsmta.obs import MASK, redact_secrets


@pytest.mark.parametrize(
    ("event", "hidden"),
    [
        ({"password": "pw-1"}, "pw-1"),
        ({"settings": {"connection": {"password": "pw-2"}}}, "pw-2"),
        ({"headers": {"Authorization": "Basic b3BzOnB3"}}, "b3BzOnB3"),
        ({"error": "connection to postgresql://smsmta:Db-Pw3@db/x failed"}, "Db-Pw3"),
        ({"url": "postgresql+psycopg://u:p%40ss@127.0.0.1:5432/db"}, "p%40ss"),
        ({"urls": ["https://ops:Op-Pw4@mid.example/api"]}, "Op-Pw4"),
    ],
)
def test_secrets_never_pass_the_processor(event: dict[str, Any], hidden: str) -> None:
    masked = redact_secrets(None, "info", dict(event))
    assert hidden not in repr(masked)
    assert MASK in repr(masked)


def test_urls_without_credentials_and_plain_text_are_kept() -> None:
    event = {"url": "https://mid.example:8443/api/v1", "text": "a:b@c is not a URL", "n": 3}
    assert redact_secrets(None, "info", dict(event)) == event
