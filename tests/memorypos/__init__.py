"""The foundation's test POS: a small in-memory system behind real HTTP.

Two instances (`mema`, `memb`) prove the engine without any vendor: versions with
optimistic concurrency, signed webhooks for every change (also the bridge's own), no
idempotency key on create (so crash safety rests on lookup), and the kit's faults.
"""

from tests.memorypos.adapter import MemoryA, MemoryAdapter, MemoryB, MemorySettings
from tests.memorypos.sandbox import MemorySandbox

__all__ = ["MemoryA", "MemoryAdapter", "MemoryB", "MemorySandbox", "MemorySettings"]
