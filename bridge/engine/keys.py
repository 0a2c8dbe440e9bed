"""Deterministic identifiers: the same (customer, system) always yields the same key."""

from __future__ import annotations

import uuid

# Fixed forever: changing it would make every retried create look new.
NAMESPACE = uuid.UUID("6f1c1f0e-3b1d-5a38-9d57-0c0ffee0b1d9")


def idempotency_key(customer_id: str, system: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{customer_id}/{system}"))
