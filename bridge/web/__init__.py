"""The HTTP face of the bridge: webhooks, poll triggers, health, metrics, ops page."""
