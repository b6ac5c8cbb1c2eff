"""Service settings, read once from the environment at the composition root."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

DEFAULT_BUS = "memory://"
DEFAULT_DATABASE = "sqlite:///./runbell.db"
DELIVERY_MODES = ("process", "inline", "external")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``26h``, ``30d`` → timedelta; ValueError otherwise."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration: write seconds or e.g. 90s, 30m, 26h, 30d")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def _flag(env: Mapping[str, str], name: str) -> bool:
    """``1``/``true``/``yes``/``on`` → True, unset/``0``/``false``/``no``/``off`` → False."""
    text = env.get(name, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={env[name]!r}: write 1 or 0")


@dataclass(frozen=True)
class Settings:
    bus_url: str = DEFAULT_BUS
    database_url: str = DEFAULT_DATABASE
    api_token: str | None = None
    config_paths: tuple[Path, ...] = ()
    retention: timedelta = timedelta(days=30)
    topic: str = "runbell.events"
    kafka_partitions: int = 4
    engine_topic: str | None = None  # Kafka: events routed to engine shards (<topic>.shards)
    engine_partitions: int = 12  # shards: the most engine replicas that can share work
    max_body_bytes: int = 16 * 1024 * 1024
    ui_url: str | None = None  # orchestrator UI base, for links in messages (``ui_url``)
    # `runbell serve` only: "process" runs the dispatcher in a worker process beside the
    # service (automations/service/worker.py), "inline" inside it, "external" nowhere:
    # `runbell deliver` processes started on their own deliver (so that no second
    # dispatcher runs beside them on the same database).
    delivery: str = "process"
    # /docs, /redoc and /openapi.json answer without the API token (RUNBELL_PUBLIC_DOCS=1);
    # by default they need it, like everything but /health.
    public_docs: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def shard_topic(self) -> str:
        return self.engine_topic or f"{self.topic}.shards"

    @property
    def embedded(self) -> bool:
        """In-process bus: the store is the log and the engine replays from it."""
        return self.bus_url.startswith("memory://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {
            "bus_url": env.get("RUNBELL_BUS", DEFAULT_BUS),
            "database_url": env.get("RUNBELL_DATABASE_URL", DEFAULT_DATABASE),
            "api_token": env.get("RUNBELL_API_TOKEN") or None,
            "retention": parse_duration(env.get("RUNBELL_RETENTION", "30d")),
            "topic": env.get("RUNBELL_TOPIC", "runbell.events"),
            "kafka_partitions": int(env.get("RUNBELL_KAFKA_PARTITIONS", "4")),
            "engine_topic": env.get("RUNBELL_ENGINE_TOPIC") or None,
            "engine_partitions": int(env.get("RUNBELL_ENGINE_PARTITIONS", "12")),
            "ui_url": env.get("RUNBELL_UI_URL") or None,
            "delivery": env.get("RUNBELL_DELIVERY", "process"),
            "public_docs": _flag(env, "RUNBELL_PUBLIC_DOCS"),
            "env": env,
        }
        if values["delivery"] not in DELIVERY_MODES:
            raise ValueError(
                f"RUNBELL_DELIVERY={values['delivery']!r}: write 'process', 'inline' or 'external'"
            )
        if env.get("RUNBELL_CONFIG"):
            values["config_paths"] = tuple(Path(p) for p in env["RUNBELL_CONFIG"].split(os.pathsep))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
