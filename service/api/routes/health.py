"""Liveness for orchestrators: is the database answering, is the Ray cluster reachable."""

from __future__ import annotations

import socket
from importlib.metadata import version

from fastapi import APIRouter, Response
from sqlalchemy import text

from service import DISTRIBUTION
from service.api.deps import DatabaseDep, SettingsDep
from service.api.schemas import Component, Health

router = APIRouter(tags=["health"])


def _database(database: DatabaseDep) -> Component:
    try:
        with database.read_engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return Component(ok=True, detail=database.read_engine.dialect.name)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Component(ok=False, detail=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def _ray(address: str | None) -> Component:
    """A TCP connect to the head's GCS port (no Ray client: the API never joins the
    cluster). Unset RAY_ADDRESS: the driver starts a local Ray of its own."""
    if not address or address == "auto":
        return Component(ok=True, detail="local (started by the driver)")
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host or target, int(port or 6379)), timeout=1.0):
            return Component(ok=True, detail=f"reachable at {address}")
    except (OSError, ValueError) as exc:
        return Component(ok=False, detail=f"{address}: {exc}")


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(database: DatabaseDep, settings: SettingsDep, response: Response) -> Health:
    db, ray = _database(database), _ray(settings.ray_address)
    ok = db.ok and ray.ok
    if not db.ok:
        response.status_code = 503
    return Health(
        status="ok" if ok else "degraded",
        database=db,
        ray=ray,
        version=version(DISTRIBUTION),
    )
