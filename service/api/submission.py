"""Turn a submitted body (a spec as JSON or YAML, or a preset with overrides) into a
validated ``StudySpec`` within the server caps, or a 4xx that names the bad fields."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

from service.api.schemas import PresetSubmission
from service.core.errors import APIError, field_errors
from studies.caps import check_caps
from studies.presets import load_preset, preset_names
from studies.spec import StudySpec
from worker.settings import Caps

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_BODY_BYTES = 1 << 20


def parse_body(body: bytes, content_type: str) -> Any:
    media_type = content_type.split(";", 1)[0].strip().lower() or "application/json"
    if len(body) > MAX_BODY_BYTES:
        raise APIError(413, f"a study spec is at most {MAX_BODY_BYTES} bytes")
    try:
        if media_type in JSON_TYPES:
            return json.loads(body)
        if media_type in YAML_TYPES:
            return yaml.safe_load(body)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if media_type in JSON_TYPES else "YAML"
        raise APIError(422, f"body: not valid {kind}: {exc}", code="invalid_body") from None
    raise APIError(
        415,
        f"Content-Type must be one of {list(JSON_TYPES + YAML_TYPES)}, got {media_type!r}",
    )


def to_spec(data: Any, caps: Caps) -> StudySpec:
    if not isinstance(data, dict):
        raise APIError(422, "body: must be a mapping (a study spec or a preset)", "invalid_spec")
    try:
        if "preset" in data:
            submission = PresetSubmission.model_validate(data)
            if submission.preset not in preset_names():
                raise ValueError(
                    f"preset: must be one of {preset_names()}, got {submission.preset!r}"
                )
            spec = load_preset(submission.preset, submission.overrides)
        else:
            spec = StudySpec.model_validate(data)
        check_caps(spec, caps)
    except (ValidationError, ValueError) as exc:
        details = field_errors(exc)
        message = "; ".join(f"{d.field}: {d.message}" for d in details[:3])
        raise APIError(422, message, "invalid_spec", details) from None
    return spec
