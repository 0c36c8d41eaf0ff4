"""The server's access token: made at the first start, kept in a file only its user can read,
compared in constant time."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from .. import zoo

TOKEN_FILE = "server-token"


def token_path() -> Path:
    return zoo.cache_dir() / TOKEN_FILE


def load_or_make_token(path: Path | None = None) -> tuple[str, bool]:
    """``(token, made_now)``: the stored token, or a new one written with user-only permissions."""
    path = path or token_path()
    if path.is_file():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
