"""The bundled study presets, each mirroring an experiment of the paper."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter

from service.api.schemas import Preset
from studies.presets import load_preset, preset_names

router = APIRouter(prefix="/presets", tags=["presets"])


@router.get("", response_model=list[Preset])
def list_presets() -> list[Preset]:
    return _presets()


@cache
def _presets() -> list[Preset]:
    """Validated once per process: the preset files ship with the package."""
    presets = []
    for name in preset_names():
        spec = load_preset(name)
        presets.append(
            Preset(
                name=name,
                description=spec.description,
                paper_reference=spec.paper_reference,
                runs=spec.runs,
                spec=spec.model_dump(mode="json"),
            )
        )
    return presets
