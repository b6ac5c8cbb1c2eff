"""The composition root: the service, its HTTP API, the CLI, settings, the delivery worker.

``service`` (:class:`Service`: store, bus, engine and delivery wired together),
``wiring`` (what the service and the delivery worker process build alike), ``api``
(FastAPI), ``cli`` (Typer: ``runbell``), ``settings`` (read once from the
environment) and ``worker`` (delivery in a process of its own). Nothing below
imports from here.
"""

from automations.service.service import Service
from automations.service.settings import Settings, parse_duration

__all__ = ["Service", "Settings", "parse_duration"]
