"""The store's record of one finished teacher call, written alike by generation and the judge."""

from __future__ import annotations

from typing import Any

from cotforge.teachers.base import TeacherRequest, TeacherResponse


def request_row(
    request: TeacherRequest,
    response: TeacherResponse,
    *,
    run_id: str,
    sample_id: str | None,
    purpose: str,
    model: str,
    prompt_hash: str,
    attempt: int = 0,
    cost_usd: float | None = None,
) -> dict[str, Any]:
    """One ``requests`` row: the call, its answer or error, usage and retries."""
    return {
        "request_id": request.request_id,
        "run_id": run_id,
        "sample_id": sample_id,
        "purpose": purpose,
        "model": model,
        "prompt_hash": prompt_hash,
        "attempt": attempt,
        "params": request.params(),
        "status": "ok" if response.ok else "error",
        "response_text": response.text if response.ok else None,
        "error": response.error,
        "latency_s": response.latency_s,
        "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens,
        "cost_usd": cost_usd,
        "retry_log": list(response.retry_log),
        "finish_reason": response.finish_reason,
    }
