"""Capture hooks: observe routing decisions of a running model and emit them into a sink.

The hooks layer knows models (through :mod:`moelens.models`) but nothing about storage: it
emits :class:`StepContext` and :class:`RouterEvent` objects into a :class:`RoutingSink`.
"""

from moelens.hooks.attach import Attachment, attach, step_context
from moelens.hooks.events import RouterEvent, RoutingSink, StepContext

__all__ = ["attach", "Attachment", "step_context", "RouterEvent", "RoutingSink", "StepContext"]
