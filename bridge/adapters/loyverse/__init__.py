"""Loyverse (API v1.0): customers over JSON, batched `customers.update` webhooks."""

from bridge.adapters.loyverse.adapter import LoyverseAdapter

__all__ = ["LoyverseAdapter"]
