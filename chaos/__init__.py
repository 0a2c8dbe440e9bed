"""Chaos suite (issue 9): real processes, injected failures, and a strict checker."""
