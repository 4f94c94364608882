"""One METEOR JVM for all the cells of a grid: the grid process serves it, each cell's process asks.

METEOR's JVM (Denkowski & Lavie 2014, pycocoevalcap's ``meteor-1.5.jar``) spends about 10 s of CPU
loading its paraphrase tables before it answers. A grid runs every cell in a fresh process of its
own, so that each cell measures its own memory and a crash stays the cell's; one JVM per cell would
add that boot to every cell. ``serve(score)`` (the grid runner uses it through
``fusionbench.metrics.coco.serve_meteor``) listens in the grid process on a Unix socket
(``multiprocessing.connection``, with a random authentication key) and answers each request with
``score(gts, res, reference=...)``: the very call an in-process run makes, on the grid's one JVM,
one request at a time. The socket's address and key reach the cells in their environment
(``ADDRESS_ENV``, ``KEY_ENV``). A process without the service (a single run, a launcher's worker
on another machine, a service that has gone away) scores on a JVM of its own, as before; the
scores are the same either way, because METEOR scores every segment on its own.

Standard library only: ``fusionbench score`` imports no torch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener
from typing import Any

ADDRESS_ENV = "FUSIONBENCH_METEOR_SERVICE"
KEY_ENV = "FUSIONBENCH_METEOR_KEY"

Score = Callable[..., tuple[float, list[float]]]

_SERVING: list[_Service] = []  # the services this process runs (it scores locally, never asks itself)
_CLIENT: Connection | None = None
_CLIENT_LOCK = threading.Lock()
_UNREACHABLE: set[str] = set()  # addresses that failed once: not asked again by this process


def _address() -> tuple[str, bytes] | None:
    address, key = os.environ.get(ADDRESS_ENV), os.environ.get(KEY_ENV)
    if not address or not key or _SERVING or address in _UNREACHABLE:
        return None
    try:
        return address, bytes.fromhex(key)
    except ValueError:
        return None


def available() -> bool:
    """Whether this process would ask a grid's METEOR service (then it need not boot a JVM)."""
    return _address() is not None


def ask(gts: dict, res: dict, *, reference: bool = False) -> tuple[float, list[float]] | None:
    """``(corpus score, per-image scores)`` from the grid's service; None without one (or when it
    cannot be reached: the caller scores locally). An error the service met is raised here."""
    global _CLIENT
    where = _address()
    if where is None:
        return None
    with _CLIENT_LOCK:
        try:
            if _CLIENT is None:
                _CLIENT = Client(where[0], family="AF_UNIX", authkey=where[1])
            _CLIENT.send((gts, res, reference))
            status, value = _CLIENT.recv()
        except (OSError, EOFError, AuthenticationError):
            _UNREACHABLE.add(where[0])
            if _CLIENT is not None:
                with contextlib.suppress(Exception):
                    _CLIENT.close()
            _CLIENT = None
            return None
    if status == "ok":
        return value
    raise value


class _Service:
    def __init__(self, score: Score) -> None:
        self.score = score
        self.key = secrets.token_bytes(32)
        self.listener = Listener(family="AF_UNIX", authkey=self.key)
        self.closed = False
        threading.Thread(target=self._accept, name="fusionbench-meteor-service", daemon=True).start()

    @property
    def address(self) -> str:
        return str(self.listener.address)

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn = self.listener.accept()
            except (OSError, EOFError, AuthenticationError):
                continue  # a caller that failed to authenticate, or the listener was closed
            threading.Thread(
                target=self._answer, args=(conn,), name="fusionbench-meteor-answer", daemon=True
            ).start()

    def _answer(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    gts, res, reference = conn.recv()
                except (OSError, EOFError):  # the cell's process has ended
                    return
                reply: tuple[str, Any]
                try:
                    reply = ("ok", self.score(gts, res, reference=reference))
                except Exception as e:  # e.g. MetricUnavailableError: the cell raises it
                    reply = ("error", e)
                try:
                    conn.send(reply)
                except OSError:
                    return

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.listener.close()


@contextlib.contextmanager
def serve(score: Score) -> Iterator[str]:
    """Answer METEOR requests of this process's children with ``score`` until the block ends;
    yields the socket's address. Nested calls reuse the running service."""
    if _SERVING:
        yield _SERVING[-1].address
        return
    service = _Service(score)
    saved = {k: os.environ.get(k) for k in (ADDRESS_ENV, KEY_ENV)}
    os.environ[ADDRESS_ENV], os.environ[KEY_ENV] = service.address, service.key.hex()
    _SERVING.append(service)
    try:
        yield service.address
    finally:
        _SERVING.remove(service)
        service.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
