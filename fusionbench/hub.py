"""Whether the Hugging Face hub may be contacted, answered without stalling.

Low level on purpose (standard library only): backbones, the BERT decoder and the CLI all ask
here, so a hub request that cannot succeed fails at once with a message naming the local
alternative instead of hanging in HTTP retries.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any
from urllib.parse import urlparse

#: Seconds the hub gets to accept a TCP connection before a hub request is refused.
HUB_PROBE_TIMEOUT = 1.0


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE``/``FUSIONBENCH_OFFLINE``)."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "FUSIONBENCH_OFFLINE")
    )


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why the hub cannot be used right now (``None`` when it accepts a TCP connection).

    The endpoint is ``HF_ENDPOINT`` (default ``https://huggingface.co``). Name resolution and the
    connection run in a daemon thread, so this returns within ``timeout`` (+0.2 s) even where DNS
    hangs; the HTTP retries of a real download are never reached on an unreachable hub.
    """
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    outcome: dict[str, Any] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = True
        except OSError as err:
            outcome["error"] = err

    thread = threading.Thread(target=connect, name="fusionbench-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.2)
    if outcome.get("ok"):
        return None
    err = outcome.get("error")
    if err is None or isinstance(err, TimeoutError):
        return f"the hub ({host}:{port}) did not accept a connection within {timeout:g} s"
    return f"the hub ({host}:{port}) cannot be reached ({err})"
