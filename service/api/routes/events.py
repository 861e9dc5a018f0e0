"""A study's live event stream (server-sent events): trial starts, metric rows,
completions and study status changes, in commit order.

Each event's ``id`` is its row id in the append-only event log, so a client that
reconnects with ``Last-Event-ID`` gets exactly the events it missed. The stream ends
once the study has finished and every event has been sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from service.api.deps import MAX_EVENT_ID, DatabaseDep, SettingsDep, StudyId
from service.core.errors import APIError, error_responses, not_found
from studies.storage.engine import transaction
from studies.storage.models import Event, Study
from studies.storage.repository import event_log
from worker.contract import FINISHED_STUDY_STATUSES

router = APIRouter(prefix="/studies", tags=["events"])

BATCH = 500


def _event(event: Event) -> ServerSentEvent:
    return ServerSentEvent(
        id=str(event.id),
        event=event.kind,
        data={
            "id": event.id,
            "kind": event.kind,
            "trial_id": event.trial_id,
            "payload": event.payload,
            "created_at": event.created_at.isoformat(),
        },
    )


def start_cursor(
    study_id: StudyId,
    database: DatabaseDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="as Last-Event-ID")
    ] = None,
) -> int:
    """Checked before the stream opens, so a bad request still gets a 4xx status."""
    cursor = after or 0
    if last_event_id is not None:
        value = last_event_id.strip()
        if not (value.isascii() and value.isdigit() and int(value) <= MAX_EVENT_ID):
            raise APIError(422, "Last-Event-ID: must be an event id (a non-negative integer)")
        cursor = int(value)
    with transaction(database.reads) as session:
        if session.get(Study, study_id) is None:
            raise not_found("study", study_id)
    return cursor


@router.get(
    "/{study_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}} | error_responses(404, 422),
)
async def study_events(
    study_id: StudyId,
    database: DatabaseDep,
    settings: SettingsDep,
    cursor: Annotated[int, Depends(start_cursor)],
) -> AsyncIterator[ServerSentEvent]:
    def poll(after: int) -> tuple[str | None, list[Event]]:
        # Status first: a study seen finished has committed its last event already.
        with transaction(database.reads) as session:
            study = session.get(Study, study_id)
            if study is None:  # deleted while streaming
                return None, []
            return study.status, event_log.events_after(session, study_id, after, BATCH)

    while True:
        status, events = await run_in_threadpool(poll, cursor)
        for event in events:
            yield _event(event)
            cursor = event.id
        if len(events) < BATCH:
            if status is None or status in FINISHED_STUDY_STATUSES:
                return
            await asyncio.sleep(settings.events_poll_seconds)
