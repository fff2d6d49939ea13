"""The HF token and the settings beside it: where they come from, where the token may go, how it is masked.

The token (``HF_TOKEN`` env, a ``.env`` file, or the huggingface CLI's token file) is never
printed: every message that leaves this package goes through :func:`redact`. It is only sent over
``https://``, or over plain ``http://`` to this machine (a loopback address, for local test
servers): :func:`check_token_transport` refuses anything else before the first request.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from tavse.dotenv import read_dotenv
from tavse.download.errors import DownloadError


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Return ``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class RedactFilter(logging.Filter):
    """Logging filter that renders each record and masks the given secrets in it."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = redact(record.getMessage(), self.secrets)
            record.args = None
        return True


def env_setting(name: str, env_file: Path | None = Path(".env")) -> str | None:
    """``$name``, else ``name`` in ``env_file`` (empty values count as unset)."""
    return os.environ.get(name) or (read_dotenv(env_file).get(name) if env_file is not None else None) or None


def resolve_hf_token(env_file: Path | None = Path(".env")) -> str | None:
    """Token from ``$HF_TOKEN``, else ``HF_TOKEN`` in ``env_file``, else the huggingface CLI token file."""
    token = os.environ.get("HF_TOKEN")
    if not token and env_file is not None:
        token = read_dotenv(env_file).get("HF_TOKEN")
    if not token:
        hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        token_file = Path(os.environ.get("HF_TOKEN_PATH", hf_home / "token"))
        if token_file.is_file():
            token = token_file.read_text(encoding="utf-8").strip()
    return token or None


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token_transport(url: str, token: str | None, what: str = "--endpoint / HF_ENDPOINT") -> None:
    """Refuse to send ``token`` to ``url`` unless over ``https://`` or plain ``http://`` to a loopback host.

    Raises :class:`DownloadError` naming the URL (never the token) and what to change.
    """
    if not token:
        return
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and is_loopback_host(parts.hostname)):
        return
    raise DownloadError(
        f"{url}: refusing to send the HF token over plain {scheme or '?'}:// to {parts.hostname or '?'}, which is not "
        f"this machine: anyone on the way could read it. Use an https:// URL ({what}); plain http:// is accepted "
        "only for a loopback host (127.0.0.1, ::1, localhost), e.g. a local test server"
    )
