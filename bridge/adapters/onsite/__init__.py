"""Lightspeed OnSite integration."""

from bridge.adapters.onsite.adapter import OnSiteAdapter
from bridge.adapters.onsite.settings import OnSiteSettings

__all__ = ["OnSiteAdapter", "OnSiteSettings"]
