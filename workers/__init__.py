"""Celery side of posbridge: the app (`workers.app`), its tasks and the dispatcher.

`celery -A workers worker` finds the app here.
"""

from workers.app import app

__all__ = ["app"]
