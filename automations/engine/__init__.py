"""The engine room: consume event batches, evaluate triggers, record firings and intents.

``engine`` (the batch loop and the candidate index), ``partitioning`` (router and
shards for replicas on Kafka), ``replay`` (``runbell test``: the same engine in
virtual time). Depends on ``core``, ``state`` and ``spec``.
"""

from automations.engine.engine import CHECKPOINT, CandidateIndex, Engine, firing_id_for

__all__ = ["CHECKPOINT", "CandidateIndex", "Engine", "firing_id_for"]
