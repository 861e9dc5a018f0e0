"""Does the paper hold at CPU scale? The claims suite, end to end.

Submits every study the claims registry (``studies.analysis.claims``) needs, each
role of a claim once (Figure 3's heavy and light covariates, Figure 4's heterogeneous and
homogeneous Hessians), runs them with the real driver (in this process, on a local Ray
with this machine's CPUs), tests the claims with the function behind
``GET /api/v1/claims`` (each role's newest complete study in the database: this run's,
in a fresh one) and prints the claims table, the total wall time and each study's.
At the suite's scale (``SUITE_SCALE``, the default: seeds batched and added in rounds) the
run of 2026-12-06 took 2181 s, 650 runs, on the 2-core machine, and decided Figures 3 and 4
(the README quotes it, ``benchmarks/results/claims-suite.json``); a deciding stage has at
least 3 pairs, the
fewest that can decide. ``--scale presets`` runs the presets' own, longer CPU scale. A
line is printed as each study starts and finishes.

    python benchmarks/claims.py                                # the suite's CPU scale
    python benchmarks/claims.py --only fig-4 --overrides \\
        '{"workload": {"steps": 10}, "seeds": 2, "protocol": {"confirm_seeds": 0}}'
    python benchmarks/claims.py --workdir var/claims --json var/claims/claims.json

The database (``--database-url``, by default ``claims.db`` in ``--workdir``, a new
temporary directory unless given) keeps the studies: point ``MAGMA_DATABASE_URL`` at it to
browse them with ``magma-bench serve``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.api.schemas import ClaimsReport
from service.api.views import claims as claims_report
from studies.analysis.claims import CLAIMS, IMPLEMENTATION_MARGINS, IMPLEMENTATION_ROLES, Role
from studies.caps import check_caps
from studies.engine.driver import Driver
from studies.presets import load_preset, merge_overrides
from studies.spec import StudySpec
from studies.storage.engine import make_engine, migrate, session_factory, transaction
from studies.storage.models import Study
from studies.storage.repository import reads, submissions
from worker.contract import FINISHED_STUDY_STATUSES
from worker.settings import get_settings

CLAIM_IDS = [claim.id for claim in CLAIMS]

#: The suite's language-model scale: llama-bytes (85.5% of its parameters masked) for 150
#: steps of 8 x 128 bytes, 32768 validation bytes every 50 steps (about 3.5-3.9 bits per byte
#: at the end against a unigram entropy of 4.6): about 8 CPU-seconds a seed, seeds batched 4
#: a task. 32768 bytes keep the evaluation noise a paired comparison sees at 0.13 of the seed
#: noise (16384: 0.18; ``benchmarks/eval_noise.py``, 8 seeds); which documents are drawn
#: shifts every run alike and cancels in a comparison. The presets' own CPU scale (1000
#: steps of 16 x 128) is about 10 times longer a run: ``--scale presets``.
SUITE_LM = {
    "model": "llama-bytes",
    "steps": 150,
    "batch_size": 8,
    "seq_len": 128,
    "eval_interval": 50,
    "eval_tokens": 32768,
}
#: LR grids of the LM studies: half-decade steps, extended while an arm's best is
#: unbracketed, around 10^-2.5 for the Adam family (their best at this scale: 3.16e-3 to
#: 1e-2) and 1e-3 for the RMSProp ablations (RMSProp's best: 1e-3 or below; at 3.16e-3 and
#: above it stalls near the unigram entropy). Measured in the run of 2026-11-30, whose
#: grids were centred on 1e-2 for every base and left RMSProp's best unbracketed.
SUITE_ADAM_PROTOCOL = {"lr_start": 10**-2.5, "initial_points": 3}
SUITE_RMSPROP_PROTOCOL = {"lr_start": 1e-3, "initial_points": 3}
#: Seeds in rounds (``protocol.sequential``): each deciding stage starts with one round and adds
#: one to every arm until each of the study's comparisons is decided (better, worse, or
#: equivalent within ``margin``) or the cap is reached, tested at each look's spent alpha.
#: The synthetic studies cost about a second a seed batched (``seed_batch``), so they get
#: rounds of 10 seeds up to 100; the language-model ones cost about 35 s a seed, so rounds of
#: 3 up to 6 (a claim still undecided says how many seeds it would need beyond that cap).
SUITE_SYNTHETIC_ROUNDS = {"round_seeds": 10, "max_seeds": 100}
SUITE_LM_ROUNDS = {"round_seeds": 3, "max_seeds": 6}
#: ``--scale suite`` (the default): each preset's overrides, under ``--overrides``. What it
#: leaves out is said here, and each study's scale is printed with its claim:
#: - Table 1: the four bases Table 1 masks (Muon+Magma is not in it), 2 selection seeds (a
#:   bracket study's fewest), the chosen LRs rerun in rounds of fresh seeds (the verdict is
#:   the confirmation's);
#: - Figure A3: Adam (adamw) only, the paper's comparison (C-Adam has no Magma curve there);
#:   its windows are per seed over the whole LR grid, so it is not seeded in rounds;
#: - Figure A1: tau in {1, 2, 4} (the neighbourhood of 2 the claim tests) at lr 1e-3, the
#:   best RMSProp+Magma LR at this scale, on the preset's 3 seeds (the claim pairs them; the
#:   study has no dense arm, so no comparison of its own to seed in rounds);
#: - Table A1: every components value, as the preset (attention, mlp, attention+mlp, all);
#: - Table A2: element and block granularity (row and column left out), its choices rerun on 3
#:   fresh seeds (its arms are all masked: no comparison of its own to seed in rounds);
#: - Figure 3: no condition-number evaluations (its plot, not its claim, needs them);
#: - Figure 4: the preset's one shared problem instance; rounds stop on equivalence within
#:   the claim's 5% margin too (the homogeneous panel's test);
#: - the implementations claims: every arm of the preset (Algorithm 1's open choices, 12
#:   masked arms, and dense) on each workload, keyed by role (the preset runs on two):
#:   llama-bytes at the suite's LM scale, 1 LR extension, confirmed in LM rounds; the
#:   heavy-tailed linear transformer at Figure 3's suite scale, its own LR grid (2
#:   extensions), confirmed in synthetic rounds of 10 seeds but up to 30, not 100: a round
#:   runs 13 configurations, each a task of some 5 s of scheduling on 2 cores, so 100 seeds
#:   would add about 10 minutes to the pair's 30. Rounds stop on equivalence within the
#:   claims' margins too.
LM_ROLE, HEAVY_ROLE = IMPLEMENTATION_ROLES
SUITE_SCALE: dict[str, dict[str, Any]] = {
    "paper-table1": {
        "workload": SUITE_LM,
        "search": {"base": ["adamw", "c-adamw", "laprop", "rmsprop"]},
        "protocol": {
            **SUITE_ADAM_PROTOCOL,
            "max_extensions": 2,
            "confirm_seeds": SUITE_LM_ROUNDS["round_seeds"],
            "sequential": SUITE_LM_ROUNDS,
        },
    },
    # Adam, C-Adam and Adam+Magma are the figure's curves (the grid adds C-Adam+Magma);
    # 1e-3 to 1e-1 reaches past the paper's 5e-2, and 3 seeds pair the windows per seed
    "lr-window": {
        "workload": SUITE_LM,
        "protocol": {"lr_start": 1e-2, "initial_points": 5, "max_extensions": 1},
    },
    "sensitivity-p-tau": {"workload": SUITE_LM, "search": {"tau": [1.0, 2.0, 4.0], "lr": 1e-3}},
    "components": {
        "workload": SUITE_LM,
        "protocol": {
            **SUITE_RMSPROP_PROTOCOL,
            "max_extensions": 1,
            "confirm_seeds": SUITE_LM_ROUNDS["round_seeds"],
            "sequential": SUITE_LM_ROUNDS,
        },
    },
    "granularity": {
        "workload": SUITE_LM,
        "search": {"granularity": ["element", "block"]},
        "protocol": {**SUITE_RMSPROP_PROTOCOL, "max_extensions": 1, "confirm_seeds": 3},
    },
    "heavy-tailed": {
        "workload": {"condition_number": False, "eval_interval": 250},
        "protocol": {
            "confirm_seeds": SUITE_SYNTHETIC_ROUNDS["round_seeds"],
            "sequential": SUITE_SYNTHETIC_ROUNDS,
        },
    },
    "quadratic": {
        "protocol": {
            "confirm_seeds": SUITE_SYNTHETIC_ROUNDS["round_seeds"],
            "sequential": {**SUITE_SYNTHETIC_ROUNDS, "margin": 0.05},
        },
    },
    LM_ROLE.label: {
        "workload": SUITE_LM,
        "protocol": {
            **SUITE_ADAM_PROTOCOL,
            "max_extensions": 1,
            "confirm_seeds": SUITE_LM_ROUNDS["round_seeds"],
            "sequential": {**SUITE_LM_ROUNDS, "margin": IMPLEMENTATION_MARGINS[LM_ROLE.name]},
        },
    },
    HEAVY_ROLE.label: {
        "workload": {"steps": 1000, "batch_size": 16, "eval_interval": 250},
        "protocol": {
            "lr_start": 1e-2,
            "max_extensions": 2,
            "confirm_seeds": SUITE_SYNTHETIC_ROUNDS["round_seeds"],
            "sequential": {
                **SUITE_SYNTHETIC_ROUNDS,
                "max_seeds": 30,
                "margin": IMPLEMENTATION_MARGINS[HEAVY_ROLE.name],
            },
        },
    },
}
#: ``--scale presets``: the roles whose preset's own scale is another workload's, with the
#: overrides the preset's description gives for theirs (the implementations preset's
#: heavy-tailed linear transformer: Figure 3's scale, its LR grid and synthetic rounds)
PRESET_ROLE_SCALE: dict[str, dict[str, Any]] = {
    HEAVY_ROLE.label: {
        "workload": {"steps": 1000, "batch_size": 16, "eval_interval": 100},
        "protocol": {
            "lr_start": 1e-2,
            "max_extensions": 3,
            "confirm_seeds": 10,
            "sequential": {"round_seeds": 10, "max_seeds": 100, "margin": 0.02},
        },
    },
}
SCALES = ("suite", "presets")
#: how often the progress thread reads the studies' status
POLL_SECONDS = 2.0


def json_object(text: str) -> dict[str, Any]:
    """``--overrides``: a JSON object, merged into every preset like the API's overrides."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--overrides",
        type=json_object,
        default={},
        help="JSON merged into every preset, e.g. '{\"seeds\": 1}' (a role's workload "
        "fields, such as Figure 4's hessian, still win)",
    )
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default="suite",
        help="suite: SUITE_SCALE's smaller studies, about an hour on 2 cores (default; the "
        "implementations claims' two studies about 27 minutes of it); presets: the presets' "
        "own CPU scale, about 4 hours and the implementations preset's some 3 more",
    )
    parser.add_argument(
        "--only", nargs="+", choices=CLAIM_IDS, metavar="CLAIM", help=f"of {CLAIM_IDS}"
    )
    parser.add_argument(
        "--workdir", type=Path, help="database and Tune checkpoints (default: a new temp dir)"
    )
    parser.add_argument("--database-url", help="default: a SQLite file claims.db in --workdir")
    parser.add_argument("--json", type=Path, help="also write the claims table here as JSON")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: judge the studies already in --workdir's database or "
        "--database-url with the current claims registry",
    )
    args = parser.parse_args(argv)
    if args.report_only and args.workdir is None and args.database_url is None:
        parser.error("--report-only needs --workdir or --database-url: the recorded studies")
    return args


def recorded_studies(sessions: sessionmaker[Session], only: list[str] | None) -> dict[int, Role]:
    """The studies a database already holds for the chosen claims' roles: id -> role."""
    chosen = [claim for claim in CLAIMS if only is None or claim.id in only]
    roles = list(dict.fromkeys(role for claim in chosen for role in claim.roles))
    with sessions() as session:
        studies = session.scalars(select(Study).order_by(Study.id)).all()
        return {study.id: role for study in studies for role in roles if role.matches(study.spec)}


def study_specs(
    only: list[str] | None, overrides: dict[str, Any], scale: str = "suite"
) -> dict[Role, StudySpec]:
    """Each role the chosen claims need, once: its preset with the ``scale``'s overrides
    (``SUITE_SCALE``'s for the role, else for its preset; ``presets``: none but
    ``PRESET_ROLE_SCALE``'s), then ``overrides``, then the role's workload fields (which
    must win, or the study would not fill the role)."""
    chosen = [claim for claim in CLAIMS if only is None or claim.id in only]
    roles = dict.fromkeys(role for claim in chosen for role in claim.roles)
    specs = {}
    for role in roles:
        scaled = PRESET_ROLE_SCALE.get(role.label, {})
        if scale == "suite":
            scaled = SUITE_SCALE.get(role.label) or SUITE_SCALE[role.preset]
        merged = merge_overrides(
            merge_overrides(scaled, overrides), {"workload": dict(role.workload)}
        )
        specs[role] = load_preset(role.preset, merged)
    return specs


def submit(sessions: sessionmaker[Session], specs: dict[Role, StudySpec]) -> dict[int, Role]:
    """Queue the studies as the API would (the server caps checked): study id -> role."""
    caps = get_settings().caps
    for spec in specs.values():
        check_caps(spec, caps)
    with transaction(sessions) as session:
        return {submissions.create_study(session, spec).id: role for role, spec in specs.items()}


def seconds(study: Study) -> float | None:
    if study.started_at is None or study.finished_at is None:
        return None
    return (study.finished_at - study.started_at).total_seconds()


def _clock(started: float) -> str:
    minutes, secs = divmod(int(time.perf_counter() - started), 60)
    return f"[{minutes:3d}:{secs:02d}]"


def report_progress(
    sessions: sessionmaker[Session],
    submitted: dict[int, Role],
    seen: dict[int, str],
    started: float,
) -> None:
    """Print a line for each study that started or finished since the last call (``seen``:
    the status last printed), so that an hour-long run can be followed."""
    with sessions() as session:
        studies = [session.get(Study, study_id) for study_id in submitted]
        counts = reads.trial_status_counts(session, list(submitted))
    for study in studies:
        if study is None or study.status == seen.get(study.id):
            continue
        label = f"{_clock(started)} study {study.id} {submitted[study.id].label}"
        if study.status in FINISHED_STUDY_STATUSES:
            trials = ", ".join(f"{n} {status}" for status, n in sorted(counts[study.id].items()))
            error = f", error: {study.error}" if study.error else ""
            print(f"{label}: {study.status} in {seconds(study) or 0:.0f} s ({trials}){error}")
        elif study.status == "running" and seen.get(study.id) == "queued":
            print(f"{label}: running (at most {study.runs} runs)")
        seen[study.id] = study.status


def watch(
    sessions: sessionmaker[Session],
    submitted: dict[int, Role],
    stop: threading.Event,
    started: float,
) -> None:
    """The progress thread: polls until ``stop``, then reports the last changes."""
    seen = dict.fromkeys(submitted, "queued")
    while not stop.wait(POLL_SECONDS):
        report_progress(sessions, submitted, seen, started)
    report_progress(sessions, submitted, seen, started)


def run_driver(url: str, storage: Path) -> None:
    """The real driver, in this process, until no study is queued; on a local Ray with
    every CPU of this machine unless this process already has a Ray."""
    # short trials snapshot Tune's experiment state often, and its warning about that,
    # several a second, would bury the progress lines
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.ERROR)
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": get_settings().trial_environment()},
        )
    driver = Driver(url=url, storage_path=storage, poll_seconds=0.5)
    try:
        driver.run(once=True)
    finally:
        driver.sessions.kw["bind"].dispose()
        if own_ray:
            ray.shutdown()


def format_claims(report: ClaimsReport, only: list[str] | None) -> list[str]:
    """The claims table: one row per claim and study, its numbers and warnings below it."""
    lines = [
        f"claims registry version {report.registry_version}",
        f"{'claim':10s} {'verdict':13s} {'study':42s} scale",
    ]
    for row in report.claims:
        if only is not None and row.id not in only:
            continue
        for i, study in enumerate(row.studies):
            fields = ", ".join(f"{k}={v}" for k, v in study.workload.items())
            where = f"{study.preset} ({fields})" if fields else study.preset
            found = f"#{study.study_id} {where}" if study.study_id is not None else where
            head = f"{row.reference:10s} {row.support:13s}" if i == 0 else " " * 24
            lines.append(f"{head} {found:42s} {study.scale or 'no complete study'}")
        lines += [f"{'':11s}{line}" for line in row.numbers]
        lines += [f"{'':11s}warning: {warning}" for warning in row.warnings]
    return lines


def study_times(
    sessions: sessionmaker[Session], submitted: dict[int, Role]
) -> list[dict[str, Any]]:
    """Each submitted study's role, status, trials and wall time (claim to finish)."""
    with sessions() as session:
        counts = reads.trial_status_counts(session, list(submitted))
        rows = []
        for study_id, role in submitted.items():
            study = session.get(Study, study_id)
            assert study is not None  # submitted by this run
            rows.append(
                {
                    "study_id": study_id,
                    "role": role.label,
                    "status": study.status,
                    "trials": sum(counts[study_id].values()),
                    "seconds": seconds(study),
                    "error": study.error,
                }
            )
    return rows


def format_studies(rows: list[dict[str, Any]], total: float) -> list[str]:
    lines = [f"{'study':>5s} {'role':42s} {'status':10s} {'trials':>6s} {'wall s':>8s}"]
    for row in rows:
        wall = f"{row['seconds']:8.1f}" if row["seconds"] is not None else f"{'-':>8s}"
        lines.append(
            f"{row['study_id']:5d} {row['role']:42s} {row['status']:10s} {row['trials']:6d} {wall}"
        )
    lines.append(f"total wall time: {total:.1f} s (Ray start, every study, the claims)")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    specs = study_specs(args.only, args.overrides, args.scale)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="magma-claims-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{workdir.resolve() / 'claims.db'}"
    if args.report_only:
        engine = make_engine(url, reads_only=True)
        sessions = session_factory(engine)
        submitted = recorded_studies(sessions, args.only)
        print(f"# claims of the {len(submitted)} studies recorded in {url}")
    else:
        writer = make_engine(url)
        migrate(writer)
        submitted = submit(session_factory(writer), specs)
        writer.dispose()
        # the progress thread and the report only read: they never queue behind the driver
        engine = make_engine(url, reads_only=True)
        sessions = session_factory(engine)
        print(
            f"# claims suite at {args.scale} scale: {len(submitted)} studies in {url}, "
            f"overrides {json.dumps(args.overrides)}"
        )
        stop = threading.Event()
        progress = threading.Thread(target=watch, args=(sessions, submitted, stop, started))
        progress.start()
        try:
            run_driver(url, workdir / "ray")
        finally:
            stop.set()
            progress.join()
    with sessions() as session:
        report = claims_report(session)
    times = study_times(sessions, submitted)
    engine.dispose()
    total = time.perf_counter() - started
    if args.report_only:
        # the one driver ran the studies one after another: their times add up to the run
        total = sum(row["seconds"] or 0.0 for row in times)
    print("\n".join(["", *format_claims(report, args.only), "", *format_studies(times, total)]))
    if args.json is not None:
        chosen = [row for row in report.claims if args.only is None or row.id in args.only]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "registry_version": report.registry_version,
                    "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "claims": [row.model_dump(mode="json") for row in chosen],
                    "studies": times,
                    "wall_seconds": total,
                    "recorded": args.report_only,
                    "scale": None if args.report_only else args.scale,
                    "overrides": None if args.report_only else args.overrides,
                    "database_url": url,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
