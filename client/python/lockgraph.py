#!/usr/bin/env python3
"""lockgraph.py: a Python client of lockgraphd, speaking the JSON encoding over ZeroMQ.

    from lockgraph import Client, LockgraphError

    with Client(["tcp://127.0.0.1:7790"]) as client:          # hello
        try:
            lease = client.acquire("tx-17", "account:7", wait_ms=2000)
        except LockgraphError as e:                            # e.code, e.deadlock
            ...
        else:
            write_to_storage(fencing_token=lease.token)
            client.release(lease)

It mirrors the C++ client (client/include/lockgraph/client.h) and the wire contract
(shared/PROTOCOL.md, JSON encoding). Only the standard library and pyzmq are used.

Threading: a Client may be used from many threads at once. One background thread (the
I/O thread) alone touches the ZeroMQ DEALER socket. Callers put their requests on a queue
(under a lock, so that ids go out in increasing order) and wake it through an inproc
socket. It sends them, heartbeats every ``heartbeat_ms`` (acknowledging the events it has
received with ``acked_seq``, as every session-scoped request does), resends a request
that has no reply after 500 ms with the same id (the daemon answers a repeated id from its
reply cache), reconnects (next endpoint, jittered exponential backoff) when a request was
sent twice with no word from the daemon since, and routes what arrives: replies to the
callers waiting for them by id; events, after dropping those sent again (``seq`` not
above the last one received), to the ``acquire`` they answer (by ``id``) and to the event
queue (:meth:`Client.poll_event`) or callback (:meth:`Client.on_event`). The callback
runs on a dispatch thread of its own, so it may call the client.

Timeouts: no call blocks forever. A request waits at most ``request_timeout_ms`` for its
reply (across resends), then raises ``LockgraphError("TIMEOUT", ...)``. A queued
``acquire`` waits at most ``wait_ms + request_timeout_ms`` for its grant (``wait_ms=-1``:
for as long as the daemon keeps answering), then cancels itself with ``unwait``.

Restarts: as the C++ client does (client.h "Restarts"). The client remembers the daemon's
``epoch`` from its hello; when a reply (every heartbeat reply carries it) shows a larger
one, the daemon restarted and restored the session and its arbitrate leases: the client
sends one ``reclaim`` of every arbitrate lease it holds, batched behind a heartbeat so that
the reply names the boot that answered. A reclaimed lease stays (:meth:`Client.held`
shows its advisory deadline restarted from the reclaim's send time, when that boot had
restored it); a refused one gets the synthetic ``revoked`` event (``seq`` 0, ``reason``
``"expired"``) of a lost session's leases and is forgotten. A GRACE reply brings the next
heartbeat forward. ``acquire`` retries GRACE with jittered exponential backoff within its
budget (``wait_ms``; ``request_timeout_ms`` for a try; no limit for ``wait_ms=-1``), then
raises it; an acquire queued before the restart asks the daemon (``unwait``) what became
of its wait and is asked again. ``renew`` answered GRACE reclaims first, then renews once
more.

Wire values: ``lease`` and ``token`` travel as JSON strings of decimal digits; this module
converts them to ``int`` in everything it returns (replies, events, listings) and back to
strings in everything it sends.

Run as a script it is a small command-line tool; see ``python3 lockgraph.py --help``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import logging
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import zmq

__all__ = ["Client", "Lease", "LockgraphError", "PROTOCOL_VERSION", "DEFAULT_ENDPOINT"]

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:7790"

log = logging.getLogger("lockgraph")

# Ops that carry session and secret; the queries, revoke and hello do not.
_SESSIONLESS_OPS = frozenset({"hello", "graph", "stats", "leases", "deadlocks", "revoke"})
# Keys whose values are 64-bit ids travelling as strings of digits.
_ID_KEYS = frozenset({"lease", "token"})
_ID_LIST_KEYS = frozenset({"revoked"})

_RESEND_AFTER_S = 0.5
_BACKOFF_MIN_MS = 50
_BACKOFF_MAX_MS = 2000
_SAFETY_MARGIN_S = 0.25
_MAX_QUEUED_EVENTS = 1 << 16
_ORPHAN_KEEP_S = 60.0  # a call whose caller left is resent (to undo its effect) this long


class LockgraphError(Exception):
    """An error reported by the daemon, or ``TIMEOUT`` when the daemon did not answer.

    Attributes:
        code: the protocol error code (``"DEADLOCK"``, ``"TIMEOUT"``, ``"NOT_OWNER"``, ...).
        message: the human text.
        deadlock: the deadlock report (a dict: ``cycle``, ``victim``, ``why``,
            ``detected_at_us``, ...) when the code is ``DEADLOCK``, else ``None``.
        started: the owner's ``started`` when the daemon returned it (pass it back to a
            retried ``acquire`` to keep the owner's age), else ``None``.
        leader: the leader's endpoint with ``NOT_LEADER``, else ``None``.
        reply: the whole reply or event dict the error came from, if any.
    """

    def __init__(self, code: str, message: str = "", deadlock: dict | None = None, *,
                 started: int | None = None, leader: str | None = None,
                 reply: dict | None = None) -> None:
        """Builds an error from its code, text and (for DEADLOCK) report."""
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.deadlock = deadlock
        self.started = started
        self.leader = leader
        self.reply = reply

    @classmethod
    def from_reply(cls, reply: dict) -> "LockgraphError":
        """Builds the error of a reply with ``"ok": false``."""
        err = reply.get("error")
        if not isinstance(err, dict):
            err = {"code": "INTERNAL", "message": f"reply without a usable error: {reply!r}"}
        return cls(str(err.get("code", "INTERNAL")), str(err.get("message", "")),
                   _dict_or_none(err.get("deadlock", reply.get("deadlock"))),
                   started=_int_or_none(err.get("started", reply.get("started"))),
                   leader=err.get("leader", reply.get("leader")), reply=reply)

    @classmethod
    def from_denied(cls, event: dict) -> "LockgraphError":
        """Builds the error of a ``denied`` event."""
        code = str(event.get("code", "INTERNAL"))
        message = (f"acquire of {event.get('resource', '?')} by {event.get('owner', '?')} "
                   f"denied: {code}")
        deadlock = _dict_or_none(event.get("deadlock"))
        if deadlock is not None:
            message += f" (victim {deadlock.get('victim', '?')}"
            message += f": {deadlock['why']})" if deadlock.get("why") else ")"
        return cls(code, message, deadlock, reply=event)


@dataclass
class Lease:
    """A lease: a hold of ``resource`` by ``owner`` in ``mode`` (``"X"`` or ``"S"``).

    ``token`` is the fencing token: pass it to the storage you protect. ``lease`` is the
    lease id (the token of its first grant). ``started`` is the owner's start as the
    daemon stamped it (pass it back to a retried acquire to keep the owner's age).
    ``reported`` is true for report-mode holds (:meth:`Client.hold`). ``valid_until`` is
    an advisory ``time.monotonic()`` deadline after which the lease may be gone,
    computed from the client's send time of its grant or last renewal minus a margin;
    only fencing tokens make a lease safe.
    """

    lease: int
    token: int
    owner: str
    resource: str
    mode: str = "X"
    started: int | None = None
    reported: bool = False
    valid_until: float | None = field(default=None, compare=False)


# ---------------------------------------------------------------- wire helpers

def _int_or_none(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _dict_or_none(v: Any) -> dict | None:
    return v if isinstance(v, dict) else None


def _to_wire(value: Any, key: str | None = None) -> Any:
    """Ints under lease/token keys become strings of digits, recursively."""
    if isinstance(value, dict):
        return {k: _to_wire(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if key in _ID_LIST_KEYS:
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return [_to_wire(v) for v in value]
    if key in _ID_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Lease):
        return str(value.lease)
    return value


def _from_wire(value: Any, key: str | None = None) -> Any:
    """Strings of digits under lease/token keys (and in revoked lists) become ints."""
    if isinstance(value, dict):
        return {k: _from_wire(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key in _ID_LIST_KEYS:
            return [int(v) if isinstance(v, str) and v.isdigit() else v for v in value]
        return [_from_wire(v) for v in value]
    if key in _ID_KEYS and isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _encode(msg: dict) -> bytes:
    return json.dumps(_to_wire(msg), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check_mode(mode: str) -> str:
    if mode not in ("X", "S"):
        raise ValueError(f'mode must be "X" or "S", got {mode!r}')
    return mode


# ---------------------------------------------------------------- internals

class _Call:
    """A request: queued by a caller (or the I/O thread), sent and resent by the I/O
    thread, answered by id. Fields other than ``done``/``reply``/``error`` belong to
    the I/O thread."""

    __slots__ = ("id", "msg", "op", "session_scoped", "waiter", "done", "reply", "error",
                 "ever_sent", "sends", "first_sent", "last_sent", "first_connection",
                 "deadline_s", "deadline", "give_up", "sent_session")

    def __init__(self, rid: int, msg: dict, deadline_s: float | None, waiter: bool) -> None:
        self.id = rid
        self.msg = msg
        self.op: str = msg["op"]
        self.session_scoped = self.op not in _SESSIONLESS_OPS
        self.waiter = waiter            # a caller waits for the reply
        self.done = threading.Event()
        self.reply: dict | None = None
        self.error: LockgraphError | None = None
        self.ever_sent = False
        self.sends = 0                  # on the current connection
        self.first_sent = 0.0
        self.last_sent = 0.0
        self.first_connection = 0
        self.deadline_s = deadline_s    # relative; fixed to an absolute time when queued
        self.deadline = 0.0
        self.give_up = 0.0              # callerless calls (orphans) stop being resent then
        self.sent_session = ""


class _AcquireWait:
    """A queued acquire waiting for its granted/denied event (or for a lost session)."""

    __slots__ = ("event", "error", "done", "grant_bound", "owner", "resource", "queued",
                 "restart_unwait")

    def __init__(self, owner: str = "", resource: str = "") -> None:
        self.event: dict | None = None
        self.error: LockgraphError | None = None
        self.done = threading.Event()
        self.grant_bound = 0.0
        self.owner = owner
        self.resource = resource
        self.queued = False          # its acquire was answered "queued"
        self.restart_unwait = False  # queued before a restart: an unwait decides its fate


@dataclass
class _Tracked:
    owner: str
    resource: str
    mode: str
    token: int
    ttl_ms: int | None
    reported: bool = False  # from hold: soft state, never restored nor reclaimed
    # The daemon epoch that last granted, renewed or reclaimed it: a reclaim answered by
    # a later boot restarted its TTL; one answered by the same boot changed nothing.
    epoch: int = 0
    valid_until: float | None = None  # advisory, as Lease.valid_until


class Client:
    """One lockgraph session: its socket, heartbeats, requests and events.

    Connecting says ``hello``; :meth:`close` (or leaving the ``with`` block) says ``bye``,
    which releases everything the session holds or waits for. When the daemon forgets
    the session (``UNKNOWN_SESSION``: it expired, or the daemon restarted), every lease
    the client believed it held is reported by a ``revoked`` event with ``seq`` 0 and
    ``reason`` ``"expired"``, queued acquires fail with ``UNKNOWN_SESSION``, and the
    client says hello again; calls made meanwhile wait for the new session (within
    their own timeout). When the daemon restarted and restored the session, the client
    reclaims its leases by itself (see "Restarts" in the module documentation).
    """

    def __init__(self, endpoints: Iterable[str] | str = (DEFAULT_ENDPOINT,),
                 client_name: str = "lockgraph.py", session_ttl_ms: int = 10000,
                 priority: int = 0, request_timeout_ms: int = 5000,
                 labels: dict[str, str] | None = None) -> None:
        """Connects a DEALER socket to the first endpoint and says hello.

        Args:
            endpoints: daemon endpoints (or one as a string). One is used at a time; when
                it stops answering (a request sent twice with no word from the daemon
                since) the client reconnects to the next one, with jittered exponential
                backoff, and resends what is unanswered; a ``NOT_LEADER`` reply moves it
                to the leader that the reply names.
            client_name: sent in ``hello`` (shown in the daemon's logs and listings).
            session_ttl_ms: the session ends this long after the daemon last heard from it.
            priority: the session's victim priority (lower loses).
            request_timeout_ms: how long one request waits for its reply, across resends.
            labels: optional ``hello`` labels (string values).

        Raises:
            LockgraphError: the daemon refused the hello, or ``TIMEOUT`` when no endpoint
                answered within ``request_timeout_ms``.
        """
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self._endpoints: list[str] = list(endpoints)
        if not self._endpoints:
            raise ValueError("at least one endpoint is needed")
        if request_timeout_ms <= 0:
            raise ValueError("request_timeout_ms must be positive")
        if session_ttl_ms <= 0:
            raise ValueError("session_ttl_ms must be positive")
        self._timeout_s = request_timeout_ms / 1000.0
        self._hello_msg: dict[str, Any] = {"op": "hello", "client": client_name,
                                           "ttl_ms": int(session_ttl_ms), "priority": int(priority)}
        if labels:
            self._hello_msg["labels"] = {str(k): str(v) for k, v in labels.items()}

        # Shared with callers, under _lock.
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._outbox: collections.deque[_Call] = collections.deque()  # in id order
        self._waiters: dict[int, _AcquireWait] = {}
        self._started: dict[str, int] = {}
        self._leases: dict[int, _Tracked] = {}
        self._orphan_acquires: dict[int, float] = {}  # acquire id -> forget at
        self._session = ""
        self._secret = ""
        self._heartbeat_s = max(0.001, session_ttl_ms / 3000.0)
        self._epoch: int | None = None
        self._server = ""
        self._closing = False
        self._closed = False

        # Events, under _events_cv.
        self._events: collections.deque[dict] = collections.deque()
        self._events_cv = threading.Condition()
        self._callback: Callable[[dict], None] | None = None
        self._dispatcher: threading.Thread | None = None

        # The I/O thread's own.
        self._calls: dict[int, _Call] = {}
        self._session_ok = False
        self._hello_id = 0
        self._rehello_at: float | None = None
        self._heartbeat_id = 0
        self._next_heartbeat = float("inf")
        self._last_seq = 0
        self._connection = 0
        self._reply_bound = 0.0
        self._backoff_s = _BACKOFF_MIN_MS / 1000.0
        self._reconnect_at = 0.0
        self._reconnect_requested = False
        self._leader_hint = ""
        self._endpoint_index = 0
        self._endpoint = self._endpoints[0]
        self._sock: zmq.Socket | None = None
        self._rng = random.Random()
        self._last_heard = time.monotonic()
        self._oldest_unanswered: float | None = None
        self._reclaim_id = 0                       # the reclaim batch out, 0: none
        self._reclaim_leases: list[int] = []       # its items' leases, in order
        self._reclaim_again = False                # another reclaim is due ...
        self._reclaim_at = 0.0                     # ... not before this
        self._restart_unwaits: dict[int, int] = {}  # unwait id -> the queued acquire's id
        self._reclaim_cv = threading.Condition(self._lock)  # notified when a reclaim ends

        self._ctx = zmq.Context()
        self._wake_addr = f"inproc://lockgraph-wake-{id(self):x}-{random.getrandbits(32):08x}"
        self._wake_pull = self._ctx.socket(zmq.PULL)
        self._wake_pull.setsockopt(zmq.LINGER, 0)
        self._wake_pull.bind(self._wake_addr)
        self._wake_push = self._ctx.socket(zmq.PUSH)
        self._wake_push.setsockopt(zmq.LINGER, 0)
        self._wake_push.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._poller = zmq.Poller()
        self._poller.register(self._wake_pull, zmq.POLLIN)
        self._io = threading.Thread(target=self._run, name="lockgraph-io", daemon=True)
        self._io.start()

        try:
            self._request(dict(self._hello_msg))
        except BaseException:
            self._shutdown()
            raise

    # ------------------------------------------------------------ properties

    @property
    def session(self) -> str:
        """The current session id (it changes when the client had to say hello again)."""
        with self._lock:
            return self._session

    @property
    def heartbeat_ms(self) -> int:
        """The heartbeat interval the daemon asked for in its hello reply."""
        return int(round(self._heartbeat_s * 1000))

    @property
    def epoch(self) -> int | None:
        """The daemon's epoch at the last hello (tokens are ``epoch << 40 | seq``)."""
        return self._epoch

    @property
    def server(self) -> str:
        """The daemon's name and version, from its hello reply."""
        return self._server

    @property
    def endpoint(self) -> str:
        """The endpoint in use (or last used)."""
        return self._endpoint

    def started(self, owner: str) -> int | None:
        """The owner's ``started`` as last returned by the daemon, if known."""
        with self._lock:
            return self._started.get(owner)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Says bye (releasing everything the session holds or waits for; bounded by
        request_timeout), stops the background threads and closes the sockets.
        Idempotent; an error of the bye is logged, not raised. Calls still waiting
        fail with ``CANCELLED``."""
        with self._lock:
            if self._closing:
                return
            session_ok = bool(self._session)
        if session_ok and self._io.is_alive():
            try:
                self._request({"op": "bye"})
            except LockgraphError as e:
                log.debug("bye: %s", e)
        self._shutdown()

    def __enter__(self) -> "Client":
        """Returns the client; leaving the block closes it."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Closes the client (says bye)."""
        self.close()

    def _shutdown(self) -> None:
        with self._lock:
            self._closing = True
        self._wake()
        if threading.current_thread() is not self._io:
            self._io.join(timeout=self._timeout_s + 1.0)
        with self._events_cv:
            self._events_cv.notify_all()
        d = self._dispatcher
        if d is not None and d is not threading.current_thread():
            d.join(timeout=1.0)
        with self._wake_lock:
            self._closed = True
            self._wake_push.close(linger=0)
        if not self._io.is_alive():  # else it is stuck: leave the context to the GC
            self._ctx.term()

    # ------------------------------------------------------------ arbitrate mode

    def acquire(self, owner: str, resource: str, mode: str = "X", ttl_ms: int = 30000,
                wait_ms: int = 0, site: str = "", started: int | None = None) -> Lease:
        """Acquires ``resource`` for ``owner`` in ``mode`` (``"X"`` or ``"S"``).

        Granted at once, or queued: then waits for the ``granted`` or ``denied`` event
        of this request for up to ``wait_ms + request_timeout_ms`` (``wait_ms=-1``: for
        as long as the daemon keeps answering). With no answer by then it cancels the
        request (``unwait``) and still returns the lease when the grant won that race.
        A caller that gave up before the reply leaves nothing behind: a late grant is
        released and a late queueing cancelled in the background.

        Args:
            owner: the owner's name within this session (a thread, transaction, task).
            resource: the resource name, ``class:key``.
            mode: ``"X"`` exclusive or ``"S"`` shared; ``"X"`` on an ``"S"`` hold upgrades.
            ttl_ms: the lease ends this long after its grant or last renew.
            wait_ms: 0 tries once (``TIMEOUT`` if busy), N queues up to N ms, -1 forever.
            site: where in the caller's code (shown in deadlock reports).
            started: the owner's ``started`` from an earlier attempt (keeps its age);
                see also :meth:`started` and ``LockgraphError.started``.

        Returns:
            The lease, with its fencing token.

        Raises:
            LockgraphError: ``TIMEOUT`` (busy with ``wait_ms=0``, the wait ran out, or
                no answer), ``DEADLOCK`` (this owner is the victim; ``.deadlock`` is the
                report), ``CANCELLED``, ``ORDER_VIOLATION``, ``BAD_REQUEST``,
                ``UNKNOWN_SESSION`` (the session was lost while queued), ``GRACE`` (the
                daemon restarted and was still recovering when the budget ran out: it is
                retried until then, see "Restarts"), ...
        """
        _check_mode(mode)
        if wait_ms < -1:
            raise ValueError("wait_ms must be -1 (forever), 0 (try) or positive")
        start = time.monotonic()
        if wait_ms < 0:
            budget_end = float("inf")
        else:
            budget_end = start + (wait_ms / 1000.0 if wait_ms > 0 else self._timeout_s)
        backoff = _BACKOFF_MIN_MS / 1000.0
        attempt = 0
        while True:
            attempt += 1
            this_wait = wait_ms
            if attempt > 1 and wait_ms > 0:
                # A retry queues for what is left of the caller's wait.
                this_wait = max(1, int((budget_end - time.monotonic()) * 1000 + 0.999))
            try:
                return self._acquire_once(owner, resource, mode, ttl_ms, this_wait, site, started)
            except LockgraphError as e:
                if e.code != "GRACE":
                    raise
                if e.started is not None:  # keep the owner's age across the retries
                    started = e.started if started is None else min(started, e.started)
                now = time.monotonic()
                pause = backoff * random.uniform(0.5, 1.5)
                backoff = min(backoff * 2, _BACKOFF_MAX_MS / 1000.0)
                until = min(now + pause, budget_end)
                while not self._closing and time.monotonic() < until:
                    time.sleep(min(0.05, max(0.0, until - time.monotonic())))
                if self._closing or time.monotonic() >= budget_end:
                    e.message += (f" (acquire of {resource} by {owner}: {attempt} attempt(s) over "
                                  f"{int((time.monotonic() - start) * 1000)} ms)")
                    e.args = (f"{e.code}: {e.message}",)
                    raise

    def _acquire_once(self, owner: str, resource: str, mode: str, ttl_ms: int, wait_ms: int,
                      site: str, started: int | None) -> Lease:
        msg: dict[str, Any] = {"op": "acquire", "owner": owner, "resource": resource,
                               "mode": mode, "ttl_ms": int(ttl_ms), "wait_ms": int(wait_ms)}
        if site:
            msg["site"] = site
        if started is not None:
            msg["started"] = int(started)
        call_start = time.monotonic()
        waiter = _AcquireWait(owner, resource)
        call = self._submit(msg, waiter=waiter)
        try:
            reply = self._await(call)
            got_started = _int_or_none(reply.get("started"))
            if reply.get("granted"):
                return self._make_lease(reply, owner, resource, mode, got_started, call.first_sent,
                                        ttl_ms)
            if not reply.get("queued"):
                raise LockgraphError("INTERNAL", f"acquire reply neither granted nor queued: {reply!r}",
                                     reply=reply)
            deadline = None if wait_ms < 0 else call_start + wait_ms / 1000.0 + self._timeout_s
            while True:
                step = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
                if waiter.done.wait(step):
                    return self._finish_queued(waiter, call, owner, resource, mode, got_started, ttl_ms)
                if self._closing or not self._io.is_alive():
                    raise LockgraphError("CANCELLED", "the client is closing", started=got_started)
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if deadline is None and not self._daemon_alive():
                    # Cancel in the background (a grant that wins the race is released).
                    with self._lock:
                        answered = waiter.done.is_set()
                        if not answered:
                            self._waiters.pop(call.id, None)
                            self._orphan_acquires[call.id] = time.monotonic() + _ORPHAN_KEEP_S
                    if answered:
                        return self._finish_queued(waiter, call, owner, resource, mode,
                                                   got_started, ttl_ms)
                    self._internal_call({"op": "unwait", "owner": owner, "resource": resource})
                    raise LockgraphError(
                        "TIMEOUT", f"acquire of {resource} by {owner}: the daemon at "
                                   f"{self._endpoint} stopped answering while it was queued; "
                                   "cancelling it", started=got_started)
            # No answer in time: cancel, unless the grant won the race.
            what = (f"acquire of {resource} by {owner} not granted within "
                    f"{int((time.monotonic() - call_start) * 1000)} ms")
            try:
                un = self._request({"op": "unwait", "owner": owner, "resource": resource})
            except LockgraphError as e:
                if waiter.done.is_set():
                    return self._finish_queued(waiter, call, owner, resource, mode, got_started, ttl_ms)
                raise LockgraphError("TIMEOUT", f"{what}; cancelling it: {e.message}",
                                     started=got_started) from None
            if waiter.done.is_set():
                return self._finish_queued(waiter, call, owner, resource, mode, got_started, ttl_ms)
            if un.get("granted"):
                # When it was granted is unknown beyond "after the acquire was sent".
                return self._make_lease(un, owner, resource, mode, got_started, call.first_sent,
                                        ttl_ms)
            raise LockgraphError("TIMEOUT", what, started=got_started)
        finally:
            with self._lock:
                self._waiters.pop(call.id, None)

    def _finish_queued(self, waiter: _AcquireWait, call: _Call, owner: str, resource: str,
                       mode: str, started: int | None, ttl_ms: int) -> Lease:
        if waiter.event is None:
            err = waiter.error or LockgraphError("INTERNAL", "queued acquire ended without an event")
            err.started = err.started if err.started is not None else started
            raise err
        ev = waiter.event
        if ev.get("event") == "granted":
            return Lease(lease=int(ev.get("lease", 0)), token=int(ev.get("token", 0)),
                         owner=owner, resource=resource, mode=str(ev.get("mode", mode)),
                         started=started,
                         valid_until=self._valid_until(max(call.first_sent, waiter.grant_bound),
                                                       ttl_ms))
        err = LockgraphError.from_denied(ev)
        err.started = started
        raise err

    def _make_lease(self, reply: dict, owner: str, resource: str, mode: str,
                    started: int | None, sent_at: float, ttl_ms: int | None,
                    reported: bool = False) -> Lease:
        return Lease(lease=int(reply.get("lease", 0)), token=int(reply.get("token", 0)),
                     owner=owner, resource=resource, mode=mode, started=started,
                     reported=reported, valid_until=self._valid_until(sent_at, ttl_ms))

    @staticmethod
    def _valid_until(bound: float, ttl_ms: int | None) -> float | None:
        if ttl_ms is None:
            return None
        return bound + ttl_ms / 1000.0 - _SAFETY_MARGIN_S

    def release(self, lease: Lease | int) -> None:
        """Releases a lease (a :class:`Lease` or a lease id).

        A reported lease (from :meth:`hold`) is released by its owner and resource.

        Raises:
            LockgraphError: ``NOT_OWNER`` when the lease is not held (released, expired,
                revoked and handed over) or belongs to another session; ``TIMEOUT``.
        """
        if isinstance(lease, Lease) and lease.reported:
            self.release_reported(lease.owner, lease.resource)
            return
        lid = lease.lease if isinstance(lease, Lease) else int(lease)
        self._request({"op": "release", "lease": lid})

    def renew(self, lease: Lease | int, ttl_ms: int | None = None) -> Lease:
        """Renews a lease for ``ttl_ms`` (default: its own TTL) from now.

        Returns:
            A copy of the lease with ``valid_until`` moved (for a bare id, a Lease whose
            other fields are filled from what the client knows of it).

        Answered ``GRACE`` (the daemon restarted and the lease awaits its reclaim), it
        reclaims first and renews once more.

        Raises:
            LockgraphError: ``NOT_OWNER`` when the lease is gone; ``TIMEOUT``; ``GRACE``
                when the reclaim did not bring it back in time.
        """
        lid = lease.lease if isinstance(lease, Lease) else int(lease)
        msg: dict[str, Any] = {"op": "renew", "lease": lid}
        if ttl_ms is not None:
            msg["ttl_ms"] = int(ttl_ms)
        call = self._submit(dict(msg))
        try:
            reply = self._await(call)
        except LockgraphError as e:
            if e.code != "GRACE":
                raise
            # The daemon restarted and the lease awaits its reclaim: reclaim first, then
            # ask once more. A heartbeat shows the new epoch, which starts the reclaim
            # (unless one is out already); its end is awaited within request_timeout.
            deadline = time.monotonic() + self._timeout_s
            with contextlib.suppress(LockgraphError):
                self._request({"op": "heartbeat"})
            with self._reclaim_cv:
                self._reclaim_cv.wait_for(
                    lambda: self._closing or not self._session_ok
                    or (self._reclaim_id == 0 and not self._reclaim_again),
                    max(0.0, deadline - time.monotonic()))
            call = self._submit(dict(msg))
            reply = self._await(call)
        with self._lock:
            tracked = self._leases.get(lid)
        lasts = _int_or_none(reply.get("expires_in_ms"))
        if lasts is None:
            lasts = ttl_ms if ttl_ms is not None else (tracked.ttl_ms if tracked else None)
        valid = self._valid_until(call.first_sent, lasts)
        if valid is not None:
            with self._lock:
                t = self._leases.get(lid)
                if t is not None and t.token == (_int_or_none(reply.get("token")) or t.token):
                    t.valid_until = valid
                    t.epoch = max(t.epoch, self._epoch or 0)
        if isinstance(lease, Lease):
            return Lease(lease.lease, _int_or_none(reply.get("token")) or lease.token, lease.owner,
                         lease.resource, lease.mode, lease.started, lease.reported, valid)
        if tracked is not None:
            return Lease(lid, tracked.token, tracked.owner, tracked.resource, tracked.mode,
                         self.started(tracked.owner), False, valid)
        return Lease(lid, 0, "", "", "X", None, False, valid)

    def held(self, lease: Lease) -> Lease | None:
        """``lease`` as the client holds it now: a copy with ``valid_until`` brought up to
        date by renewals and by the reclaim after a restart, or ``None`` once the client
        no longer holds it (released, revoked, refused at reclaim, lost with its session)
        or holds it under another token."""
        with self._lock:
            t = self._leases.get(lease.lease)
            if t is None or t.token != lease.token:
                return None
            valid = t.valid_until if t.valid_until is not None else lease.valid_until
        return Lease(lease.lease, lease.token, lease.owner, lease.resource, lease.mode,
                     lease.started, lease.reported, valid)

    @contextlib.contextmanager
    def acquiring(self, owner: str, resource: str, mode: str = "X", ttl_ms: int = 30000,
                  wait_ms: int = 0, site: str = "",
                  started: int | None = None) -> Iterator[Lease]:
        """``with client.acquiring(owner, resource, ...) as lease:`` acquires (as
        :meth:`acquire`) and releases on leaving the block; a failing release is logged
        (the lease may have been revoked or expired meanwhile), not raised."""
        lease = self.acquire(owner, resource, mode, ttl_ms, wait_ms, site, started)
        try:
            yield lease
        finally:
            try:
                self.release(lease)
            except LockgraphError as e:
                log.warning("lockgraph: releasing %s of %s: %s", resource, owner, e)

    # ------------------------------------------------------------ report mode

    def hold(self, owner: str, resource: str, mode: str = "X", ttl_ms: int = 30000,
             site: str = "") -> Lease:
        """Reports that an external lock system granted ``resource`` to ``owner``.

        Returns:
            The recorded lease (``reported=True``); it still expires after ``ttl_ms``.

        Raises:
            LockgraphError: e.g. ``LIMIT``, ``BAD_REQUEST``, ``TIMEOUT``.
        """
        _check_mode(mode)
        msg: dict[str, Any] = {"op": "hold", "owner": owner, "resource": resource,
                               "mode": mode, "ttl_ms": int(ttl_ms)}
        if site:
            msg["site"] = site
        call = self._submit(msg)
        reply = self._await(call)
        return self._make_lease(reply, owner, resource, mode, None, call.first_sent, int(ttl_ms),
                                reported=True)

    def wait(self, owner: str, resource: str, mode: str = "X", site: str = "") -> None:
        """Reports that ``owner`` is blocked on ``resource`` in an external lock system.

        Raises:
            LockgraphError: ``DEADLOCK`` when this wait closes a cycle and this owner is
                the victim (``.deadlock`` is the report; a wait on what the owner holds
                itself in X is a self-deadlock). A victim chosen later, once the daemon
                has confirmed a cycle, gets a ``denied`` event instead.
        """
        _check_mode(mode)
        msg: dict[str, Any] = {"op": "wait", "owner": owner, "resource": resource, "mode": mode}
        if site:
            msg["site"] = site
        self._request(msg)

    def unwait(self, owner: str, resource: str) -> Lease | None:
        """Ends a reported wait, or cancels a queued acquire, of ``owner`` on ``resource``.

        Returns:
            The lease when the owner holds the resource already (a grant won the race),
            else ``None`` (also when there was nothing to end: re-sent reports are harmless).
        """
        call = self._submit({"op": "unwait", "owner": owner, "resource": resource})
        reply = self._await(call)
        if not reply.get("granted"):
            return None
        lid = int(reply.get("lease", 0))
        with self._lock:
            tracked = self._leases.get(lid)
        return self._make_lease(reply, owner, resource, tracked.mode if tracked else "X",
                                self.started(owner), call.first_sent,
                                tracked.ttl_ms if tracked else None)

    def release_reported(self, owner: str, resource: str) -> None:
        """Reports that ``owner`` released ``resource`` in the external lock system.

        Raises:
            LockgraphError: ``NOT_OWNER`` when nothing is recorded; ``TIMEOUT``.
        """
        self._request({"op": "release", "owner": owner, "resource": resource})

    # ------------------------------------------------------------ events

    def on_event(self, callback: Callable[[dict], None] | None) -> None:
        """Sets (or, with ``None``, removes) the event callback.

        It gets every event dict in order: ``"event"`` is ``granted``, ``denied``,
        ``revoked`` or ``order_warning``, with ``seq`` and the event's fields
        (``lease``/``token`` as ints; a ``deadlock`` report as a dict). Granted and
        denied events that answer an :meth:`acquire` reach it too. It runs on a
        dispatch thread of the client's (not the I/O thread), so it may call the
        client; events queued before it was set go to it first. What it raises is
        logged and dropped. Without a callback, events queue for :meth:`poll_event`
        (beyond 65536 the oldest are dropped).
        """
        with self._events_cv:
            self._callback = callback
            if callback is not None and self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="lockgraph-events",
                                                    daemon=True)
                self._dispatcher.start()
            self._events_cv.notify_all()

    def poll_event(self, timeout_ms: int = 0) -> dict | None:
        """Waits up to ``timeout_ms`` for the next queued event and returns it (see
        :meth:`on_event` for its shape), or ``None``. Events queue only while no
        callback is set."""
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        with self._events_cv:
            while not self._events or self._callback is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing:
                    return None
                self._events_cv.wait(remaining)
            return self._events.popleft()

    def _deliver(self, ev: dict) -> None:
        with self._events_cv:
            self._events.append(ev)
            while len(self._events) > _MAX_QUEUED_EVENTS:
                self._events.popleft()
            self._events_cv.notify_all()

    def _dispatch(self) -> None:
        while True:
            with self._events_cv:
                while (not self._events or self._callback is None) and not self._closing:
                    self._events_cv.wait(0.5)
                if self._closing and (not self._events or self._callback is None):
                    return
                ev = self._events.popleft()
                cb = self._callback
            try:
                if cb is not None:
                    cb(ev)
            except Exception:  # noqa: BLE001 - a user callback must not stop delivery
                log.exception("lockgraph: the event callback raised")

    # ------------------------------------------------------------ generic

    def call(self, op: str, **fields: Any) -> dict:
        """Sends any request (queries, revoke, batch, ...) and returns its reply dict.

        ``v`` and ``id`` are filled in, and for session-scoped ops (all but hello,
        revoke and the queries graph/stats/leases/deadlocks) ``session``, ``secret``
        and ``acked_seq``. Ints under ``lease``/``token`` keys go out as strings of
        digits and come back as ints (also inside listings and ``revoked``).

        Raises:
            LockgraphError: the reply's error (``.reply`` holds the reply), or ``TIMEOUT``.
        """
        if op == "hello":
            raise ValueError("hello is the client's own: make another Client for another session")
        return self._request({"op": op, **fields})

    # ------------------------------------------------------------ calls

    def _submit(self, msg: dict, waiter: _AcquireWait | None = None) -> _Call:
        with self._lock:
            if self._closing and msg["op"] != "bye":
                raise LockgraphError("CANCELLED", "the client is closed")
            rid = next(self._ids)
            call = _Call(rid, {"v": PROTOCOL_VERSION, "id": rid, **msg}, self._timeout_s, True)
            if waiter is not None:
                self._waiters[rid] = waiter
            self._outbox.append(call)  # under the lock, so the outbox is in id order
        self._wake()
        return call

    def _await(self, call: _Call) -> dict:
        # The I/O thread fails the call at its deadline; the slack covers a stuck thread.
        if not call.done.wait(self._timeout_s + 1.0):
            raise LockgraphError("TIMEOUT", f"{call.op} got no reply within "
                                            f"{int(self._timeout_s * 1000)} ms (client thread stuck)")
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        if not call.reply.get("ok", False):
            raise LockgraphError.from_reply(call.reply)
        return call.reply

    def _request(self, msg: dict) -> dict:
        return self._await(self._submit(msg))

    def _wake(self) -> None:
        with self._wake_lock:
            if self._closed:
                return
            try:
                self._wake_push.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # Again: wake-ups are queued already

    def _daemon_alive(self) -> bool:
        """False once the daemon has been silent for request_timeout while a request
        waited for it (or the I/O thread is gone)."""
        if not self._io.is_alive():
            return False
        oldest = self._oldest_unanswered
        if oldest is None:
            return time.monotonic() - self._last_heard <= self._heartbeat_s + self._timeout_s
        return time.monotonic() - max(self._last_heard, oldest) < self._timeout_s

    # ------------------------------------------------------------ the I/O thread

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    closing = self._closing
                if closing:
                    break
                timeout_ms = self._tick(time.monotonic())
                try:
                    ready = dict(self._poller.poll(timeout_ms))
                except zmq.ZMQError as e:
                    if e.errno == zmq.EINTR:
                        continue
                    raise
                if self._wake_pull in ready:
                    while True:
                        try:
                            self._wake_pull.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                if self._sock is not None and self._sock in ready:
                    self._receive_all()
        except Exception:  # noqa: BLE001
            log.exception("lockgraph: the I/O thread failed")
        finally:
            err = LockgraphError("CANCELLED", "the client is closed")
            with self._lock:
                self._closing = True
                calls = list(self._calls.values()) + list(self._outbox)
                self._outbox.clear()
                waiters = list(self._waiters.values())
            for c in calls:
                if not c.done.is_set():
                    c.error = err
                    c.done.set()
            for w in waiters:
                if w.event is None:
                    w.error = err
                    w.done.set()
            self._close_socket()
            self._wake_pull.close(linger=0)

    def _tick(self, now: float) -> int:
        """Does what is due; returns how long to sleep (ms)."""
        if self._reconnect_requested:
            self._drop_connection(now)
        if self._sock is None and now >= self._reconnect_at:
            self._open_socket(now)
        next_at = now + 0.1

        if self._sock is not None:
            if self._rehello_at is not None and now >= self._rehello_at and self._hello_id == 0:
                self._rehello_at = None
                self._start_hello()
            if (self._session_ok and self._reclaim_again and self._reclaim_id == 0
                    and now >= self._reclaim_at):
                self._start_reclaim(now)
            if self._session_ok and now >= self._next_heartbeat:
                if self._heartbeat_id == 0:  # one at a time: an unanswered one is being resent
                    self._heartbeat_id = self._internal_call({"op": "heartbeat"}).id
                self._next_heartbeat = now + self._heartbeat_s

        # New calls, in id order.
        with self._lock:
            fresh = list(self._outbox)
            self._outbox.clear()
        for c in fresh:
            c.deadline = now + c.deadline_s if c.deadline_s is not None else float("inf")
            self._calls[c.id] = c

        # Sends, resends, deadlines.
        self._oldest_unanswered = None
        for c in sorted(self._calls.values(), key=lambda c: c.id):
            if c.done.is_set() and not c.waiter:
                # An orphan: its caller left; resend until answered or given up.
                if now >= c.give_up:
                    del self._calls[c.id]
                    continue
            elif now >= c.deadline:
                self._fail_call(c, now, LockgraphError(
                    "TIMEOUT", f"{c.op} (id {c.id}) got no reply within {int(c.deadline_s * 1000)} ms"
                               f" (endpoint {self._endpoint})"))
                continue
            if c.ever_sent and (not c.session_scoped or self._session_ok):
                if self._oldest_unanswered is None or c.first_sent < self._oldest_unanswered:
                    self._oldest_unanswered = c.first_sent
            if self._sock is None or (c.session_scoped and not self._session_ok):
                continue
            if c.sends == 0:
                self._send_call(c, now)
            elif now - c.last_sent >= _RESEND_AFTER_S:
                if c.sends >= 2 and self._last_heard < c.last_sent:
                    self._reconnect_requested = True  # two sends and not a word since
                    break
                self._send_call(c, now)
            next_at = min(next_at, c.last_sent + _RESEND_AFTER_S, c.deadline)
        if self._reconnect_requested:
            next_at = now
        with self._lock:
            for rid, forget_at in list(self._orphan_acquires.items()):
                if now >= forget_at:
                    del self._orphan_acquires[rid]
        if self._sock is None:
            next_at = min(next_at, self._reconnect_at)
        if self._session_ok:
            next_at = min(next_at, self._next_heartbeat)
        if self._rehello_at is not None:
            next_at = min(next_at, self._rehello_at)
        if self._reclaim_again and self._reclaim_id == 0:
            next_at = min(next_at, self._reclaim_at)
        return max(0, int((next_at - time.monotonic()) * 1000) + 1)

    def _fail_call(self, c: _Call, now: float, err: LockgraphError) -> None:
        if c.id == self._hello_id:
            self._hello_id = 0
            if not c.waiter:
                self._schedule_rehello(now)
        if c.id == self._heartbeat_id:
            self._heartbeat_id = 0
        if c.op == "acquire" and c.ever_sent:
            # Its late reply must not leave a grant or a queued wait behind.
            c.error = err
            c.waiter = False
            c.done.set()
            c.give_up = now + _ORPHAN_KEEP_S
            return
        del self._calls[c.id]
        c.error = err
        c.done.set()

    def _internal_call(self, msg: dict, deadline_s: float | None = None) -> _Call:
        """A call of the I/O thread's own (heartbeat, hello again, undoing an orphan):
        queued like a caller's, so that ids go out in order."""
        with self._lock:
            rid = next(self._ids)
            c = _Call(rid, {"v": PROTOCOL_VERSION, "id": rid, **msg},
                      deadline_s if deadline_s is not None else self._timeout_s, False)
            self._outbox.append(c)
        self._wake()
        return c

    def _start_hello(self) -> None:
        self._hello_id = self._internal_call(dict(self._hello_msg)).id

    def _schedule_rehello(self, now: float) -> None:
        delay = max(self._backoff_s, self._heartbeat_s)
        self._rehello_at = now + delay * self._rng.uniform(0.5, 1.5)

    def _send_call(self, c: _Call, now: float) -> None:
        assert self._sock is not None
        if c.session_scoped:
            with self._lock:
                c.msg["session"] = self._session
                c.msg["secret"] = self._secret
            c.msg["acked_seq"] = self._last_seq
            c.sent_session = self._session
        if not c.ever_sent:
            c.ever_sent = True
            c.first_sent = now
            c.first_connection = self._connection
        c.sends += 1
        c.last_sent = now
        try:
            self._sock.send(_encode(c.msg), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the connection's queue is full: the resend timer tries again

    def _open_socket(self, now: float) -> None:
        endpoint = self._leader_hint or self._endpoints[self._endpoint_index % len(self._endpoints)]
        self._leader_hint = ""
        self._endpoint = endpoint
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100000)
        sock.setsockopt(zmq.RECONNECT_IVL, _BACKOFF_MIN_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, _BACKOFF_MAX_MS)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            log.warning("lockgraph: cannot connect to %s: %s", endpoint, e)
            self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)
            self._reconnect_at = now + self._backoff_s * self._rng.uniform(0.5, 1.5)
            self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_MS / 1000.0)
            return
        self._sock = sock
        self._poller.register(sock, zmq.POLLIN)
        self._connection += 1
        self._reply_bound = 0.0
        # Everything unanswered goes out again on the new connection; a heartbeat with it
        # tells the daemon where to resend the events not yet acknowledged.
        for c in self._calls.values():
            c.sends = 0
        if self._session_ok and self._heartbeat_id == 0:
            self._next_heartbeat = now

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._poller.unregister(self._sock)
            except KeyError:
                pass
            self._sock.close(linger=0)
            self._sock = None

    def _drop_connection(self, now: float) -> None:
        self._reconnect_requested = False
        old = self._endpoint
        self._close_socket()
        if not self._leader_hint:
            self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)
        self._reconnect_at = now + self._backoff_s * self._rng.uniform(0.5, 1.5)
        self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_MS / 1000.0)
        log.info("lockgraph: %s is not answering; reconnecting to %s", old,
                 self._leader_hint or self._endpoints[self._endpoint_index])

    def _receive_all(self) -> None:
        for _ in range(1024):
            if self._sock is None:
                return
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.monotonic()
            self._last_heard = now
            self._backoff_s = _BACKOFF_MIN_MS / 1000.0
            if not frame.startswith(b"{"):
                log.warning("lockgraph: ignored a non-JSON frame of %d bytes", len(frame))
                continue
            try:
                msg = json.loads(frame)
            except (ValueError, UnicodeDecodeError) as e:
                log.warning("lockgraph: ignored an unparsable frame: %s", e)
                continue
            if not isinstance(msg, dict):
                log.warning("lockgraph: ignored a frame that is not a JSON object")
                continue
            msg = _from_wire(msg)
            if "event" in msg:
                self._handle_event(msg, now)
            else:
                self._handle_reply(msg, now)

    def _handle_reply(self, reply: dict, now: float) -> None:
        rid = _int_or_none(reply.get("id")) or 0
        c = self._calls.get(rid)
        if c is None:
            if rid == 0:
                err = reply.get("error") or {}
                log.warning("lockgraph: the daemon could not read a frame: %s",
                            err.get("message", reply) if isinstance(err, dict) else reply)
            elif reply.get("ok") and reply.get("session") and reply.get("secret"):
                self._bye_extra_session(reply)
            return
        err = reply.get("error") if not reply.get("ok", False) else None
        code = err.get("code") if isinstance(err, dict) else None
        if code == "NOT_LEADER":
            # Not an answer: go where the leader is and ask again there.
            leader = (err.get("leader") if isinstance(err, dict) else None) or reply.get("leader")
            self._leader_hint = str(leader or "")
            self._reconnect_requested = True
            return
        del self._calls[rid]
        if c.ever_sent and c.first_connection == self._connection:
            self._reply_bound = max(self._reply_bound, c.first_sent)
        if c.op == "hello":
            if rid == self._hello_id:
                self._hello_id = 0
            if reply.get("ok"):
                if self._session_ok or not reply.get("session"):
                    self._bye_extra_session(reply)
                else:
                    self._install_session(reply, now)
            elif not c.waiter:
                self._schedule_rehello(now)
        if rid == self._heartbeat_id:
            self._heartbeat_id = 0
            if code and code != "UNKNOWN_SESSION":
                log.warning("lockgraph heartbeat: %s", LockgraphError.from_reply(reply))
        self._track(c, reply, now)
        if c.op == "acquire" and reply.get("queued"):
            with self._lock:
                w = self._waiters.get(rid)
                if w is not None:
                    w.queued = True
        if rid == self._reclaim_id:
            self._finish_reclaim(c, reply, now)
        if code == "GRACE" and self._session_ok and self._heartbeat_id == 0:
            self._next_heartbeat = min(self._next_heartbeat, now)  # learn the new epoch now
        epoch = _int_or_none(reply.get("epoch"))
        if (reply.get("ok") and epoch is not None and c.op != "hello" and self._session_ok
                and c.sent_session == self._session and epoch > (self._epoch or 0)):
            self._on_restart(epoch, now)
        lost = (c.session_scoped and code == "UNKNOWN_SESSION" and self._session_ok
                and c.sent_session == self._session)
        if not c.done.is_set():
            c.reply = reply
            c.done.set()
        acquire_id = self._restart_unwaits.pop(rid, None)
        if acquire_id is not None:
            self._finish_restart_unwait(acquire_id, reply)
        elif not c.waiter and reply.get("ok") and c.op in ("acquire", "unwait"):
            # Nobody waits for this acquire (its caller left) or for this cancel (sent
            # for a caller that left): undo a grant or a queued wait.
            if reply.get("granted") and reply.get("lease") is not None:
                self._internal_call({"op": "release", "lease": reply["lease"]})
            elif reply.get("queued"):
                with self._lock:
                    self._orphan_acquires[rid] = now + _ORPHAN_KEEP_S
                self._internal_call({"op": "unwait", "owner": c.msg.get("owner", ""),
                                     "resource": c.msg.get("resource", "")})
        if lost:
            self._lose_session(now)

    def _track(self, c: _Call, reply: dict, now: float) -> None:
        """Keeps the leases the client believes it holds, and owners' ``started``."""
        m = c.msg
        with self._lock:
            if c.op == "acquire":
                started = _int_or_none(reply.get("started"))
                if started is None and isinstance(reply.get("error"), dict):
                    started = _int_or_none(reply["error"].get("started"))
                if started is not None:
                    self._started[m.get("owner", "")] = started
            if not reply.get("ok"):
                if (c.op == "release" and isinstance(reply.get("error"), dict)
                        and reply["error"].get("code") == "NOT_OWNER" and m.get("lease")):
                    self._leases.pop(int(m["lease"]), None)
                return
            if c.op in ("acquire", "hold", "unwait"):
                lid = _int_or_none(reply.get("lease"))
                if lid is not None and (c.op == "hold" or reply.get("granted")):
                    old = self._leases.get(lid)
                    ttl_ms = _int_or_none(m.get("ttl_ms"))
                    t = _Tracked(
                        m.get("owner", ""), m.get("resource", ""),
                        m.get("mode", old.mode if old else "X"),
                        _int_or_none(reply.get("token")) or (old.token if old else 0),
                        ttl_ms or (old.ttl_ms if old else None), reported=c.op == "hold",
                        valid_until=self._valid_until(c.first_sent, ttl_ms) if c.ever_sent else None)
                    self._track_lease(lid, t, old, now)
            elif c.op == "renew":
                lid = _int_or_none(m.get("lease"))
                if lid in self._leases and m.get("ttl_ms") is not None:
                    self._leases[lid].ttl_ms = int(m["ttl_ms"])
            elif c.op == "release":
                if m.get("lease") is not None:
                    self._leases.pop(int(m["lease"]), None)
                else:
                    for lid in [k for k, t in self._leases.items()
                                if t.owner == m.get("owner") and t.resource == m.get("resource")]:
                        del self._leases[lid]
            elif c.op == "bye":
                self._leases.clear()

    def _install_session(self, reply: dict, now: float) -> None:
        with self._lock:
            self._session = str(reply["session"])
            self._secret = str(reply.get("secret", ""))
        hb = _int_or_none(reply.get("heartbeat_ms"))
        if hb and hb > 0:
            self._heartbeat_s = hb / 1000.0
        self._epoch = _int_or_none(reply.get("epoch"))
        self._server = str(reply.get("server", ""))
        self._session_ok = True
        self._last_seq = 0  # a new session numbers its events from 1
        self._next_heartbeat = now + self._heartbeat_s
        log.debug("lockgraph: session %s on %s", self._session, self._endpoint)

    def _bye_extra_session(self, reply: dict) -> None:
        """A hello answered twice (resent, or sent again on a new connection) opened a
        second session: close it at once rather than let it expire."""
        if self._sock is None or str(reply.get("session")) == self._session:
            return
        with self._lock:
            rid = next(self._ids)  # another session's id: any increasing value is fine
        try:
            self._sock.send(_encode({"v": PROTOCOL_VERSION, "id": rid, "op": "bye",
                                     "session": reply["session"], "secret": reply.get("secret", "")}),
                            zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _lose_session(self, now: float) -> None:
        """The daemon no longer knows the session: report what was held as revoked,
        fail the queued acquires, and say hello again."""
        self._session_ok = False
        log.warning("lockgraph: session %s lost; saying hello again", self._session)
        with self._lock:
            leases = list(self._leases.items())
            self._leases.clear()
            waiters = list(self._waiters.values())
            # A reclaim out under the old session goes with it.
            self._reclaim_id = 0
            self._reclaim_again = False
            self._restart_unwaits.clear()
            self._reclaim_cv.notify_all()
        for lid, t in leases:
            self._deliver(self._lost_event(lid, t))
        err = LockgraphError("UNKNOWN_SESSION", f"the session {self._session} was lost "
                                                "(expired, or the daemon restarted)")
        for w in waiters:
            if w.event is None and w.error is None:
                w.error = err
                w.done.set()
        self._heartbeat_id = 0
        if self._hello_id == 0:
            self._start_hello()

    @staticmethod
    def _lost_event(lid: int, t: _Tracked) -> dict:
        """The synthetic ``revoked`` event of a lease lost without the daemon saying so."""
        return {"v": PROTOCOL_VERSION, "event": "revoked", "seq": 0, "lease": lid,
                "owner": t.owner, "resource": t.resource, "mode": t.mode,
                "token": t.token, "reason": "expired", "handover_in_ms": 0}

    def _track_lease(self, lid: int, t: _Tracked, old: _Tracked | None, now: float) -> None:
        """Starts tracking a lease the daemon granted or handed over (under ``_lock``),
        keeping what is known of it already: an acquire of what the owner holds returns
        that lease unchanged."""
        epoch = self._epoch or 0
        granted_in = t.token >> 40
        t.epoch = max(epoch, granted_in)
        if old is not None and old.token == t.token and not t.reported:
            t.epoch = max(t.epoch, old.epoch)
            if old.valid_until is not None:
                t.valid_until = old.valid_until
            if t.ttl_ms is None:
                t.ttl_ms = old.ttl_ms
            self._leases[lid] = t
            return
        self._leases[lid] = t
        if not t.reported and granted_in < epoch and self._session_ok:
            # Granted by a boot before the newest one seen (its reply overtaken by the
            # restart, or handed over by the unwait sent at it): it awaits its reclaim.
            self._reclaim_again = True
            self._reclaim_at = now

    def _on_restart(self, epoch: int, now: float) -> None:
        """A reply showed a larger epoch: the daemon restarted."""
        self._epoch = epoch
        log.warning("lockgraph: the daemon restarted (epoch %d); reclaiming", epoch)
        # Waits are not restored. For each acquire queued before, an unwait asks the
        # daemon: a wait there (queued again after the restart) is cancelled, a lease
        # the owner holds there (granted before the crash, its event lost) is handed to
        # the caller; otherwise the acquire fails with GRACE and is asked again.
        with self._lock:
            pending = [(rid, w) for rid, w in self._waiters.items()
                       if w.queued and w.event is None and w.error is None and not w.restart_unwait]
            for _, w in pending:
                w.restart_unwait = True
        for rid, w in pending:
            unwait = self._internal_call({"op": "unwait", "owner": w.owner, "resource": w.resource})
            self._restart_unwaits[unwait.id] = rid
        self._start_reclaim(now)

    def _finish_restart_unwait(self, acquire_id: int, reply: dict) -> None:
        with self._lock:
            w = self._waiters.get(acquire_id)
            if w is None or w.event is not None or w.error is not None:
                return  # completed by an event first, or its caller left (and cancels itself)
            if reply.get("ok") and reply.get("granted") and reply.get("lease") is not None:
                w.event = {"v": PROTOCOL_VERSION, "event": "granted", "seq": 0, "id": acquire_id,
                           "owner": w.owner, "resource": w.resource,
                           "mode": str(self._leases[int(reply["lease"])].mode
                                       if int(reply["lease"]) in self._leases else "X"),
                           "lease": int(reply["lease"]), "token": int(reply.get("token", 0))}
                w.grant_bound = 0.0  # granted after the acquire went out: no more is known
            else:
                w.error = LockgraphError(
                    "GRACE", f"the daemon restarted (epoch {self._epoch}) while {w.owner} waited "
                             f"for {w.resource}; waits are not restored")
        w.done.set()

    def _start_reclaim(self, now: float) -> None:
        if self._reclaim_id != 0:
            self._reclaim_again = True  # the one out may have reached the previous daemon
            self._reclaim_at = now
            return
        with self._lock:
            self._reclaim_again = False
            items = [(lid, t) for lid, t in self._leases.items() if not t.reported]
            if not items:
                self._reclaim_cv.notify_all()
                return
            self._reclaim_leases = [lid for lid, _ in items]
        # A heartbeat and the reclaim in one batch: served in one turn, so the heartbeat's
        # epoch names the boot that answered the reclaim.
        holds = [{"owner": t.owner, "resource": t.resource, "mode": t.mode, "token": t.token}
                 for _, t in items]
        self._reclaim_id = self._internal_call(
            {"op": "batch", "items": [{"id": 1, "op": "heartbeat"},
                                      {"id": 2, "op": "reclaim", "holds": holds}]},
            deadline_s=float("inf")).id

    def _finish_reclaim(self, c: _Call, reply: dict, now: float) -> None:
        holds = c.msg["items"][1]["holds"]
        leases = self._reclaim_leases
        lost: list[tuple[int, _Tracked]] = []
        again_epoch = 0

        def claimed(i: int) -> _Tracked | None:
            t = self._leases.get(leases[i]) if i < len(leases) else None
            return t if t is not None and t.token == int(holds[i]["token"]) else None

        def lose_all() -> None:
            # Whether the daemon still has them is unknown, and a lease believed held
            # but not held is the dangerous mistake.
            for i in range(len(holds)):
                t = claimed(i)
                if t is not None:
                    lost.append((leases[i], self._leases.pop(leases[i])))

        def code_of(r: dict) -> str | None:
            err = r.get("error")
            return None if r.get("ok") else (err.get("code") if isinstance(err, dict) else "INTERNAL")

        temporary = ("LIMIT", "INTERNAL", "TIMEOUT")
        with self._lock:
            self._reclaim_id = 0
            code = code_of(reply)
            results = reply.get("results") if isinstance(reply.get("results"), list) else []
            if code is not None:
                if code in temporary:
                    self._reclaim_again = True
                    self._reclaim_at = now + self._backoff_s * self._rng.uniform(0.5, 1.5)
                elif code != "UNKNOWN_SESSION":
                    lose_all()
            elif len(results) != 2:
                lose_all()
            elif "UNKNOWN_SESSION" in (code_of(results[0]), code_of(results[1])):
                self._next_heartbeat = now  # the heartbeat loses the session, and its leases
            elif code_of(results[1]) is not None:
                if code_of(results[1]) in temporary:
                    self._reclaim_again = True
                    self._reclaim_at = now + self._backoff_s * self._rng.uniform(0.5, 1.5)
                else:
                    lose_all()
            else:
                answered_by = (_int_or_none(results[0].get("epoch")) or 0) if results[0].get("ok") else 0
                items = results[1].get("results") or []
                for i in range(min(len(holds), len(items))):
                    t = claimed(i)
                    if t is None:
                        continue
                    if not items[i].get("ok"):
                        lost.append((leases[i], self._leases.pop(leases[i])))
                        continue
                    # The daemon restarts a restored lease's TTL at its reclaim; a lease
                    # live already is not extended. A boot later than the one that last
                    # granted, renewed or reclaimed it had restored it.
                    expires = _int_or_none(items[i].get("expires_in_ms"))
                    if expires is not None and c.ever_sent:
                        t.valid_until = self._valid_until(c.first_sent, expires)
                    elif answered_by > t.epoch and t.ttl_ms is not None and c.ever_sent:
                        t.valid_until = self._valid_until(c.first_sent, t.ttl_ms)
                    t.epoch = max(t.epoch, answered_by)
                if answered_by > (self._epoch or 0):
                    again_epoch = answered_by  # another restart came meanwhile
            self._reclaim_cv.notify_all()
        for lid, t in lost:
            self._deliver(self._lost_event(lid, t))
        if again_epoch:
            self._on_restart(again_epoch, now)

    def _handle_event(self, ev: dict, now: float) -> None:
        seq = _int_or_none(ev.get("seq")) or 0
        if seq <= self._last_seq:
            return  # seen before: sent again after a reconnect
        self._last_seq = seq
        kind = ev.get("event")
        lid = _int_or_none(ev.get("lease"))
        with self._lock:
            rid = _int_or_none(ev.get("id")) or 0
            w = self._waiters.get(rid) if kind in ("granted", "denied") and rid else None
            if (w is not None and w.restart_unwait and kind == "denied"
                    and ev.get("code") == "CANCELLED"):
                return  # the unwait sent at a restart cancelled it: its reply decides
            if kind == "granted" and lid is not None:
                self._track_lease(lid, _Tracked(str(ev.get("owner", "")), str(ev.get("resource", "")),
                                                str(ev.get("mode", "X")),
                                                _int_or_none(ev.get("token")) or 0, None),
                                  self._leases.get(lid), now)
            elif kind == "revoked" and lid is not None:
                self._leases.pop(lid, None)
            orphan = w is None and kind == "granted" and self._orphan_acquires.pop(rid, None) is not None
        if w is not None and w.event is None and w.error is None:
            # The daemon granted after answering every reply already read from this
            # connection: their first sends bound the grant time from below.
            w.grant_bound = self._reply_bound
            w.event = ev
            w.done.set()
        elif orphan and lid is not None:
            # Its caller left: a grant nobody will use goes back at once.
            self._internal_call({"op": "release", "lease": lid})
        self._deliver(ev)


# ---------------------------------------------------------------- CLI

def _print_json(obj: Any, stream: Any = sys.stdout) -> None:
    stream.write(json.dumps(_to_wire(obj), separators=(",", ":"), ensure_ascii=False) + "\n")
    stream.flush()


def _error_json(e: LockgraphError) -> dict:
    out: dict[str, Any] = {"code": e.code, "message": e.message}
    if e.deadlock is not None:
        out["deadlock"] = e.deadlock
    if e.started is not None:
        out["started"] = e.started
    if e.leader:
        out["leader"] = e.leader
    return {"ok": False, "error": out}


def main(argv: list[str] | None = None) -> int:
    """The command-line tool; returns the exit status (0 granted/ok, 1 error, 2 usage)."""
    parser = argparse.ArgumentParser(
        prog="lockgraph.py",
        description="A small client of lockgraphd (JSON over ZeroMQ).\n\n"
                    "Prints one JSON line on stdout: the result, or\n"
                    "{\"ok\":false,\"error\":{\"code\":...,\"message\":...[,\"deadlock\":{...}]}}.\n"
                    "lease and token print as strings of digits, as on the wire.\n"
                    "Exit status: 0 granted / ok, 1 error (the daemon's, or TIMEOUT when it does\n"
                    "not answer), 2 bad usage.",
        epilog="examples:\n"
               "  lockgraph.py --endpoint tcp://127.0.0.1:7790 acquire tx-1 account:7 --wait-ms 2000\n"
               "  lockgraph.py acquire tx-1 account:7 --mode S --hold-ms 5000\n"
               "  lockgraph.py call stats\n"
               "  lockgraph.py call leases '{\"resource\":\"account:7\"}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", action="append", default=None, metavar="E",
                        help=f"daemon endpoint, repeatable for fail-over (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--client-name", default="lockgraph.py", help="client name sent in hello")
    parser.add_argument("--session-ttl-ms", type=int, default=10000, metavar="N",
                        help="session TTL (default 10000)")
    parser.add_argument("--priority", type=int, default=0, help="session victim priority (lower loses)")
    parser.add_argument("--timeout-ms", type=int, default=5000, metavar="N",
                        help="per-request timeout (default 5000)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    acq = sub.add_parser("acquire", help="acquire a lease; print {ok,lease,token,...} or the error",
                         description="Acquires RESOURCE for OWNER, prints the lease as one JSON line "
                                     "(ok, lease, token, owner, resource, mode, started), holds it "
                                     "--hold-ms (events that arrive meanwhile go to stderr as JSON "
                                     "lines), then releases it and says bye. Exit 0 when granted, "
                                     "1 on an error (TIMEOUT, DEADLOCK with its report, ...).")
    acq.add_argument("owner", metavar="OWNER")
    acq.add_argument("resource", metavar="RESOURCE")
    acq.add_argument("--mode", choices=("X", "S"), default="X", help="X exclusive (default) or S shared")
    acq.add_argument("--ttl-ms", type=int, default=30000, metavar="N", help="lease TTL (default 30000)")
    acq.add_argument("--wait-ms", type=int, default=0, metavar="N",
                     help="0 try once (default), N queue up to N ms, -1 queue forever")
    acq.add_argument("--hold-ms", type=int, default=0, metavar="N",
                     help="hold the lease this long before releasing it (default 0)")
    acq.add_argument("--site", default="", help="call site reported in deadlock reports")

    call = sub.add_parser("call", help="send any request; print its reply",
                          description="Sends {op: OP, ...FIELDS} (session fields filled in) and "
                                      "prints the reply. Exit 0 when ok, 1 on an error.")
    call.add_argument("op", metavar="OP", help="the op: stats, graph, leases, deadlocks, revoke, renew, ...")
    call.add_argument("fields", nargs="?", default="{}", metavar="FIELDS",
                      help="a JSON object of extra fields (default {})")

    args = parser.parse_args(argv)
    endpoints = args.endpoint or [DEFAULT_ENDPOINT]
    try:
        fields = json.loads(args.fields) if args.command == "call" else {}
    except ValueError as e:
        parser.error(f"FIELDS is not JSON: {e}")
    if not isinstance(fields, dict):
        parser.error("FIELDS must be a JSON object")

    try:
        client = Client(endpoints, client_name=args.client_name, session_ttl_ms=args.session_ttl_ms,
                        priority=args.priority, request_timeout_ms=args.timeout_ms)
    except LockgraphError as e:
        _print_json(_error_json(e))
        return 1
    try:
        if args.command == "call":
            try:
                reply = client.call(args.op, **fields)
            except LockgraphError as e:
                _print_json(e.reply if e.reply is not None else _error_json(e))
                return 1
            _print_json(reply)
            return 0
        try:
            lease = client.acquire(args.owner, args.resource, mode=args.mode, ttl_ms=args.ttl_ms,
                                   wait_ms=args.wait_ms, site=args.site)
        except LockgraphError as e:
            _print_json(_error_json(e))
            return 1
        _print_json({"ok": True, "lease": lease.lease, "token": lease.token, "owner": lease.owner,
                     "resource": lease.resource, "mode": lease.mode, "started": lease.started,
                     "session": client.session})
        if args.hold_ms > 0:
            deadline = time.monotonic() + args.hold_ms / 1000.0
            while (left := deadline - time.monotonic()) > 0:
                ev = client.poll_event(int(min(left, 0.2) * 1000) + 1)
                if ev is not None:
                    _print_json(ev, sys.stderr)
        try:
            client.release(lease)
        except LockgraphError as e:
            _print_json({"released": False, **_error_json(e)}, sys.stderr)
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
