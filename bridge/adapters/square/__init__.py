"""Square (Customers API v2): webhooks, polling by search, writes with versions, bulk create."""

from bridge.adapters.square.adapter import SquareAdapter

__all__ = ["SquareAdapter"]
