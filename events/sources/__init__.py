"""Inbound sources: what turns another system's records into runbell events.

The room for the Prefect bridge (its event stream and REST reconciliation),
OpenLineage, inbound webhooks and CloudEvents. A source produces
:class:`events.model.Event` values and publishes them through the bus or the
ingestion path it is given; it knows nothing of automations. The service starts
the ones its YAML names.
"""
