"""Property-based requests generated from the OpenAPI schema (schemathesis) against a
real server on each backend: no 5xx, and every response matches its documented status,
content type and schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.service_fixtures import Server

SCHEMATHESIS = Path(sys.executable).parent / "st"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


def test_generated_requests_meet_the_schema(server: Server, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            "30",
            "--seed",
            "20261122",
            "--workers",
            "1",  # hypothesis' lambda introspection is not thread-safe on Python 3.11
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert result.returncode == 0 and counts, output[-6000:]
    generated, passed = map(int, counts.groups())
    print(f"schemathesis: {generated} generated, {passed} passed")
    assert generated >= 300 and passed == generated, output[-3000:]
    assert "Traceback" not in server.tail(10_000), server.tail(60)
