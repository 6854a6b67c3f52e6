"""What both kinds of settings file share: secrets, value types, the base model, sections.

`Secret` fields accept `${ENV_VAR}`, `${ENV_VAR:-default}` or `{file: /path}` and hold the
resolved text as a `SecretStr` (printed `**********`). `_Model` forbids unknown fields,
is frozen, and lets a section left empty in YAML (`database:`) take its defaults.
`Database`, `Logging` and `Service` are sections of both `kind: mid` and `kind: marketing`.

Touches: secret files and the environment, when a `Secret` is validated.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from smsmta.numbers import check_country

DATABASE_URL_ENV = "SMSMTA_DATABASE_URL"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _resolve_secret(value: Any) -> Any:
    """Turn `${VAR}`, `${VAR:-default}` and `{file: path}` into the secret's text."""
    if isinstance(value, dict):
        if set(value) != {"file"}:
            raise ValueError("a secret is a string, ${ENV_VAR} or {file: /path/to/file}")
        path = Path(str(value["file"]))
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ValueError(f"environment variable {name} is not set")

        return _ENV_REF.sub(substitute, value)
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]
Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
Octet = Annotated[int, Field(ge=0, le=255)]
Country = Annotated[str, AfterValidator(check_country)]
"""ISO 3166 alpha-2 country code, or empty (smsmta.numbers.check_country)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_take_defaults(cls, data: Any) -> Any:
        """A section left with only comments (`database:`) is null in YAML: use defaults.

        Only sections: a null leaf (`metrics_port: null`) keeps its meaning, "off".
        """
        if isinstance(data, dict):
            fields = cls.model_fields
            return {
                key: value
                for key, value in data.items()
                if value is not None
                or key not in fields
                or not isinstance(fields[key].default, BaseModel)
            }
        return data


class Database(_Model):
    url: Secret | None = Field(
        None,
        description=f"SQLAlchemy URL (postgresql+psycopg://...); {DATABASE_URL_ENV} overrides; "
        "absent: an embedded PostgreSQL in embedded_dir",
    )
    embedded_dir: Path | None = Field(
        None, description="data directory of the embedded PostgreSQL (default: see README)"
    )


class Logging(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    show_personal_data: bool = Field(
        False,
        description="debugging only: full phone numbers and message texts in the logs and the "
        "message log (off: a number keeps its last 2 characters, its first 4 when "
        "international; a text only its length)",
    )


MetricsPort = Annotated[int, Field(ge=0, le=65535, description="0: any free port")]


class Service(_Model):
    metrics_host: str = "127.0.0.1"
    metrics_port: MetricsPort | None = None
