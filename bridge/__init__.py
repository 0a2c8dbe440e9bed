"""posbridge: one customer, identical in every point-of-sale system."""

__version__ = "0.1.0"
