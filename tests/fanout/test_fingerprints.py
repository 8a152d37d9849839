"""The spool that carries the first reading's fingerprints to the second."""

from __future__ import annotations

import pytest

from airflow_provider_ctxcache.fanout.fingerprints import FingerprintSpool


def test_fingerprints_come_back_in_the_order_they_were_added() -> None:
    added = [f"{i:016x}" for i in range(1000)]
    with FingerprintSpool() as spool:
        for fingerprint in added:
            spool.add(fingerprint)
        assert list(spool.replay()) == added


def test_something_that_is_not_a_fingerprint_is_refused() -> None:
    with FingerprintSpool() as spool, pytest.raises(ValueError, match="not a request fingerprint"):
        spool.add("abc123")
