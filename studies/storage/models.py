"""The database schema: the source of truth for studies, trials, metrics and events.

Tables are prefixed ``magma_`` so they never meet another application's in a shared
database (Optuna's RDB storage, which kept trial state here before migration 0004, owned
``studies`` and ``trials``). Optuna's studies now live only in memory, rebuilt from
``trials`` (``studies.samplers``).

Every metric row a trial reports lands in ``metrics`` as it happens (the live view
reads it); ``events`` is an append-only log whose ids order the server-sent events.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from worker.contract import MODES, StudyStatus, TrialStatus

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")
#: study and trial ids are 32-bit integers in PostgreSQL: a larger one cannot exist, and
#: binding it would overflow, so requests bound their ids (and offsets) by it
MAX_ID = 2**31 - 1


def one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK constraint's SQL: ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out from every backend (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType}


class Study(Base):
    """A submitted study. ``spec`` is the validated spec with every default applied;
    ``workload``, ``metric``, ``mode`` and ``runs`` are read from it once, at submission,
    so no reader parses a spec again."""

    __tablename__ = "magma_studies"
    __table_args__ = (
        CheckConstraint(one_of("status", StudyStatus.values()), name="ck_studies_status"),
        CheckConstraint(one_of("mode", MODES), name="ck_studies_mode"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    workload: Mapped[str] = mapped_column(String(40))
    #: the metric the study optimises (a key of its trials' metric rows)
    metric: Mapped[str] = mapped_column(String(60))
    mode: Mapped[str] = mapped_column(String(3))
    #: trials the study runs: configurations x seeds (a bracket study: at most this many)
    runs: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=StudyStatus.queued.value, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    trials: Mapped[list[Trial]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True
    )


class Trial(Base):
    __tablename__ = "magma_trials"
    __table_args__ = (
        Index("ix_trials_study_number", "study_id", "number", unique=True),
        Index("ix_trials_study_status", "study_id", "status"),
        Index("ix_trials_study_objective", "study_id", "objective"),
        Index("ix_trials_study_configuration", "study_id", "configuration"),
        CheckConstraint(one_of("status", TrialStatus.values()), name="ck_trials_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("magma_studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    #: seed repeats of one configuration share it (the Optuna trial number)
    configuration: Mapped[int] = mapped_column(Integer)
    seed_index: Mapped[int] = mapped_column(Integer, default=0)
    params: Mapped[dict[str, Any]]
    #: the complete ``TrialConfig`` the trial runs, every default applied
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default=TrialStatus.queued.value)
    objective: Mapped[float | None] = mapped_column(Float)
    last_step: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    study: Mapped[Study] = relationship(back_populates="trials")


class Metric(Base):
    __tablename__ = "magma_metrics"
    __table_args__ = (Index("ix_metrics_trial_step", "trial_id", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("magma_trials.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    objective: Mapped[float | None] = mapped_column(Float)
    values: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Event(Base):
    __tablename__ = "magma_events"
    __table_args__ = (Index("ix_events_study_id", "study_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("magma_studies.id", ondelete="CASCADE"))
    trial_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
