"""The engine room: consume event batches, evaluate triggers, record firings and intents.

``engine`` (the batch loop; its in-memory half in ``evaluation``, the candidate
index in ``candidates``, firing ids in ``firing_ids``), ``partitioning`` (router and
shards for replicas on Kafka), ``replay`` (``runbell test``: the same engine in
virtual time). Depends on ``core``, ``state`` and ``spec``.
"""

from automations.engine.candidates import CandidateIndex
from automations.engine.engine import CHECKPOINT, Engine
from automations.engine.firing_ids import firing_id_for

__all__ = ["CHECKPOINT", "CandidateIndex", "Engine", "firing_id_for"]
