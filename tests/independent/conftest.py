"""The SMSC we did not write (tests/independent/smsc.js, the npm package `smpp`), started
by the tests themselves through the test kit (smsmta.testing.independent).

`node_smsc` (session fixture) makes sure Node.js and npm exist (`./run tests` installs
Debian's `nodejs` and npm when they are missing; without them the tests fail, naming
what is missing) and runs `npm ci` in this directory when `node_modules` is
missing or older than `package-lock.json`. `independent_smsc(node, tmp_path, **options)`
starts one SMSC on free ports and yields an `IndependentSmsc` (re-exported from the kit).

Touches: this directory (`node_modules`, by `npm ci`), a Node.js subprocess, sockets on
127.0.0.1, the record file under the test's tmp_path.
"""

from __future__ import annotations

import pytest

from smsmta.testing.independent import IndependentSmsc as IndependentSmsc  # re-exported
from smsmta.testing.independent import ensure_node_modules
from smsmta.testing.independent import independent_smsc as independent_smsc
from tests.sms_process.conftest import sms  # noqa: F401  (the harness: a database, services)


@pytest.fixture(scope="session")
def node_smsc() -> str:
    """`node`, ready to run smsc.js. No skip: `./run tests` installs Node.js, and the
    promises against an SMSC we did not write must not vanish silently when it is missing."""
    try:
        return ensure_node_modules()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
