"""Deciding, quickly and without wandb, whether a run logs to W&B online, offline or not at all.

``logger.wandb.mode`` in the experiment config:

* ``disabled`` (the typed default): nothing touches W&B; wandb is not even imported.
* ``offline``: the run is written to ``<dir>/wandb/offline-run-*`` for a later ``wandb sync``.
* ``online``: log to the W&B server, unless no API key is found or the server is unreachable
  (a TCP connect to its host within ``timeout`` seconds): then offline, with one warning.
* ``auto``: the environment decides. ``WANDB_MODE`` (or ``WANDB_DISABLED=true``) is respected when
  set; otherwise online when an API key is available *and* the server answers a TCP connect
  within about a second, else offline, silently.

An explicit ``online``/``offline``/``disabled`` in the config wins over ``WANDB_MODE``, so a test
suite that sets ``WANDB_MODE=disabled`` can still write an offline run on purpose. Only the
standard library is used here: credentials come from ``WANDB_API_KEY``,
``WANDB_IDENTITY_TOKEN_FILE`` or a ``.netrc`` entry for the server's host (what ``wandb login``
writes); the server is ``WANDB_BASE_URL`` or ``https://api.wandb.ai``.
"""

from __future__ import annotations

import netrc
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_BASE_URL = "https://api.wandb.ai"
MODES = ("online", "offline", "disabled", "auto")
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline"}


@dataclass(frozen=True)
class ModeDecision:
    """The mode a run will use, why, and the warning to show (None when nothing went wrong)."""

    mode: str  # online | offline | disabled
    reason: str
    warning: str | None = None


def base_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"https://{url}")
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    return parsed.hostname or "", port


def has_credentials(env: Mapping[str, str] | None = None) -> bool:
    """True when wandb would find an API key without prompting for one."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY", "").strip():
        return True
    token = env.get("WANDB_IDENTITY_TOKEN_FILE", "").strip()
    if token and Path(token).is_file():
        return True
    host, _ = _host_port(base_url(env))
    candidates = [env.get("NETRC", "")] + [str(Path.home() / n) for n in (".netrc", "_netrc")]
    for path in candidates:
        if not path or not Path(path).is_file():
            continue
        try:
            auth = netrc.netrc(path).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if auth and auth[2]:
            return True
    return False


def _proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The HTTP(S) proxy requests to ``url`` would go through, if the environment names one."""
    host, _ = _host_port(url)
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
    for entry in (e.strip().lstrip(".") for e in no_proxy.split(",")):
        if entry and (entry == "*" or host == entry or host.endswith("." + entry)):
            return None
    scheme = urlparse(url).scheme or "https"
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    return next((env[n] for n in names if env.get(n)), None)


def reachable(url: str, timeout: float = 1.0, env: Mapping[str, str] | None = None) -> bool:
    """Whether a TCP connection to ``url``'s host (or to the configured proxy) opens within ``timeout``.

    Name resolution has no timeout of its own, so the whole attempt runs in a daemon thread that
    is abandoned after ``timeout`` seconds: the answer never takes longer than that.
    """
    env = os.environ if env is None else env
    host, port = _host_port(_proxy_for(url, env) or url)
    if not host:
        return False
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="fusionbench-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def resolve_mode(
    requested: str, *, env: Mapping[str, str] | None = None, timeout: float = 1.0
) -> ModeDecision:
    """Turn ``logger.wandb.mode`` into ``online``, ``offline`` or ``disabled`` (see the module doc)."""
    env = os.environ if env is None else env
    requested = str(requested).strip().lower()
    if requested == "disabled":
        return ModeDecision("disabled", "logger.wandb.mode is disabled")
    if requested == "offline":
        return ModeDecision("offline", "logger.wandb.mode is offline")
    explicit_online = requested == "online"
    if requested == "auto":
        env_mode = env.get("WANDB_MODE", "").strip().lower()
        if env_mode == "disabled" or _truthy(env.get("WANDB_DISABLED")):
            return ModeDecision(
                "disabled", "auto: W&B is disabled in the environment (WANDB_MODE/WANDB_DISABLED)"
            )
        if _ENV_MODES.get(env_mode) == "offline":
            return ModeDecision("offline", f"auto: WANDB_MODE={env_mode}")
        explicit_online = _ENV_MODES.get(env_mode) == "online"
    elif requested != "online":
        raise ValueError(f"logger.wandb.mode must be one of {', '.join(MODES)}, got {requested!r}")

    url = base_url(env)
    if not has_credentials(env):
        why = (
            f"no W&B API key for {url} (set WANDB_API_KEY or run `wandb login`), so this run is logged "
            "offline"
        )
        return ModeDecision("offline", why, warning=f"W&B online mode: {why}." if explicit_online else None)
    if not reachable(url, timeout, env):
        why = f"the W&B server {url} is unreachable (no TCP connection within {timeout:g} s), so this run is logged offline"
        return ModeDecision("offline", why, warning=f"W&B online mode: {why}." if explicit_online else None)
    return ModeDecision(
        "online", f"{'online' if explicit_online else 'auto'}: API key found and {url} reachable"
    )
