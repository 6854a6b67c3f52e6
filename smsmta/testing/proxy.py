"""A TCP proxy for fault tests: forward, cut the network without FIN, resume, reset.

`TcpProxy(upstream_host, upstream_port)` listens on 127.0.0.1 (an ephemeral port,
`port` once started) and joins every connection it accepts to a new connection to the
upstream. Between them it can:

- `cut()`: stop forwarding, silently, in both directions, closing nothing. What was
  read waits in the proxy and the kernel buffers fill, as when packets stop getting
  through; a close by either side waits too (no FIN, no RST reaches the other). A
  connection accepted during a cut is held and joined to the upstream only on `resume()`,
  as a SYN that gets through late.
- `resume()`: forward again; what waited goes through in order, as TCP would retransmit
  it, then any close that waited.
- `reset()`: abort every connection on both sides with an RST (SO_LINGER 0).

Touches: one listening socket on 127.0.0.1 and two sockets per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["TcpProxy"]

_CHUNK = 256 * 1024


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.resets = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._forwarding.set()
        self.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def cut_now(self) -> bool:
        return not self._forwarding.is_set()

    def cut(self) -> None:
        """Stop forwarding in both directions, closing nothing (a network cut, no FIN)."""
        self._forwarding.clear()

    def resume(self) -> None:
        """Forward again; what waited during the cut goes through first."""
        self._forwarding.set()

    def reset(self) -> int:
        """Abort every connection, both sides, with an RST; return how many pairs."""
        pairs = list(self._pairs)
        for pair in pairs:
            for writer in pair:
                if writer is not None:
                    _abort(writer)
        self._pairs.clear()
        self.resets += len(pairs)
        return len(pairs)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
        self._pairs.add(pair)
        try:
            await self._forwarding.wait()  # a connection made during a cut waits for the end
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                _abort(writer)
                return
            self._pairs.discard(pair)
            if writer.is_closing():  # reset while waiting
                _abort(up_writer)
                return
            pair = (writer, up_writer)
            self._pairs.add(pair)
            for end in (writer, up_writer):
                sock = end.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        except asyncio.CancelledError:
            pass  # stop(): the streams' callback must not see a cancelled task
        finally:
            self._pairs.discard(pair)
            for side in pair:
                if side is not None:
                    side.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        forwarding = self._forwarding
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not forwarding.is_set():
                    await forwarding.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
