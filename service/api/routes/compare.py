"""Verdicts for anyone's numbers: a table of paired results in, each comparison's paired
test out (``studies.compare``, the same as ``magma-bench compare --json``). Reads and
writes nothing."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.schemas import CompareRequest, CompareResult
from service.core.errors import APIError, FieldError, error_responses
from studies.compare import TableError, judge, read_rows, result_object

router = APIRouter(prefix="/compare", tags=["compare"])


@router.post("", response_model=list[CompareResult], responses=error_responses(400, 422))
def compare(body: CompareRequest) -> list[CompareResult]:
    """Each comparison of ``rows`` (in first-seen order): its paired t test, change and
    interval, verdict (better, worse, equivalent with a margin, else
    no_detectable_difference) and seeds needed. A diverged run, "inf", "nan" or "diverged",
    scores the worst finite value of its comparison. A mistake in the rows is a 422
    naming the row (0-based) and field, e.g. ``rows.3.baseline``; a body that is not JSON
    is a 400."""
    try:
        comparisons = read_rows([row.model_dump() for row in body.rows])
    except TableError as exc:
        detail = FieldError(field=exc.field, message=exc.message)
        raise APIError(422, f"{exc.field}: {exc.message}", details=[detail]) from None
    judged = judge(comparisons, body.mode, margin=body.margin, effect=body.effect, adjust=body.holm)
    return [CompareResult(**result_object(j)) for j in judged]
