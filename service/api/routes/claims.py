"""The paper's claims, each tested on the newest complete study of its preset."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import views
from service.api.deps import ReadSession
from service.api.schemas import ClaimsReport

router = APIRouter(prefix="/claims", tags=["claims"])


@router.get("", response_model=ClaimsReport)
def list_claims(session: ReadSession) -> ClaimsReport:
    """One row per claim: the preset and study that test it, the scale it ran at, and the
    verdict (supported, contradicted or inconclusive) with its numbers, warnings and the
    test's definition."""
    return views.claims(session)
