"""A small asyncio Redis client: one pipelined connection speaking RESP2.

Only what the response cache needs (any command as a list of byte strings: ``GET``, ``SET``, ``PING``, ``AUTH``,
``SELECT``, ``INFO``), written here because the appliance's image has no Redis client package to install.
A :class:`RedisConnection` writes each command the moment it is sent and matches replies to commands in order
(Redis answers a connection's commands in the order it got them), so any number of requests share it without a
lock, and a command sent after another is run after it. A reply that takes longer than the I/O timeout, an end of
the stream or a reply that is not RESP closes the connection: every command waiting on it fails with
:class:`RedisConnectionError`, and its owner makes a new one.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TypeAlias

#: A reply: a simple or bulk string (bytes), an integer, a null (None) or an array of replies.
Reply: TypeAlias = bytes | int | None | list["Reply"]

# Redis's own limits (proto-max-bulk-len 512 MB by default); a reply past them is not RESP from a Redis.
MAX_BULK = 512 * 1024 * 1024
MAX_ARRAY = 1024 * 1024
MAX_DEPTH = 8


class RedisError(Exception):
    """An error reply (``-ERR ...``, ``-WRONGPASS ...``): the command failed, the connection is fine."""


class RedisConnectionError(ConnectionError):
    """The connection is gone (closed, timed out, or it sent something that is not RESP)."""


def encode_command(args: tuple[bytes, ...]) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


async def read_reply(reader: asyncio.StreamReader, depth: int = 0) -> Reply | RedisError:
    """One reply from the stream. An error reply is returned (not raised): it answers one command only.
    Raises :class:`RedisConnectionError` at the end of the stream or on anything that is not RESP2."""
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError as exc:
        raise RedisConnectionError("Redis closed the connection") from exc
    except asyncio.LimitOverrunError as exc:
        raise RedisConnectionError("Redis sent a reply line longer than the reader's limit") from exc
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return bytes(body)
    if kind == b"-":
        return RedisError(body.decode(errors="replace"))
    if kind == b":":
        return _number(body)
    if kind == b"$":
        length = _number(body)
        if length == -1:
            return None
        if not 0 <= length <= MAX_BULK:
            raise RedisConnectionError(f"Redis sent a bulk string of length {length}")
        try:
            data = await reader.readexactly(length + 2)
        except asyncio.IncompleteReadError as exc:
            raise RedisConnectionError("Redis closed the connection within a reply") from exc
        if data[-2:] != b"\r\n":
            raise RedisConnectionError("Redis sent a bulk string without its CRLF")
        return data[:-2]
    if kind == b"*":
        count = _number(body)
        if count == -1:
            return None
        if not 0 <= count <= MAX_ARRAY or depth >= MAX_DEPTH:
            raise RedisConnectionError(f"Redis sent an array of {count} elements at depth {depth}")
        items: list[Reply] = []
        for _ in range(count):
            item = await read_reply(reader, depth + 1)
            if isinstance(item, RedisError):
                raise RedisConnectionError(f"Redis sent an error inside an array: {item}")
            items.append(item)
        return items
    raise RedisConnectionError(f"Redis sent a reply of unknown type {bytes(kind)!r}")


def _number(body: bytes) -> int:
    text = body.decode("ascii", errors="replace")
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
        raise RedisConnectionError(f"Redis sent {text!r} where a number belongs")
    return int(text)


class RedisConnection:
    """One open connection. :meth:`send` writes a command now and gives the future of its reply; :meth:`call`
    also waits for it, at most the I/O timeout. Everything runs on the event loop that opened it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, io_timeout_s: float) -> None:
        self._reader = reader
        self._writer = writer
        self.io_timeout_s = io_timeout_s
        self._waiting: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self._closed: str = ""  # why, once closed
        self._reading = asyncio.get_running_loop().create_task(self._read_forever())

    @classmethod
    async def open(cls, host: str, port: int, connect_timeout_s: float, io_timeout_s: float) -> RedisConnection:
        """Connect within ``connect_timeout_s``; raises OSError (TimeoutError included) when it cannot."""
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
        return cls(reader, writer, io_timeout_s)

    @property
    def closed(self) -> str:
        """Why the connection closed; empty while it is open."""
        return self._closed

    def buffered(self) -> int:
        """Bytes written but not yet sent: a Redis that cannot keep up makes this grow."""
        transport = self._writer.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size()

    def send(self, *args: bytes) -> asyncio.Future[Reply]:
        """Write a command now; the future gets its reply, :class:`RedisError` or :class:`RedisConnectionError`."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(RedisConnectionError(self._closed))
            return future
        self._waiting.append(future)
        if self._writer.transport.is_closing():  # reset by the peer before the reader saw it
            self.close("the connection was closed by Redis or the network")
            return future
        try:
            self._writer.write(encode_command(args))
        except (OSError, RuntimeError) as exc:  # uvloop raises RuntimeError on a transport it has closed
            self.close(f"write failed: {exc}")
        return future

    async def call(self, *args: bytes) -> Reply:
        """Send a command and wait for its reply; a reply later than the I/O timeout closes the connection."""
        future = self.send(*args)
        try:
            async with asyncio.timeout(self.io_timeout_s):
                return await future
        except TimeoutError:
            self.close(f"no reply within {self.io_timeout_s * 1000:g} ms")
            raise RedisConnectionError(self._closed) from None

    def close(self, why: str = "closed by the appliance") -> None:
        """Close now; every command still waiting fails with :class:`RedisConnectionError`."""
        if self._closed:
            return
        self._closed = why
        self._writer.close()
        if self._reading is not asyncio.current_task():
            self._reading.cancel()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError(why))

    async def _read_forever(self) -> None:
        try:
            while True:
                reply = await read_reply(self._reader)
                if not self._waiting:
                    raise RedisConnectionError("Redis sent a reply to no command")
                future = self._waiting.popleft()
                if future.done():  # its caller stopped waiting (cancelled)
                    continue
                if isinstance(reply, RedisError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except RedisConnectionError as exc:
            self.close(str(exc))
        except OSError as exc:
            self.close(f"connection error: {exc}")
        except Exception as exc:  # a bug here must not leave commands waiting for replies that cannot come
            self.close(f"reading replies failed: {exc!r}")
            raise
