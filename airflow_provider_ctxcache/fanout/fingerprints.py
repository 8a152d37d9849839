"""The first reading's request fingerprints, kept on disk for the second reading.

The fan-out reads its input twice: once to check all of it before any call, then to send it.
Each request's fingerprint (its JSON hashed, about 8 us a request) is worked out by the first
reading; the second takes it from here instead of hashing the same request again. On disk, in
input order, 8 bytes a request: nothing in memory grows with the input.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

FINGERPRINT_BYTES = 8  # prompts._fingerprint: the first 16 hex digits of a sha256


class FingerprintSpool:
    """Fingerprints added in input order, read back once in the same order by :meth:`replay`."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="ctxcache-fingerprints-")  # noqa: SIM115 (closed by close())

    def add(self, fingerprint: str) -> None:
        digest = bytes.fromhex(fingerprint)
        if len(digest) != FINGERPRINT_BYTES:
            raise ValueError(f"not a request fingerprint: {fingerprint!r}")
        self._file.write(digest)

    def replay(self) -> Iterator[str]:
        """Every fingerprint added, in order (one reading at a time)."""
        self._file.seek(0)
        while digest := self._file.read(FINGERPRINT_BYTES):
            yield digest.hex()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FingerprintSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["FingerprintSpool"]
