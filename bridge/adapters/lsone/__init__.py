"""LS One (LS Retail): customer orders, polled and read-only."""

from bridge.adapters.lsone.adapter import LSOneAdapter

__all__ = ["LSOneAdapter"]
