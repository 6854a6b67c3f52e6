"""One SMSC written two ways is still one SMPP login: the duplicate-login check folds them.

SPEC section 2: the same login (server + port + system_id) on two enabled accounts makes
receipts land on the wrong account, so loading refuses it. The check once compared the
server as typed, so `localhost` and `127.0.0.1` passed as two servers. Servers are now
compared in a normal form, with no name resolution (no network at load): lower case, no
trailing dot or brackets, IP addresses in their canonical text (IPv4-mapped IPv6 as the
IPv4 address, inet_aton's short forms such as `127.1` expanded), and the names of the
loopback (`localhost`, `*.localhost`, `ip6-localhost`, ...) folded with 127.0.0.1 and ::1.
Other loopback addresses (127.0.0.2) stay distinct: a server may listen on one only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smsmta import settings
from smsmta.settings import ConfigError, load


def account(name: str, server: str) -> str:
    return f"""\
  - name: ops_{name}
    operator: ops
    connection:
      mode: trx
      smsc_name: Sim
      server: "{server}"
      port: 2775
      system_id: alpha
      password: secret
"""


SAME = [
    ("localhost", "127.0.0.1"),
    ("LOCALHOST.", "::1"),
    ("127.0.0.1", "::ffff:127.0.0.1"),
    ("[::1]", "0:0:0:0:0:0:0:1"),
    ("127.1", "localhost"),
    ("smsc.example.com", "SMSC.Example.com."),
    ("10.0.0.5", "::ffff:10.0.0.5"),
]


@pytest.mark.parametrize(("first", "second"), SAME)
def test_two_spellings_of_one_server_are_one_login(tmp_path: Path, first: str, second: str) -> None:
    path = tmp_path / "mid.yaml"
    path.write_text("kind: mid\naccounts:\n" + account("a", first) + account("b", second))
    with pytest.raises(ConfigError) as caught:
        load(path)
    (issue,) = caught.value.issues
    assert issue.account == "ops_b" and issue.field == "connection.system_id"
    assert "also used by enabled account 'ops_a'" in issue.message
    assert issue.line == 19


@pytest.mark.parametrize(
    ("first", "second"),
    [("127.0.0.1", "127.0.0.2"), ("smsc-a", "smsc-b"), ("10.0.0.5", "10.0.0.6")],
)
def test_different_servers_stay_different(tmp_path: Path, first: str, second: str) -> None:
    path = tmp_path / "mid.yaml"
    path.write_text("kind: mid\naccounts:\n" + account("a", first) + account("b", second))
    assert len(load(path).accounts) == 2
    assert settings.smpp_server_key(first) != settings.smpp_server_key(second)


def test_a_receiver_on_the_same_login_written_otherwise_counts_against_max_binds(
    tmp_path: Path,
) -> None:
    """A tx_rx account whose receiver names the transmitter's server another way shares
    its login: the SMS process's receiver binds count against max_binds, so a max_binds
    that leaves the MTA no bind is refused however the server is written."""
    path = tmp_path / "mid.yaml"
    path.write_text(
        "kind: mid\naccounts:\n"
        "  - name: ops_a\n    operator: ops\n"
        "    connection:\n      mode: tx_rx\n      smsc_name: Sim\n      server: localhost\n"
        "      port: 2775\n      system_id: alpha\n      password: secret\n"
        "      connections: 2\n"
        "    receiver:\n      server: 127.0.0.1\n      port: 2775\n      system_id: alpha\n"
        "      password: secret\n"
        "    throughput:\n      max_binds: 2\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert [issue.field for issue in caught.value.issues] == ["throughput.max_binds"]
