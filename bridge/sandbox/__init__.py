"""The sandbox kit: what every POS simulator shares (control API, faults, webhooks, stats).

A sandbox is the outside world for tests and the demo. Each system's simulator lives in
its adapter folder (`bridge/adapters/<system>/sandbox.py`) and builds on this kit.
"""

from bridge.sandbox.kit import Faults, RateLimiter, ResponseLost, Sandbox, Store, WebhookSender
from bridge.sandbox.transport import SyncASGITransport

__all__ = ["Faults", "RateLimiter", "ResponseLost", "Sandbox", "Store", "SyncASGITransport", "WebhookSender"]
