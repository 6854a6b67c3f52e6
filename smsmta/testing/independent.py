"""The SMSC we did not write (tests/independent/smsc.js, the npm package `smpp`) and a
Python client for its control channel, for tests/independent and bench/independent_smsc.py.

`ensure_node_modules()` makes sure Node.js and npm exist (RuntimeError naming what is
missing) and runs `npm ci` in tests/independent when `node_modules` is missing or older
than `package-lock.json`. `independent_smsc(node, directory, **options)` starts one SMSC on
free ports (`node smsc.js --record FILE --config JSON`), yields an `IndependentSmsc`, and
stops it with SIGTERM (SIGKILL if it lingers) on the way out.

Touches: tests/independent (`node_modules`, by `npm ci`), a Node.js subprocess, sockets on
127.0.0.1, the record file in the directory given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[2] / "tests" / "independent"  # smsc.js, package.json
SCRIPT = HERE / "smsc.js"


def ensure_node_modules() -> str:
    """The path of `node`, after `npm ci` if `node_modules` is missing or stale.

    Raises RuntimeError naming what is missing when Node.js or npm is not installed.
    """
    node = shutil.which("node") or shutil.which("nodejs")
    npm = shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise RuntimeError(
            f"{missing} not installed: `./run tests` installs Debian's nodejs and npm "
            "(apt-get install nodejs npm)"
        )
    marker = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            check=True,
            timeout=300,
        )
    return node


@dataclass
class IndependentSmsc:
    """A running smsc.js: its ports, its record file and its control channel."""

    process: asyncio.subprocess.Process
    smpp_port: int
    control_port: int
    record_path: Path
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def command(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        """One control request ({"cmd": ..., ...}) and its JSON answer."""
        async with self._lock:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.control_port)
            try:
                writer.write(json.dumps({"cmd": cmd, **arguments}).encode() + b"\n")
                await writer.drain()
                answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
        if not answer.get("ok"):
            raise AssertionError(f"the independent SMSC refused {cmd}: {answer}")
        return answer

    async def configure(self, **options: Any) -> dict[str, Any]:
        return (await self.command("config", **options))["options"]

    async def stats(self) -> dict[str, Any]:
        return await self.command("stats")

    async def drop(self) -> int:
        """Cut every link at once; the number of links cut."""
        return int((await self.command("drop"))["dropped"])

    async def mo(
        self,
        source_addr: str,
        destination_addr: str,
        text: str,
        *,
        system_id: str,
        source_addr_ton: int = 1,
        source_addr_npi: int = 1,
    ) -> None:
        """An MO (deliver_sm, esm_class 0) on a receiver bind of `system_id`."""
        await self.command(
            "mo",
            source_addr=source_addr,
            destination_addr=destination_addr,
            text=text,
            system_id=system_id,
            source_addr_ton=source_addr_ton,
            source_addr_npi=source_addr_npi,
        )

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        """Every recorded event (or those of one kind: bind, close, submit, receipt, mo...)."""
        lines = self.record_path.read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        return [row for row in rows if event is None or row["ev"] == event]

    async def stop(self) -> None:
        await _stop(self.process)


@asynccontextmanager
async def independent_smsc(
    node: str, directory: Path, name: str = "smsc", **options: Any
) -> AsyncIterator[IndependentSmsc]:
    """smsc.js on free ports with `options` (see its header), recording to directory/NAME.jsonl."""
    record_path = directory / f"{name}.jsonl"
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            "--record",
            str(record_path),
            "--config",
            json.dumps(options),
            cwd=HERE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        if not line:
            await process.wait()
            raise AssertionError(
                f"smsc.js exited ({process.returncode}): {log_path.read_text()[-2000:]}"
            )
        ports = json.loads(line)
        smsc = IndependentSmsc(process, ports["smpp_port"], ports["control_port"], record_path)
        yield smsc
    finally:
        await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 5 s."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
