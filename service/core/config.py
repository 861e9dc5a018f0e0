"""Service settings, from the environment (``.env.example`` documents each one)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from studies.caps import Caps
from studies.storage.engine import DEFAULT_URL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAGMA_", extra="ignore")

    database_url: str = Field(
        DEFAULT_URL, validation_alias=AliasChoices("DATABASE_URL", "MAGMA_DATABASE_URL")
    )
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    api_key: SecretStr | None = Field(None, description="unset: no auth, loopback only")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: how often an open event stream looks for new events
    events_poll_seconds: float = Field(0.5, gt=0)
    caps: Caps = Field(default_factory=Caps.from_env)

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


@lru_cache
def get_settings() -> Settings:
    return Settings()
