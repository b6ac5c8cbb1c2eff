"""Delivery: the dispatcher and its stages, the actions, the channels, the orchestrators.

``dispatcher`` (claim → throttle → execute → record), ``retry`` (the one stage
that owns backoff), ``throttle`` (rate limits as token buckets), ``grouping_stage``,
``channels`` (notifiers and rate limits built from the YAML), ``actions/`` (one
module per action type) and ``orchestrators/`` (run control over Prefect's REST
API or templated HTTP). Depends on ``state``, ``core`` and ``spec``.
"""
