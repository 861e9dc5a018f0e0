"""The docker-compose stack for real: the project image built from the real Dockerfile, the
real docker-compose.yml brought up with the cpu profile on a real Docker daemon, and a study
run through it over HTTP (``make test-docker``; ``.ci/run`` runs it after ``make test``).

No registry is reached: ``docker/local/base-images.sh`` makes the base images from Debian's
packages (debootstrap), ``BASE_IMAGE`` replaces python:3.11-slim-bookworm, pip installs from
``./wheelhouse`` alone (``PIP_NO_INDEX=1``, ``make wheelhouse``), and the override file
``tests/docker-compose.test.yml`` names the local PostgreSQL image in place of postgres:16.
Chromium is left out of the image (``WITH_CHROMIUM=0``): it would come from Debian's mirror
inside the build, and no figure export is tested here. Everything the test makes (images,
containers, volumes, networks, build cache) is removed at the end.

Timings and image sizes go to ``var/docker-test.json`` and are printed.
"""

from __future__ import annotations

import json
import math
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.db_fixtures import wait_for
from tests.service_fixtures import free_port

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = ROOT / "tests" / "docker-compose.test.yml"
REPORT = ROOT / "var" / "docker-test.json"
#: the services the cpu profile runs, and those with a healthcheck
SERVICES = {"postgres", "api", "driver", "ray-head", "ray-worker-cpu"}
HEALTH_CHECKED = {"postgres", "api", "ray-head"}
#: the label every build of the Dockerfile carries
IMAGE_LABEL = "org.opencontainers.image.title=magma-bench"
#: the quadratic preset, small: 2 arms x 3 LRs (+ an extension while unbracketed) x 2 seeds
#: (a bracket study's fewest), then each arm's choice on 1 fresh seed; 4000 steps (about
#: 10 s a run), checkpointed every 200, so that the driver's restart finds runs in flight
STUDY = {
    "preset": "quadratic",
    "overrides": {
        "seeds": 2,
        "workload": {"steps": 4000, "eval_interval": 200},
        "protocol": {"max_extensions": 1, "confirm_seeds": 1},
    },
}

pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600)]


@dataclass
class Stack:
    """One compose project of the real file plus the override, on its own env file."""

    project: str
    env_file: Path
    env: dict[str, str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.env['MAGMA_PUBLISH']}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['MAGMA_API_KEY']}"}

    def command(self, *args: str) -> list[str]:
        """``docker compose ARGS`` on this project, its env file and both compose files."""
        return ["docker", "compose", "--project-name", self.project,
                "--env-file", str(self.env_file), "--file", str(ROOT / "docker-compose.yml"),
                "--file", str(OVERRIDE), *args]  # fmt: skip

    def compose(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def states(self) -> dict[str, dict[str, Any]]:
        """Each running service's container state (``docker compose ps``)."""
        out = self.compose("ps", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {row["Service"]: row for row in rows}

    def healthy(self) -> bool:
        states = self.states()
        return set(states) >= SERVICES and all(
            states[name]["State"] == "running"
            and (name not in HEALTH_CHECKED or states[name]["Health"] == "healthy")
            for name in SERVICES
        )

    def up(self) -> float:
        """``up -d``, then the seconds until every service runs and every check passes."""
        start = time.monotonic()
        self.compose("up", "--detach", "--no-build")
        wait_for(self.healthy, timeout=300, interval=2, what="every service healthy")
        return round(time.monotonic() - start, 1)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.headers, timeout=30, **kwargs)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40").stdout[-6000:]


def docker(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def images(filter_: str) -> set[str]:
    """The ids of every image, tagged or not, that ``filter_`` selects."""
    return set(docker("images", "--all", "--quiet", "--no-trunc", "--filter", filter_).split())


def image_megabytes(image: str) -> float:
    return round(int(docker("image", "inspect", "--format", "{{.Size}}", image)) / 1e6, 1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local base images, the project image built by ``compose build``, the stack up;
    afterwards everything removed, whatever happened."""
    docker("info", "--format", "{{.ServerVersion}}")  # a daemon answers (make test-docker)
    existing = images(f"label={IMAGE_LABEL}")
    prefix = f"magma-test-{secrets.token_hex(4)}"
    env = {
        "COMPOSE_PROFILES": "cpu",
        "MAGMA_IMAGE": f"{prefix}-magma:test",
        "BASE_IMAGE": f"{prefix}-python:bookworm",
        "MAGMA_TEST_POSTGRES_IMAGE": f"{prefix}-postgres:bookworm",
        "PIP_NO_INDEX": "1",
        "WITH_CHROMIUM": "0",
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "MAGMA_API_KEY": secrets.token_hex(16),
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "MAGMA_PUBLISH": f"127.0.0.1:{free_port()}",
        "MAGMA_DRIVER_STALE_SECONDS": "10",
    }
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    stack = Stack(prefix, env_file, env)
    try:
        start = time.monotonic()
        subprocess.run(["bash", str(ROOT / "docker/local/base-images.sh"), prefix], check=True)
        stack.report["base_images_s"] = round(time.monotonic() - start, 1)
        start = time.monotonic()
        stack.compose("build", timeout=2400)
        stack.report["build_s"] = round(time.monotonic() - start, 1)
        stack.report["image_mb"] = {
            name: image_megabytes(env[key])
            for name, key in (("magma", "MAGMA_IMAGE"), ("base", "BASE_IMAGE"),
                              ("postgres", "MAGMA_TEST_POSTGRES_IMAGE"))
        }  # fmt: skip
        stack.report["up_to_healthy_s"] = stack.up()
        yield stack
    finally:
        subprocess.run(
            stack.command("down", "--volumes", "--rmi", "all", "--remove-orphans",
                          "--timeout", "20"),
            cwd=ROOT, check=False, capture_output=True,
        )  # fmt: skip
        for image in (env["BASE_IMAGE"], env["MAGMA_TEST_POSTGRES_IMAGE"], env["MAGMA_IMAGE"]):
            subprocess.run(["docker", "rmi", "--force", image], check=False, capture_output=True)
        # compose builds the image once per service that names it: the earlier builds are
        # left untagged, with the Dockerfile's label
        made = images(f"label={IMAGE_LABEL}") - existing
        if made:
            subprocess.run(["docker", "rmi", "--force", *made], check=False, capture_output=True)
        subprocess.run(["docker", "builder", "prune", "--all", "--force"], check=False,
                       capture_output=True)  # fmt: skip
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(stack.report, indent=2))
        print(f"\ndocker test report ({REPORT}): {json.dumps(stack.report)}")


def test_requests_without_the_key_get_401(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/api/v1/studies", timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.get(f"{stack.url}/api/v1/studies", headers=wrong, timeout=30).status_code == 401
    assert httpx.post(f"{stack.url}/api/v1/studies", json=STUDY, timeout=30).status_code == 401
    assert httpx.get(f"{stack.url}/api/v1/health", timeout=30).status_code == 200  # public
    assert stack.get("/api/v1/studies").status_code == 200


def worker_node_id(stack: Stack) -> str:
    """The Ray node id of the ray-worker-cpu container, asked of the raylet inside it."""
    script = "import ray; ray.init(); print(ray.get_runtime_context().get_node_id())"
    out = stack.compose("exec", "-T", "ray-worker-cpu", "python", "-c", script).stdout
    return out.strip().splitlines()[-1]


def trials(stack: Stack, study_id: int) -> list[dict[str, Any]]:
    response = stack.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 500})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_a_study_completes_on_the_cpu_worker_through_a_driver_restart(stack: Stack) -> None:
    response = httpx.post(f"{stack.url}/api/v1/studies", json=STUDY, headers=stack.headers,
                          timeout=30)  # fmt: skip
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    stack.report["study_id"] = study_id

    steps = STUDY["overrides"]["workload"]["steps"]

    def interruptible() -> bool:
        """A run in flight past its first checkpoint and short of a quarter of its steps,
        once some run has completed."""
        runs = trials(stack, study_id)
        early = [t for t in runs if t["status"] == "running" and t["last_step"]]
        early = [t for t in early if t["last_step"] <= steps // 4]
        return bool(early) and any(t["status"] == "complete" for t in runs)

    # Stop the driver while a run is early in flight: the runs SQL still calls running once
    # it is down are the interrupted ones, which the next driver must resume. (A run can
    # finish in the seconds the stop takes; seen once in CI. Then the next run is tried.)
    in_flight: list[int] = []
    for stops in range(1, 4):
        wait_for(interruptible, timeout=300, interval=0.5, what="a run to interrupt")
        stack.compose("stop", "driver")
        in_flight = [t["id"] for t in trials(stack, study_id) if t["status"] == "running"]
        stack.compose("start", "driver")
        stack.report.update(driver_stops=stops, interrupted_runs=len(in_flight))
        if in_flight:
            break
    assert in_flight, "3 times, every run in flight finished before the driver stopped"
    assert stack.get(f"/api/v1/studies/{study_id}").json()["status"] == "running"

    def finished() -> dict[str, Any] | None:
        study = stack.get(f"/api/v1/studies/{study_id}").json()
        return study if study["status"] in ("complete", "failed", "cancelled") else None

    study = wait_for(finished, timeout=900, interval=2, what=f"study {study_id} finished")
    assert study["status"] == "complete", stack.logs()
    runs = trials(stack, study_id)
    # None lost: every run has its result (a diverged run is one); none repeated: one trial
    # per configuration and seed, those in flight at the restart included.
    assert {t["status"] for t in runs} <= {"complete", "diverged"}, runs
    resumed = {t["id"]: t["attempts"] for t in runs if t["id"] in in_flight}
    assert resumed and all(attempts >= 2 for attempts in resumed.values()), resumed
    keys = [(t["configuration"], t["seed_index"]) for t in runs]
    assert len(keys) == len(set(keys)), keys
    assert len(runs) >= 2 * 3 * 2 + 2  # both arms' 3 LRs on 2 seeds, each choice on 1 more
    nodes = {t["node"] for t in runs}
    assert nodes == {worker_node_id(stack)}, nodes
    stack.report["study_trials"] = len(runs)

    best = stack.get(f"/api/v1/studies/{study_id}/best")
    assert best.status_code == 200, best.text
    # the preset's objective is log_loss_auc, a mean log loss: any finite number, the mean
    # of the best configuration's seeds
    found = best.json()
    assert math.isfinite(found["objective"]), best.text
    assert found["objective"] == pytest.approx(statistics.fmean(found["objectives"])), best.text
    page = stack.get(f"/studies/{study_id}/dashboard/overview")
    assert page.status_code == 200 and "quadratic" in page.text, page.text[:500]


def test_down_and_up_keeps_the_study_in_postgresql(stack: Stack) -> None:
    study_id = stack.report["study_id"]
    before = trials(stack, study_id)
    stack.compose("down", "--timeout", "20")  # the volumes stay
    assert stack.states() == {}
    stack.report["up_again_to_healthy_s"] = stack.up()
    after = stack.get(f"/api/v1/studies/{study_id}")
    assert after.status_code == 200 and after.json()["status"] == "complete"
    assert trials(stack, study_id) == before
