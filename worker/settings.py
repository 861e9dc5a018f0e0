"""Every setting of every magma-bench process, read from the environment in one place.

The API, the driver, the CLI, the benchmarks and each trial (a Ray worker process) all
read their settings through :func:`get_settings`, so one variable always means one thing
and two processes started from one environment cannot disagree (say, on which database
they use). ``.env.example`` documents each variable.

It lives in ``worker`` because that is the lowest layer of the service: ``studies``,
``service``, ``dashboards`` and the benchmarks all import ``worker``, and a trial process
imports nothing above it. So it imports only pydantic and the standard library: no torch,
SQLAlchemy, FastAPI or Ray. (``magma``, the standalone optimizer library, has no
settings.)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_DATABASE_URL = "sqlite:///var/magma-bench.db"
#: the canonical database variable first; ``DATABASE_URL`` is its older spelling, still
#: accepted so that existing deployments keep working
DATABASE_URL_VARIABLES = ("MAGMA_DATABASE_URL", "DATABASE_URL")
#: what a SQLAlchemy URL starts with: ``dialect[+driver]://``
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\+[A-Za-z0-9_]+)?://")


@dataclass(frozen=True)
class Caps:
    """Server-side limits, so that one study cannot exhaust the cluster."""

    max_trials: int = 2000
    max_steps: int = 200_000
    max_concurrent: int = 64


class _Environment(EnvSettingsSource):
    """The environment, refusing both database variables with different values: the API
    and the driver could otherwise each pick a different one."""

    def __call__(self) -> dict[str, Any]:
        given = {
            name: value
            for name in DATABASE_URL_VARIABLES
            if (value := self.env_vars.get(name if self.case_sensitive else name.lower()))
        }
        if len(set(given.values())) > 1:
            raise ValueError(
                "MAGMA_DATABASE_URL and DATABASE_URL are both set, to different databases "
                f"({given['MAGMA_DATABASE_URL']!r} and {given['DATABASE_URL']!r}); set only "
                "MAGMA_DATABASE_URL (DATABASE_URL is its older name)"
            )
        return super().__call__()


class Settings(BaseSettings):
    """Each field is read from the environment variable named by its alias; an empty
    variable counts as unset. Tests and tools may also pass fields by name."""

    model_config = SettingsConfigDict(
        extra="ignore", env_ignore_empty=True, validate_by_name=True, frozen=True
    )

    # --- shared by the API and the driver -------------------------------------------------
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices(*DATABASE_URL_VARIABLES),
        description="SQLAlchemy URL of the database the API and the driver share",
    )
    ray_address: str | None = Field(
        None,
        validation_alias="RAY_ADDRESS",
        description="Ray cluster (host:port of the head); unset: the driver starts a local Ray",
    )
    # --- API ------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None,
        validation_alias="MAGMA_API_KEY",
        description="the key the API requires and the CLI sends; unset: no auth, loopback only",
    )
    host: str = Field("127.0.0.1", validation_alias="MAGMA_HOST")
    port: int = Field(8000, ge=0, le=65535, validation_alias="MAGMA_PORT")
    events_poll_seconds: float = Field(
        0.5,
        gt=0,
        validation_alias="MAGMA_EVENTS_POLL_SECONDS",
        description="how often an open event stream looks for new events",
    )
    max_trials: int = Field(Caps.max_trials, ge=1, validation_alias="MAGMA_MAX_TRIALS")
    max_steps: int = Field(Caps.max_steps, ge=1, validation_alias="MAGMA_MAX_STEPS")
    max_concurrent: int = Field(Caps.max_concurrent, ge=1, validation_alias="MAGMA_MAX_CONCURRENT")
    # --- driver ---------------------------------------------------------------------------
    storage: Path = Field(
        Path("var/ray"),
        validation_alias="MAGMA_STORAGE",
        description="Ray Tune storage: one path the driver and every Ray node share",
    )
    driver_stale_seconds: float = Field(
        30.0,
        gt=0,
        validation_alias="MAGMA_DRIVER_STALE_SECONDS",
        description="heartbeat silence after which another driver takes a study over",
    )
    max_concurrent_studies: int = Field(
        1,
        ge=1,
        validation_alias="MAGMA_MAX_CONCURRENT_STUDIES",
        description="studies one driver runs at once, sharing the cluster fairly; "
        "1: one after the other",
    )
    # --- trials ---------------------------------------------------------------------------
    cache_dir: Path = Field(
        Path("var/cache/tokens"),
        validation_alias="MAGMA_CACHE_DIR",
        description="tokenized-data cache shared by all trials",
    )
    tokenize_workers: int | None = Field(
        None,
        ge=1,
        validation_alias="MAGMA_TOKENIZE_WORKERS",
        description="processes that build a token cache; unset: every CPU of the machine",
    )
    hub_mirror: Path | None = Field(
        None,
        validation_alias="MAGMA_HUB_MIRROR",
        description="local copy of hub data sets (<mirror>/allenai/c4/en/c4-train.*.json.gz): "
        "'hf:' sources read it instead of downloading",
    )
    # --- CLI client -----------------------------------------------------------------------
    api_url: str = Field(
        "http://127.0.0.1:8000",
        validation_alias="MAGMA_URL",
        description="base URL of the API that the CLI talks to",
    )
    # --- benchmarks -----------------------------------------------------------------------
    bench_pg: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        validation_alias="MAGMA_BENCH_PG",
        description="PostgreSQL server on which benchmarks/api_load.py creates its database",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("database_url", "bench_pg")
    @classmethod
    def _sqlalchemy_url(cls, value: str, info: ValidationInfo) -> str:
        if not URL_SCHEME.match(value):
            # the error's location is the canonical name, whichever of the two was set
            given = (
                " (from MAGMA_DATABASE_URL or DATABASE_URL)"
                if info.field_name == "database_url"
                else ""
            )
            raise ValueError(
                f"must be a SQLAlchemy URL such as {DEFAULT_DATABASE_URL!r} or "
                f"'postgresql+psycopg://user:password@host:5432/db', got {value!r}{given}"
            )
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @property
    def caps(self) -> Caps:
        return Caps(self.max_trials, self.max_steps, self.max_concurrent)

    @property
    def auth_enabled(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())

    def bind_warning(self, host: str) -> str | None:
        """Why this bind is unsafe (no key on a non-loopback address), else None."""
        if self.auth_enabled:
            return None
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return None
        return (
            f"MAGMA_API_KEY is unset and the API listens on {host}: anyone who can reach it "
            "can submit, cancel and delete studies"
        )

    def trial_environment(self) -> dict[str, str]:
        """What a trial process, started by Ray possibly on another node, needs in its
        environment to read the driver's settings: the token cache and, when set, the hub
        mirror, as absolute paths (Ray Tune runs each trial in its own working
        directory), and the tokenizing processes."""
        environment = {"MAGMA_CACHE_DIR": str(self.cache_dir.resolve())}
        if self.hub_mirror is not None:
            environment["MAGMA_HUB_MIRROR"] = str(self.hub_mirror.resolve())
        if self.tokenize_workers is not None:
            environment["MAGMA_TOKENIZE_WORKERS"] = str(self.tokenize_workers)
        return environment


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once (tests that change the environment call
    ``get_settings.cache_clear()``)."""
    return Settings()
