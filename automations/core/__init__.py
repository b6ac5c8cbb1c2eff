"""The pure core: matching, triggers, buckets, ordering, metrics, silences, grouping.

Every module here takes an event (or a time) and a state object and returns
decisions: no I/O, no clock, no globals. Depends on ``spec`` only.
"""
