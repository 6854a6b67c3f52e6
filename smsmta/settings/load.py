"""Loading a settings file: `load(path)`, its errors, and the checks that span fields.

Two kinds of file, told apart by their top-level `kind:` (`mid`: smsmta.settings.mid,
`marketing`: smsmta.settings.marketing). `load(path)` returns a validated, immutable
model or raises `ConfigError`, which lists every problem of the file, each naming the
file, the line, the account and the dotted field. YAML aliases are counted before the
document is expanded (an alias bomb is refused). `_cross_checks` holds the rules that
span fields or accounts (naming convention, unique names, one account per SMPP login).

Touches: the file system (the YAML file) and the environment (`database_url`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from smsmta.settings.base import DATABASE_URL_ENV
from smsmta.settings.marketing import MarketingAccount, MarketingConfig
from smsmta.settings.mid import (
    Account,
    Connection,
    MidConfig,
    Receiver,
    receivers_on_login,
    smpp_server_key,
)

Config = MidConfig | MarketingConfig
# pydantic types TypeAdapter's argument as TypeForm[T], which mypy does not yet take:
# the annotated union goes in as a plain value, and the adapter's type is stated
_CONFIG_FORM: Any = Annotated[MidConfig | MarketingConfig, Field(discriminator="kind")]
_CONFIG: TypeAdapter[Config] = TypeAdapter(_CONFIG_FORM)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem of a settings file, located as precisely as the file allows."""

    file: str
    line: int | None
    account: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        who = f"account {self.account!r}: " if self.account else ""
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {who}{field}{self.message}"


class ConfigError(Exception):
    """A settings file could not be loaded; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def load(path: str | os.PathLike[str]) -> MidConfig | MarketingConfig:
    """Read, validate and cross-check one settings file."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(name, None, None, "", exc.strerror or str(exc))]) from None
    try:
        _check_aliases(name, YAML(typ="rt").compose(text))
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        message = f"not valid YAML: {exc.problem}"
        raise ConfigError([ConfigIssue(name, line, None, "", message)]) from None
    except RecursionError:
        message = "not valid YAML: nested too deeply"
        raise ConfigError([ConfigIssue(name, None, None, "", message)]) from None
    if not isinstance(document, dict):
        message = "the file must be a mapping with a 'kind:' of mid or marketing"
        raise ConfigError([ConfigIssue(name, 1, None, "", message)])
    try:
        config = _CONFIG.validate_python(_plain(document))
    except ValidationError as exc:
        raise ConfigError(_issues_from_validation(name, document, exc)) from None
    problems = list(_cross_checks(name, document, config))
    if problems:
        raise ConfigError(problems)
    return config


# Aliases (`*name`) share one node when the file is composed, but the settings are walked
# as plain data, where every alias is a copy: nine levels of nine aliases are 9**9 nodes
# (an "alias bomb": 5.3 GB for two minutes). Anchors stay allowed (`<<: *defaults`), and
# what they expand to is counted on the composed graph, before anything is copied.
MAX_EXPANDED_NODES = 100_000


def _check_aliases(name: str, root: Node | None) -> None:
    """Refuse a document whose aliases expand past MAX_EXPANDED_NODES or into themselves.

    Each distinct node is sized once (memoised by identity), so the walk costs the size of
    the file, not of its expansion. The error names the line of the deepest node that
    crosses the bound, where the multiplying aliases are."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def refuse(node: Node, message: str) -> ConfigError:
        return ConfigError([ConfigIssue(name, node.start_mark.line + 1, None, "", message)])

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise refuse(node, "an alias refers to a node that contains it (a recursive alias)")
        open_nodes.add(key)
        if isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        else:
            children = []
        total = 1 + sum(size(child) for child in children)
        if total > MAX_EXPANDED_NODES:
            raise refuse(
                node,
                f"aliases (*name) here expand to more than {MAX_EXPANDED_NODES:,} values: "
                "refused (an alias bomb?); write the values out or use fewer aliases",
            )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if root is not None:
        size(root)


def load_many(paths: Iterable[str | os.PathLike[str]]) -> list[MidConfig | MarketingConfig]:
    """Load several files; raise one ConfigError with the problems of all of them."""
    configs: list[MidConfig | MarketingConfig] = []
    problems: list[ConfigIssue] = []
    for path in paths:
        try:
            configs.append(load(path))
        except ConfigError as exc:
            problems.extend(exc.issues)
    if problems:
        raise ConfigError(problems)
    return configs


def database_url(config: MidConfig | MarketingConfig) -> str | None:
    """The database URL in force: the environment's, else the file's, else None (embedded)."""
    from_env = os.environ.get(DATABASE_URL_ENV)
    if from_env:
        return from_env
    if config.database.url is not None:
        return config.database.url.get_secret_value()
    return None


def json_schema() -> dict[str, Any]:
    """JSON Schema of both kinds of file, for editor completion."""
    return _CONFIG.json_schema()


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists (pydantic wants those)."""
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


def _locate(document: Any, loc: Sequence[int | str]) -> tuple[int | None, str | None]:
    """Line (1-based) of the deepest node of `loc` found in the document, and its account."""
    node, line, account = document, None, None
    for depth, key in enumerate(loc):
        try:
            if isinstance(node, CommentedMap) and key in node:
                line = node.lc.key(key)[0] + 1
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
                line = node.lc.item(key)[0] + 1
            else:
                break
            node = node[key]
        except (AttributeError, KeyError, TypeError):
            break
        if depth == 1 and loc[0] == "accounts" and isinstance(node, dict):
            number = key + 1 if isinstance(key, int) else key  # an index under accounts
            account = str(node.get("name") or f"#{number}")
    return line, account


# fields an Adobe-minded operator may write that smsmta does not have, and why
RETIRED_FIELDS = {
    "dedicated_process": "smsmta always sends through its own processes (MTA children "
    "send, the SMS process reconciles receipts: Adobe's 'send through a dedicated process', "
    "always on); remove it",
}


def _issues_from_validation(name: str, document: Any, error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for item in error.errors(include_url=False, include_input=False):
        loc = list(item["loc"])
        # a discriminated union prefixes its errors with the tag ('mid' or 'marketing')
        if loc and loc[0] == document.get("kind"):
            loc = loc[1:]
        line, account = _locate(document, loc)
        field = ".".join(str(part) for part in (loc[2:] if account is not None else loc))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
            if loc and loc[-1] in RETIRED_FIELDS:
                message = f"unknown field: {RETIRED_FIELDS[str(loc[-1])]}"
        elif item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field, message = "kind", "'kind:' must be 'mid' or 'marketing'"
            line = _locate(document, ["kind"])[0] or 1
        issues.append(ConfigIssue(name, line, account, field, message))
    return issues


def _cross_checks(
    name: str, document: Any, config: MidConfig | MarketingConfig
) -> Iterable[ConfigIssue]:
    """Rules that span fields or accounts: naming convention, unique names and SMPP logins."""
    seen_names: dict[str, int] = {}
    accounts: Sequence[Account | MarketingAccount] = config.accounts
    for index, account in enumerate(accounts):
        if account.name in seen_names:
            line, _ = _locate(document, ["accounts", index, "name"])
            other = seen_names[account.name]
            message = f"the name is already used by account #{other + 1} of this file"
            yield ConfigIssue(name, line, account.name, "name", message)
        seen_names.setdefault(account.name, index)
    if not isinstance(config, MidConfig):
        return
    logins: dict[tuple[str, int, str], str] = {}
    for index, account in enumerate(config.accounts):
        prefix = f"{account.operator}_"
        remainder = account.name[len(prefix) :] if account.name.startswith(prefix) else ""
        expected = f"{account.operator}_{account.marketing_account or '<marketing account>'}"
        if not remainder or (account.marketing_account and remainder != account.marketing_account):
            line, _ = _locate(document, ["accounts", index, "name"])
            message = (
                f"a mid account's internal name must be <operator login>_<marketing account "
                f"internal name>: expected {expected!r}"
            )
            yield ConfigIssue(name, line, account.name, "name", message)
        if not account.enabled:
            continue
        receivers = receivers_on_login(account)
        max_binds = account.throughput.max_binds
        if max_binds and max_binds <= receivers:
            line, _ = _locate(document, ["accounts", index, "throughput", "max_binds"])
            message = (
                f"{max_binds} leaves the MTA no bind: the SMS process's {receivers} receiver "
                f"bind(s) (connection.connections, mode tx_rx, receiver on the same login) "
                f"count against it; set at least {receivers + 1}, or give the receiver "
                f"its own login"
            )
            yield ConfigIssue(name, line, account.name, "throughput.max_binds", message)
        binds: list[tuple[str, Connection | Receiver]] = [("connection", account.connection)]
        if account.receiver is not None:
            binds.append(("receiver", account.receiver))
        for section, bind in binds:
            key = (smpp_server_key(bind.server), bind.port, bind.system_id)
            owner = logins.get(key)
            if owner is not None and owner != account.name:
                line, _ = _locate(document, ["accounts", index, section, "system_id"])
                message = (
                    f"SMPP login {bind.system_id}@{bind.server}:{bind.port} is also used by "
                    f"enabled account {owner!r}: receipts would land on the wrong account"
                )
                yield ConfigIssue(name, line, account.name, f"{section}.system_id", message)
            logins.setdefault(key, account.name)
