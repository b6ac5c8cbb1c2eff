"""``call-webhook``: one templated HTTP request; a non-2xx answer is a failure.

``body`` is JSON whose strings are templates (a string that is exactly one
``{{ expression }}`` keeps the expression's JSON type); ``payload`` is Prefect's
form, one template rendered to the raw body. The outbox id travels as
``Idempotency-Key``. 5xx/429/408/425, timeouts and connection errors are
retryable (``Retry-After`` honoured); other answers are not. Redirects are not
followed; the target is the masked URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from automations.delivery.actions.base import Job, Runtime
from automations.spec import CallWebhookAction
from notifiers import HttpClient, SendResult, TemplateError, mask_url, render_field, render_json

__all__ = ["execute"]


def _request(
    action: CallWebhookAction, context: Mapping[str, Any]
) -> tuple[str, dict[str, str], bytes | None]:
    url = render_field(action.url, context, where="url")
    headers = {
        key: render_field(value, context, where=f"headers.{key}")
        for key, value in action.headers.items()
    }
    content: bytes | None = None
    if action.payload is not None:
        text = render_field(action.payload, context, where="payload")
        content = text.encode()
        try:
            json.loads(text)
            headers.setdefault("Content-Type", "application/json")
        except ValueError:
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    elif action.body is not None:
        body = render_json(action.body, context, where="body")
        content = json.dumps(body, ensure_ascii=False).encode()
        headers.setdefault("Content-Type", "application/json")
    return url, headers, content


async def execute(action: CallWebhookAction, job: Job, runtime: Runtime) -> SendResult:
    """Make the request once and report the outcome."""
    try:
        url, headers, content = await asyncio.to_thread(_request, action, job.context)
    except TemplateError as exc:
        return SendResult.failed(f"{action.method} (unrendered)", f"template: {exc}")
    target = f"{action.method} {mask_url(url)}"
    if url.partition("://")[0].lower() not in ("http", "https"):
        return SendResult.failed(target, "call-webhook URL must be http(s)")
    headers["Idempotency-Key"] = job.key
    client = runtime.http or HttpClient()
    try:
        reply = await client.request(
            action.method,
            url,
            target=target,
            what="webhook",
            content=content,
            headers=headers,
            timeout=action.timeout.total_seconds(),
        )
    finally:
        if runtime.http is None:
            await client.aclose()
    return reply.result
