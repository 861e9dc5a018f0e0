"""A small HTTP client for the REST API, used by the CLI (by default at the settings'
``MAGMA_URL``, sending ``MAGMA_API_KEY``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from worker.settings import get_settings

YAML_SUFFIXES = (".yaml", ".yml")


class APIClientError(RuntimeError):
    """The API answered with an error; ``str()`` is its message and field details."""

    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        if isinstance(body, dict) and "error" in body:
            error = body["error"]
            lines = [f"HTTP {status}: {error.get('message', '')}"]
            lines += [f"  {d['field']}: {d['message']}" for d in error.get("details", [])]
            message = "\n".join(lines)
        else:
            message = f"HTTP {status}: {body}"
        super().__init__(message)


@dataclass(frozen=True)
class SSE:
    id: int | None
    event: str
    data: dict[str, Any]


class Client:
    def __init__(
        self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0
    ) -> None:
        settings = get_settings()
        self.url = (url or settings.api_url).rstrip("/")
        if api_key is None and settings.api_key is not None:
            api_key = settings.api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            try:
                body: dict[str, Any] | str = response.json()
            except ValueError:
                body = response.text
            raise APIClientError(response.status_code, body)
        return response

    def submit_preset(
        self,
        preset: str,
        overrides: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = {"preset": preset, "overrides": overrides or {}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/studies", json=body, headers=headers)).json()

    def submit_file(self, source: Path, idempotency_key: str | None = None) -> dict[str, Any]:
        """A spec file, sent as YAML or JSON by its suffix (the server validates it)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        content_type = (
            "application/yaml" if source.suffix.lower() in YAML_SUFFIXES else "application/json"
        )
        headers["Content-Type"] = content_type
        response = self.http.post("/studies", content=source.read_bytes(), headers=headers)
        return self._check(response).json()

    def study(self, study_id: int) -> dict[str, Any]:
        return self._check(self.http.get(f"/studies/{study_id}")).json()

    def studies(self, status: str | None = None, limit: int = 50) -> dict[str, Any]:
        """The newest studies first: ``{"items", "total", "limit", "offset"}``."""
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        return self._check(self.http.get("/studies", params=params)).json()

    def presets(self) -> list[dict[str, Any]]:
        return self._check(self.http.get("/presets")).json()

    def trials(self, study_id: int, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every trial of the study, by number, a page at a time."""
        params: dict[str, Any] = {"limit": page_size}
        while True:
            response = self.http.get(f"/studies/{study_id}/trials", params=params)
            page = self._check(response).json()
            yield from page["items"]
            if len(page["items"]) < page_size:
                return
            params["after"] = page["next_cursor"]

    def cancel(self, study_id: int) -> dict[str, Any]:
        return self._check(self.http.post(f"/studies/{study_id}/cancel")).json()

    def best(self, study_id: int, fmt: str = "json") -> str:
        response = self.http.get(f"/studies/{study_id}/best", params={"format": fmt})
        return self._check(response).text

    def verdict(self, study_id: int) -> dict[str, Any]:
        return self._check(self.http.get(f"/studies/{study_id}/verdict")).json()

    def claims(self) -> dict[str, Any]:
        return self._check(self.http.get("/claims")).json()

    def health(self) -> dict[str, Any]:
        return self._check(self.http.get("/health")).json()

    def events(self, study_id: int, after: int = 0) -> Iterator[SSE]:
        """The study's event stream until it ends (the study finished)."""
        headers = {"Last-Event-ID": str(after)} if after else {}
        with self.http.stream(
            "GET", f"/studies/{study_id}/events", headers=headers, timeout=None
        ) as response:
            if response.is_error:
                response.read()
                self._check(response)
            yield from parse_sse(response.iter_lines())

    def close(self) -> None:
        self.http.close()


def parse_sse(lines: Iterator[str]) -> Iterator[SSE]:
    """The ``text/event-stream`` wire format: fields until a blank line; ``:`` comments."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                event_id = fields.get("id")
                yield SSE(
                    id=int(event_id) if event_id and event_id.isdigit() else None,
                    event=fields.get("event", "message"),
                    data=json.loads(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value
