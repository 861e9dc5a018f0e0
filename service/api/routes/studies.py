"""Studies: submit, list, inspect, cancel, delete, page through trials, export the best."""

from __future__ import annotations

import base64
import csv
import io
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api import views
from service.api.deps import MAX_ID, DatabaseDep, ReadSession, SettingsDep, StudyId
from service.api.schemas import StudyDetail, StudyPage, StudyVerdict, TrialPage, TrialSummary
from service.api.submission import parse_body, to_spec
from service.core.errors import APIError, error_responses, not_found
from service.export import FORMATS, best_document, render
from studies.spec import StudySpec
from studies.storage.engine import transaction
from studies.storage.models import Study
from studies.storage.repository import reads, submissions
from worker.contract import FINISHED_STUDY_STATUSES, StudyStatus, StudyStatusName, TrialStatusName

router = APIRouter(prefix="/studies", tags=["studies"])

# The body is parsed by hand (JSON or YAML); this documents it. The two schemas are
# added to the OpenAPI components in service.main.
SUBMISSION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/StudySpec"},
                        {"$ref": "#/components/schemas/PresetSubmission"},
                    ]
                }
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
        "description": "a study spec, or a preset name with overrides",
    }
}
MEDIA_TYPES = {"json": "application/json", "yaml": "application/yaml", "python": "text/x-python"}


def _study(session: Session, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise not_found("study", study_id)
    return study


@router.post(
    "",
    status_code=201,
    response_model=StudyDetail,
    openapi_extra=SUBMISSION_BODY,
    responses={200: {"model": StudyDetail, "description": "replayed (Idempotency-Key)"}}
    | error_responses(409, 413, 415, 422),
)
async def submit_study(
    request: Request,
    response: Response,
    database: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> StudyDetail:
    """Queue a study; the driver picks it up. A retry with the same ``Idempotency-Key``
    returns the study the first request created, never a second one."""
    data = parse_body(await request.body(), request.headers.get("content-type", ""))
    spec = to_spec(data, settings.caps)

    def create() -> tuple[StudyDetail, bool]:
        try:
            with transaction(database.writes) as session:
                existing = (
                    submissions.study_by_idempotency_key(session, idempotency_key)
                    if idempotency_key
                    else None
                )
                if existing is not None:
                    return _replay(session, existing, spec), True
                study = submissions.create_study(session, spec, idempotency_key)
                return views.detail(session, study), False
        except IntegrityError:  # a concurrent request with the same key won the race
            with transaction(database.reads) as session:
                existing = submissions.study_by_idempotency_key(session, idempotency_key or "")
                if existing is None:
                    raise
                return _replay(session, existing, spec), True

    study, replayed = await run_in_threadpool(create)
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{study.id}"
    return study


def _replay(session: Session, study: Study, spec: StudySpec) -> StudyDetail:
    if study.spec != spec.model_dump(mode="json"):
        raise APIError(
            409,
            f"Idempotency-Key was already used for study {study.id} with a different spec",
        )
    return views.detail(session, study)


@router.get("", response_model=StudyPage, responses=error_responses(422))
def list_studies(
    session: ReadSession,
    status: Annotated[StudyStatusName | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> StudyPage:
    studies, total = reads.list_studies(session, status, limit, offset)
    counts = reads.trial_status_counts(session, [s.id for s in studies])
    items = [views.summary(s, counts[s.id]) for s in studies]
    return StudyPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{study_id}", response_model=StudyDetail, responses=error_responses(404))
def get_study(study_id: StudyId, session: ReadSession) -> StudyDetail:
    return views.detail(session, _study(session, study_id))


@router.post(
    "/{study_id}/cancel",
    response_model=StudyDetail,
    status_code=202,
    responses=error_responses(404, 409),
)
def cancel_study(study_id: StudyId, database: DatabaseDep) -> StudyDetail:
    """Queued studies are cancelled at once; running ones within seconds, by their driver."""
    with transaction(database.writes) as session:
        study = _study(session, study_id)
        if study.status in (StudyStatus.complete, StudyStatus.failed):
            raise APIError(409, f"study {study_id} is {study.status}; nothing to cancel")
        submissions.request_cancel(session, study_id)
        return views.detail(session, study)


@router.delete("/{study_id}", status_code=204, responses=error_responses(404, 409))
def delete_study(study_id: StudyId, database: DatabaseDep) -> Response:
    """Only finished studies: a running one must be cancelled first."""
    with transaction(database.writes) as session:
        study = _study(session, study_id)
        if study.status not in FINISHED_STUDY_STATUSES:
            raise APIError(
                409,
                f"study {study_id} is {study.status}; only {list(FINISHED_STUDY_STATUSES)} "
                "studies can be deleted (cancel it first)",
            )
        submissions.delete_study(session, study_id)
    return Response(status_code=204)


#: the cursor of a live view that has seen no row yet: a live study with no trials so far
#: still gets a cursor to poll from
START_CURSOR = base64.urlsafe_b64encode(b"[]").decode()


def _decode_cursor(after: str) -> tuple[float | None, int] | None:
    """The (sort key, id) of the last row seen; None for ``START_CURSOR``."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(after.encode()))
        if decoded == []:
            return None
        value, last_id = decoded
        if not isinstance(last_id, int) or not 0 <= last_id <= MAX_ID:
            raise ValueError
        if not (value is None or isinstance(value, (int, float))):
            raise ValueError
        return value, last_id
    except (ValueError, TypeError):  # TypeError: valid JSON that is no pair, e.g. ``5``
        raise APIError(422, "after: not a cursor returned by this endpoint (next_cursor)") from None


def _encode_cursor(value: float | None, last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, last_id]).encode()).decode()


@router.get("/{study_id}/trials", response_model=TrialPage, responses=error_responses(404, 422))
def list_trials(
    study_id: StudyId,
    session: ReadSession,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    sort: Annotated[Literal["number", "objective"], Query()] = "number",
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    status: Annotated[TrialStatusName | None, Query()] = None,
) -> TrialPage:
    """A page of the study's trials (keyset pagination): pass ``next_cursor`` as ``after``
    for the rows that follow; ``has_more`` says whether more rows exist right now.

    Once the study has finished (complete, failed or cancelled) and its rows are exhausted,
    ``next_cursor`` is null, so a client that follows it until null reads every trial
    exactly once and stops. While the study is live, ``next_cursor`` is never null (an
    empty page returns the cursor it was given): a live view polls from it, and sorted by
    ``number`` ascending it gets exactly the trials created since."""
    # The status is read before the rows: a study that was finished then has all its rows.
    finished = _study(session, study_id).status in FINISHED_STUDY_STATUSES
    cursor = _decode_cursor(after) if after else None
    rows = reads.trials_page(
        session,
        study_id,
        sort=sort,
        descending=order == "desc",
        status=status,
        after=cursor,
        limit=limit + 1,  # one more than a page: whether more rows follow it
    )
    trials, has_more = rows[:limit], len(rows) > limit
    if finished and not has_more:
        next_cursor = None
    elif trials:
        last = trials[-1]
        key = last.objective if sort == "objective" else last.number
        next_cursor = _encode_cursor(key, last.id)
    else:  # nothing new yet: a live view keeps polling from where it was
        next_cursor = after or START_CURSOR
    items = [TrialSummary.model_validate(t) for t in trials]
    return TrialPage(items=items, next_cursor=next_cursor, has_more=has_more)


CSV_COLUMNS = ("id", "number", "configuration", "seed_index", "status", "objective", "last_step")


@router.get(
    "/{study_id}/trials.csv",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/csv": {}}}} | error_responses(404),
)
def trials_csv(study_id: StudyId, session: ReadSession) -> PlainTextResponse:
    study = _study(session, study_id)
    trials = reads.study_trials(session, study_id)
    params = sorted({name for t in trials for name in t.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, *params, "started_at", "finished_at"])
    for t in trials:
        writer.writerow(
            [getattr(t, c) for c in CSV_COLUMNS]
            + [t.params.get(name) for name in params]
            + [t.started_at, t.finished_at]
        )
    filename = f"study-{study.id}-trials.csv"
    return PlainTextResponse(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/{study_id}/best",
    responses={
        200: {
            "content": {media: {} for media in MEDIA_TYPES.values()},
            "description": "the best configuration, with provenance",
        }
    }
    | error_responses(404, 422),
)
def best(
    study_id: StudyId,
    session: ReadSession,
    format: Annotated[Literal[FORMATS], Query()] = "json",  # type: ignore[valid-type]
) -> Response:
    """The best configuration over complete trials (mean over seeds), with its metrics
    and provenance; ``format=python`` gives a snippet that builds the optimizer."""
    study = _study(session, study_id)
    found = views.best_of(session, study)
    if found is None:
        raise APIError(404, f"study {study_id} has no configuration whose trials all completed")
    comparisons = views.verdict(session, study).comparisons
    verdicts = [comparison.model_dump(mode="json") for comparison in comparisons]
    text = render(best_document(study, found, verdicts), format)
    return Response(text, media_type=MEDIA_TYPES[format])


@router.get("/{study_id}/verdict", response_model=StudyVerdict, responses=error_responses(404))
def verdict(study_id: StudyId, session: ReadSession) -> StudyVerdict:
    """Each masked arm against its dense base, both at their best configuration, paired by
    seed, tested in each stage (selection, and the confirmation stage's fresh seeds where
    the study runs one): the % change with its 95% interval, the paired t test's p and
    verdict, the seeds a 1% change needs (a range), and the decision of the deciding stage
    (the confirmation stage where there is one), inconclusive when a limit applies (README,
    "Tested differences")."""
    return views.verdict(session, _study(session, study_id))
