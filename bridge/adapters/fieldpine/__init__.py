"""Fieldpine OpenApi integration."""

from bridge.adapters.fieldpine.adapter import FieldpineAdapter

__all__ = ["FieldpineAdapter"]
