"""Seeds derived from names: identical in every process, run and machine."""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (their ``repr``), identical across processes and Python versions.

    Python's ``hash()`` is salted per process, so it cannot seed anything reproducible.
    """
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
