"""Subscriptions: external services that follow the run event stream.

The room for signed webhook subscriptions (Standard Webhooks, delivered through
the outbox like actions, retried by the dispatcher's retry stage) and for the
cursors of resumable streams. Sends go through ``notifiers.HttpClient``.
"""
