"""The response cache in Redis (``--cache-config redis,host=H,port=P``): one store shared by many appliances.

Each response is one Redis string under ``appliance:response:`` and the 32-byte :func:`~.cache.response_key`
digest, in the format of :mod:`.cache_codec` (plain data, checked when read: never pickle). Entries have no TTL:
size and eviction are Redis's own (``maxmemory`` with an ``allkeys-lru`` policy makes it an LRU cache like the
local one).

A Redis that is down, slow or strange costs a request a miss, never a failure or a stall:

- Requests use one pipelined :class:`~.resp.RedisConnection` (no lock: Redis answers in order). While there is
  none, a lookup is a miss without any I/O and an insert is skipped.
- A reply later than ``socket_timeout`` (100 ms by default), a connection that ends, or a connect that takes
  longer than ``connect_timeout`` marks the cache down; a background task tries again every
  ``reconnect_interval_s`` (1 s) until Redis answers ``PING``, and the cache serves again. An outage is logged
  once, and its end once.
- A value that is not ours (another writer, a truncated value) is a miss, logged the first time.

``put`` does not wait for Redis's answer: ``SET`` is written to the connection at once and its reply read in the
background, so a miss is not slowed by a round trip to Redis. Since the connection runs commands in the order
written, any lookup sent after the insert (the same request again, from any client) already sees it. A ``SET``
that fails (Redis out of memory under ``noeviction``) is logged once; one that is lost with the connection is
simply not kept. Inserts are dropped while more than ``MAX_BUFFERED`` bytes wait to be sent (a Redis that cannot
keep up), so an outage cannot pile responses up in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..settings import RedisCacheConfig
from .cache import CacheStatistics, ResponseCache
from .cache_codec import MalformedEntry, decode_outputs, encode_outputs
from .resp import RedisConnection, RedisConnectionError, RedisError, Reply
from .types import OutputTensor

log = logging.getLogger(__name__)

KEY_PREFIX = b"appliance:response:"
MAX_BUFFERED = 8 * 1024 * 1024


class RedisResponseCache(ResponseCache):
    """Responses in the Redis server ``config`` names. Counts its own hits and misses; evictions, entries,
    bytes and budget are the Redis database's (``INFO``: ``evicted_keys``, the keys of ``db``, ``used_memory``,
    ``maxmemory``), read at each :meth:`refresh_statistics`."""

    def __init__(self, config: RedisCacheConfig, reconnect_interval_s: float = 1.0) -> None:
        self.config = config
        self.reconnect_interval_s = reconnect_interval_s
        self.where = f"{config.host}:{config.port}"
        self._connection: RedisConnection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        self._outage_logged = False
        self._logged: set[str] = set()  # problems already logged once
        self._hits = 0
        self._misses = 0
        self._figures = (0, 0, 0, 0)  # evictions, entries, bytes, budget: Redis's, as of the last INFO

    # -- requests ----------------------------------------------------------------------------------

    async def get(self, key: bytes) -> list[OutputTensor] | None:
        connection = self._usable()
        if connection is not None:
            try:
                value = await connection.call(b"GET", KEY_PREFIX + key)
            except RedisConnectionError:
                self._usable()  # notes the loss and starts reconnecting
            except RedisError as exc:  # a key of ours holding another type, say
                self._log_once("get", "response cache: Redis at %s refused a GET (%s); treated as a miss", exc)
            except Exception as exc:  # never a failed request because of the cache
                connection.close(f"lookup failed: {exc!r}")
                self._usable()
                self._log_once("bug", "response cache: a lookup in Redis at %s failed unexpectedly (%r)", exc)
            else:
                outputs = self._decode(value)
                if outputs is not None:
                    self._hits += 1
                    return outputs
        self._misses += 1
        return None

    def _decode(self, value: Reply) -> list[OutputTensor] | None:
        if value is None:
            return None
        try:
            if not isinstance(value, bytes):
                raise MalformedEntry(f"a {type(value).__name__} reply to GET")
            return decode_outputs(value)
        except MalformedEntry as exc:
            self._log_once(
                "malformed", "response cache: a value in Redis at %s is not a stored response (%s); a miss", exc
            )
            return None

    async def put(self, key: bytes, outputs: Sequence[OutputTensor]) -> None:
        connection = self._usable()
        if connection is None or connection.buffered() > MAX_BUFFERED:
            return
        try:
            value = encode_outputs(outputs)
        except Exception as exc:  # a rank or name the format cannot hold: not kept, never a failed request
            self._log_once("encode", "response cache: a response cannot be stored in Redis at %s (%s)", exc)
            return
        connection.send(b"SET", KEY_PREFIX + key, value).add_done_callback(self._stored)

    def _stored(self, future: asyncio.Future[Reply]) -> None:
        if future.cancelled():
            return
        exc = future.exception()  # a lost connection is noticed by the next request
        if isinstance(exc, RedisError):
            self._log_once("set", "response cache: Redis at %s refused to keep a response (%s)", exc)

    def statistics(self) -> CacheStatistics:
        evictions, entries, size, budget = self._figures
        return CacheStatistics(self._hits, self._misses, evictions, entries, size, budget, self.available)

    @property
    def available(self) -> bool:
        """Whether requests use Redis now."""
        return self._connection is not None and not self._connection.closed

    # -- the connection ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect once; when Redis is not there, the server starts anyway and keeps trying in the background."""
        if not await self._connect():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._connection is not None:
            self._connection.close()

    def _usable(self) -> RedisConnection | None:
        """The connection when it is up; else None, and a reconnect under way (after the back-off)."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if connection is not None:
            self._connection = None
            self._outage(connection.closed)
        if self._reconnecting is None and not self._closed:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        return None

    async def _reconnect(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.reconnect_interval_s)
                if await self._connect():
                    return
        finally:
            self._reconnecting = None

    async def _connect(self) -> bool:
        """Open, authenticate, select the database and PING; on success the connection serves requests."""
        c = self.config
        try:
            connection = await RedisConnection.open(
                c.host, c.port, c.connect_timeout_ms / 1000, c.socket_timeout_ms / 1000
            )
        except OSError as exc:  # refused, unreachable, timed out, unknown host
            self._outage(f"cannot connect: {exc or type(exc).__name__}")
            return False
        try:
            if c.password:
                await connection.call(b"AUTH", *([c.user.encode()] if c.user else []), c.password.encode())
            if c.db:
                await connection.call(b"SELECT", str(c.db).encode())
            await connection.call(b"PING")
        except (RedisConnectionError, RedisError) as exc:
            connection.close()
            self._outage(f"{exc}")
            return False
        self._connection = connection
        if self._outage_logged:
            log.info("response cache: Redis at %s is back; responses are cached again", self.where)
        else:
            log.info("response cache: Redis at %s, database %d", self.where, c.db)
        self._outage_logged = False
        await self.refresh_statistics()
        return True

    def _outage(self, why: str) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "response cache: Redis at %s is unavailable (%s); requests run without the cache until it answers "
                "again (trying every %g s)",
                self.where,
                why,
                self.reconnect_interval_s,
            )

    def _log_once(self, problem: str, message: str, exc: Exception) -> None:
        if problem not in self._logged:
            self._logged.add(problem)
            log.warning(message + " (logged once)", self.where, exc)

    # -- Redis's figures -----------------------------------------------------------------------------

    async def refresh_statistics(self) -> None:
        """Read ``INFO`` for the evictions, keys, memory and ``maxmemory``; kept as they were when it fails."""
        connection = self._usable()
        if connection is None:
            return
        try:
            reply = await connection.call(b"INFO")
        except RedisConnectionError:
            self._usable()
            return
        except RedisError:
            return
        if isinstance(reply, bytes):
            self._figures = parse_info(reply, self.config.db)


def parse_info(text: bytes, db: int) -> tuple[int, int, int, int]:
    """``INFO``'s evicted_keys, the keys of database ``db``, used_memory and maxmemory (0 where absent)."""
    fields: dict[str, str] = {}
    for line in text.decode(errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value.strip()
    keys = 0
    for item in fields.get(f"db{db}", "").split(","):
        name, _, value = item.partition("=")
        if name == "keys" and value.isdigit():
            keys = int(value)

    def number(name: str) -> int:
        value = fields.get(name, "")
        return int(value) if value.isascii() and value.isdigit() else 0

    return number("evicted_keys"), keys, number("used_memory"), number("maxmemory")
