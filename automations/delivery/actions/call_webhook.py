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
import time
from collections.abc import Mapping
from typing import Any

import httpx

from automations.delivery.actions.base import ActionResult, Job, Runtime
from automations.spec import CallWebhookAction
from notifiers import (
    TemplateError,
    is_retryable_status,
    mask_url,
    render_field,
    render_json,
    retry_after_seconds,
)

__all__ = ["execute"]

_EXCERPT = 200


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


async def execute(action: CallWebhookAction, job: Job, runtime: Runtime) -> ActionResult:
    """Make the request once and report the outcome."""
    try:
        url, headers, content = await asyncio.to_thread(_request, action, job.context)
    except TemplateError as exc:
        return ActionResult.failed(f"{action.method} (unrendered)", f"template: {exc}")
    target = f"{action.method} {mask_url(url)}"
    if url.partition("://")[0].lower() not in ("http", "https"):
        return ActionResult.failed(target, "call-webhook URL must be http(s)")
    headers["Idempotency-Key"] = job.key
    timeout = action.timeout.total_seconds()
    started = time.perf_counter()
    client = runtime.http or httpx.AsyncClient(follow_redirects=False)
    try:
        response = await client.request(
            action.method, url, content=content, headers=headers, timeout=timeout
        )
    except httpx.TimeoutException as exc:
        return ActionResult.failed(
            target, f"timed out after {timeout:g}s ({type(exc).__name__})", retryable=True
        )
    except httpx.HTTPError as exc:  # the message can quote the URL: name the type only
        return ActionResult.failed(target, f"request failed ({type(exc).__name__})", retryable=True)
    finally:
        if runtime.http is None:
            await client.aclose()
    latency = (time.perf_counter() - started) * 1000
    code = response.status_code
    if response.is_success:
        return ActionResult.done(target, f"HTTP {code}", latency_ms=latency, status_code=code)
    excerpt = response.text[:_EXCERPT].strip()
    return ActionResult(
        ok=False,
        retryable=is_retryable_status(code),
        reason=f"webhook answered HTTP {code}" + (f": {excerpt}" if excerpt else ""),
        target=target,
        latency_ms=latency,
        status_code=code,
        retry_after=retry_after_seconds(response),
    )
