"""Static checks of the deployment artefacts: Dockerfile, docker-compose.yml, .env.example.

Nothing is built or started. The compose file is validated against the vendored Compose
Specification schema (tests/data/compose-spec.json, see tests/data/README.md), every
container command is checked against the real command lines it calls (the Typer app of
``magma-bench`` and the ``ray`` CLI), and every setting that the compose file or the
package's code reads must be documented in .env.example.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

# Settings read by the package: these names, wherever the code spells one out as a string.
SETTING = re.compile(r"MAGMA_[A-Z0-9_]+|DATABASE_URL|RAY_ADDRESS")
# ${NAME}, ${NAME:-default}, ${NAME:?error}, $NAME in the compose file; "$$" is a literal "$".
INTERPOLATION = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
# Wrapper installed in the image: `magma-ray-join PROGRAM ARGS...` joins the Ray cluster and
# execs PROGRAM, so the program that matters is the next word.
JOIN_WRAPPER = "magma-ray-join"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def words(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def image_entrypoint() -> list[str]:
    """ENTRYPOINT of the final stage of the Dockerfile, in exec form."""
    entrypoints = [rest for keyword, rest in dockerfile_stages()[-1] if keyword == "ENTRYPOINT"]
    assert entrypoints, "Dockerfile: the final stage has no ENTRYPOINT"
    return json.loads(entrypoints[-1])


def builds_our_image(service: dict) -> bool:
    return "build" in service


def program_and_args(name: str, service: dict) -> tuple[str, list[str]]:
    """The program a service of our image runs, and the words after it."""
    entrypoint = words(service["entrypoint"]) if "entrypoint" in service else image_entrypoint()
    argv = entrypoint + words(service.get("command"))
    assert argv, f"service {name!r}: no entrypoint and no command"
    if argv[0] == JOIN_WRAPPER:
        assert len(argv) > 1, f"service {name!r}: {JOIN_WRAPPER} needs a program to run"
        argv = argv[1:]
    return argv[0], argv[1:]


@cache
def magma_bench_commands() -> dict[str, Any]:
    import typer

    from service.cli import app

    return dict(typer.main.get_command(app).commands)


@cache
def ray_commands() -> dict[str, Any]:
    from ray.scripts.scripts import cli

    return dict(cli.commands)


def option_names(command: Any) -> set[str]:
    """Option spellings of a click command (Typer vendors its own click: duck-typed)."""
    return {
        opt
        for param in command.params
        if param.param_type_name == "option"
        for opt in [*param.opts, *param.secondary_opts]
    }


def check_command_line(where: str, program: str, args: list[str], commands: dict[str, Any]) -> None:
    assert args, f"{where}: `{program}` with no subcommand"
    subcommand = args[0]
    assert subcommand in commands, (
        f"{where}: `{program} {' '.join(args)}`: {subcommand!r} is not a `{program}` command; "
        f"it has: {', '.join(sorted(commands))}"
    )
    known = option_names(commands[subcommand])
    for arg in args[1:]:
        if arg.startswith("--"):
            option = arg.split("=", 1)[0]
            assert option in known, (
                f"{where}: `{program} {subcommand}` has no option {option}; "
                f"it has: {', '.join(sorted(known))}"
            )


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(name: str, service: dict) -> list[tuple[str, str]]:
    """(source, target) of each mount; the short syntax is SOURCE:TARGET[:MODE]."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            assert len(parts) >= 2, f"service {name!r}: anonymous volume {volume!r}"
            found.append((parts[0], parts[1]))
        else:
            found.append((volume.get("source", ""), volume["target"]))
    return found


def mount_of(name: str, service: dict, path: str) -> tuple[str, str] | None:
    """The mount that holds ``path`` inside the container (the deepest one)."""
    holding = [
        (source, target)
        for source, target in mounts(name, service)
        if path == target or path.startswith(target.rstrip("/") + "/")
    ]
    return max(holding, key=lambda m: len(m[1])) if holding else None


def driver_and_ray_services() -> dict[str, dict]:
    chosen = {}
    for name, service in services().items():
        if not builds_our_image(service):
            continue
        program, args = program_and_args(name, service)
        if program == "ray" or (program == "magma-bench" and args[:1] == ["driver"]):
            chosen[name] = service
    return chosen


def package_dirs() -> list[Path]:
    """Top-level packages of the distribution, from pyproject.toml."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        {ROOT / pattern for pattern in include if "*" not in pattern and "." not in pattern}
    )


def settings_read_by_code() -> dict[str, set[str]]:
    """Setting names the package sources read -> the files that read them.

    Two sources: any string constant that is a setting name (``os.environ.get("X")``,
    ``Field(validation_alias="X")``, ``typer.Option(envvar="X")``, ...), and the fields of
    pydantic-settings classes, whose names are derived (``env_prefix`` + field name)."""
    found: dict[str, set[str]] = {}
    for package in package_dirs():
        for path in sorted(package.rglob("*.py")):
            source = path.read_text()
            relative = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(source, filename=str(path))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and SETTING.fullmatch(node.value)
                ):
                    found.setdefault(node.value, set()).add(relative)
            if "BaseSettings" in source:
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                for name in pydantic_settings_names(module):
                    if SETTING.fullmatch(name):
                        found.setdefault(name, set()).add(relative)
    return found


SCALARS = (str, int, float, bool, Path)


def pydantic_settings_names(module_name: str) -> set[str]:
    """Environment names of the scalar fields of the pydantic-settings classes in a module
    (nested models and dataclasses, read as JSON if at all, are not settings of their own)."""
    from pydantic import AliasChoices, SecretStr
    from pydantic_settings import BaseSettings

    module = importlib.import_module(module_name)
    names: set[str] = set()
    for obj in vars(module).values():
        if not (
            isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings
        ):
            continue
        if obj.__module__ != module_name:
            continue
        prefix = obj.model_config.get("env_prefix", "")
        for field_name, field in obj.model_fields.items():
            types = [t for t in getattr(field.annotation, "__args__", (field.annotation,))]
            types = [t for t in types if t is not type(None)]
            if not all(isinstance(t, type) and issubclass(t, (*SCALARS, SecretStr)) for t in types):
                continue
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names |= {c for c in alias.choices if isinstance(c, str)}
            elif isinstance(alias, str):
                names.add(alias)
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def documented_lines() -> list[str]:
    """The NAME of each NAME=... line of .env.example, commented-out ones included."""
    pattern = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=")
    return [
        m.group(1) for line in ENV_EXAMPLE.read_text().splitlines() if (m := pattern.match(line))
    ]


def documented_settings() -> set[str]:
    return set(documented_lines())


# --------------------------------------------------------------------------------------
# docker-compose.yml against the Compose Specification
# --------------------------------------------------------------------------------------


@cache
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    assert "draft-07" in schema["$schema"], "the vendored schema is no longer Draft 7"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(document: dict) -> list[str]:
    errors = sorted(validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{error.json_path}: {error.message}" for error in errors]


def test_compose_file_follows_the_compose_specification() -> None:
    errors = schema_errors(compose())
    assert not errors, "docker-compose.yml breaks the Compose Specification:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "breakage",
    ["unknown service key", "bad depends_on condition", "unknown top-level key"],
)
def test_the_schema_catches_broken_compose_files(breakage: str) -> None:
    broken = copy.deepcopy(compose())
    service = broken["services"]["api"]
    if breakage == "unknown service key":
        service["restart_policy"] = "always"
    elif breakage == "bad depends_on condition":
        service["depends_on"] = {"postgres": {"condition": "service_ready"}}
    else:
        broken["service"] = {}
    assert schema_errors(broken), f"the schema accepted a compose file with a fault: {breakage}"


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------


def test_each_service_runs_a_real_command() -> None:
    problems = []
    for name, service in services().items():
        if not builds_our_image(service):
            assert "image" in service, f"service {name!r}: neither build nor image"
            continue
        program, args = program_and_args(name, service)
        where = f"service {name!r}"
        try:
            if program == "magma-bench":
                check_command_line(where, program, args, magma_bench_commands())
            elif program == "ray":
                check_command_line(where, program, args, ray_commands())
            else:
                problems.append(f"{where}: runs {program!r}, neither magma-bench nor ray")
        except AssertionError as error:
            problems.append(str(error).split("\nassert")[0])
    assert not problems, "\n".join(problems)


def test_healthchecks_call_real_commands() -> None:
    problems = []
    for name, service in services().items():
        test = (service.get("healthcheck") or {}).get("test")
        if not isinstance(test, list) or test[:1] != ["CMD"] or len(test) < 2:
            continue
        program, args = test[1], test[2:]
        where = f"service {name!r} healthcheck"
        try:
            if program == "ray":
                check_command_line(where, program, args, ray_commands())
            elif program == "magma-bench":
                check_command_line(where, program, args, magma_bench_commands())
        except AssertionError as error:
            problems.append(str(error).split("\nassert")[0])
    assert not problems, "\n".join(problems)


def test_api_serves_on_all_interfaces_and_is_health_checked_on_its_port() -> None:
    api = services()["api"]
    program, args = program_and_args("api", api)
    assert (program, args[:1]) == ("magma-bench", ["serve"]), f"api runs {program} {args}"
    assert "--host" in args and args[args.index("--host") + 1] == "0.0.0.0", (
        f"api must run `serve --host 0.0.0.0` to be reachable from other containers: {args}"
    )
    port = args[args.index("--port") + 1] if "--port" in args else "8000"
    check = " ".join(words(api["healthcheck"]["test"]))
    assert f":{port}/api/v1/health" in check, f"api healthcheck does not call port {port}"
    assert any(str(p).endswith(f":{port}") for p in api["ports"]), "api port is not published"


def test_dependencies_exist_are_health_checked_and_need_no_inactive_profile() -> None:
    problems = []
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, spec in depends.items():
            if dep not in all_services:
                problems.append(f"service {name!r} depends on undefined service {dep!r}")
                continue
            target = all_services[dep]
            if spec.get("condition") == "service_healthy" and "healthcheck" not in target:
                problems.append(f"service {name!r} waits for {dep!r} healthy: no healthcheck")
            if target.get("profiles") and not set(target["profiles"]) >= set(
                service.get("profiles") or ["<default>"]
            ):
                problems.append(
                    f"service {name!r} depends on {dep!r}, which only runs under profiles "
                    f"{target['profiles']}"
                )
    assert not problems, "\n".join(problems)


def test_worker_profiles() -> None:
    all_services = services()
    cpu, gpu = all_services["ray-worker-cpu"], all_services["ray-worker"]
    assert cpu.get("profiles") == ["cpu"], "ray-worker-cpu must run under the cpu profile"
    assert gpu.get("profiles") == ["gpu"], "ray-worker must run under the gpu profile"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d["capabilities"] for d in devices), (
        "ray-worker reserves no NVIDIA GPU"
    )
    for name in ("ray-worker", "ray-worker-cpu"):
        program, args = program_and_args(name, all_services[name])
        assert program == "ray" and args[0] == "start", f"{name} does not run `ray start`"
        assert any(a.startswith("--address=") for a in args), f"{name}: no --address"
        assert "--block" in args, f"{name}: `ray start` without --block exits at once"
    program, args = program_and_args("ray-head", all_services["ray-head"])
    assert (program, args[:2]) == ("ray", ["start", "--head"]), "ray-head runs no Ray head"
    assert "--block" in args, "ray-head: `ray start` without --block exits at once"


# --------------------------------------------------------------------------------------
# shared storage and Ray authentication
# --------------------------------------------------------------------------------------


def test_driver_and_ray_nodes_share_storage_at_the_same_path() -> None:
    chosen = driver_and_ray_services()
    assert any(program_and_args(n, s)[0] == "magma-bench" for n, s in chosen.items()), (
        "no driver service"
    )
    assert sum(program_and_args(n, s)[0] == "ray" for n, s in chosen.items()) >= 2, (
        "expected a Ray head and Ray workers"
    )
    named_volumes = set(compose().get("volumes") or {})
    for setting in ("MAGMA_STORAGE", "MAGMA_CACHE_DIR"):
        seen: dict[tuple[str, str, str | None], list[str]] = {}
        for name, service in chosen.items():
            path = environment(service).get(setting)
            assert path, f"service {name!r} does not set {setting}"
            assert path.startswith("/"), f"service {name!r}: {setting}={path} is not absolute"
            mount = mount_of(name, service, path)
            assert mount, f"service {name!r}: {setting}={path} is on no volume"
            assert mount[0] in named_volumes, (
                f"service {name!r}: {setting}={path} is on {mount[0]!r}, not a named volume"
            )
            seen.setdefault((path, *mount), []).append(name)
        assert len(seen) == 1, (
            f"{setting} must be the same path on the same volume for the driver and every "
            f"Ray node: {seen}"
        )


def test_driver_and_ray_nodes_share_ray_authentication() -> None:
    chosen = driver_and_ray_services()
    for variable in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        values = {name: environment(service).get(variable) for name, service in chosen.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), (
            f"{variable} differs between the driver and the Ray nodes: {values}"
        )


# --------------------------------------------------------------------------------------
# .env.example
# --------------------------------------------------------------------------------------


def test_env_example_documents_every_compose_variable() -> None:
    text = COMPOSE.read_text()
    referenced = {m.group(1) or m.group(2) for m in INTERPOLATION.finditer(text)}
    for service in services().values():
        referenced |= set(environment(service))
    missing = sorted(referenced - documented_settings())
    assert not missing, f".env.example does not document: {', '.join(missing)}"


def test_env_example_documents_every_setting_the_code_reads() -> None:
    read = settings_read_by_code()
    assert "DATABASE_URL" in read, "the scan of the package sources found no settings at all"
    missing = {name: files for name, files in read.items() if name not in documented_settings()}
    assert not missing, ".env.example does not document: " + "; ".join(
        f"{name} (read in {', '.join(sorted(files))})" for name, files in sorted(missing.items())
    )


def test_env_example_documents_each_setting_once_and_none_that_nothing_reads() -> None:
    lines = documented_lines()
    twice = sorted({name for name in lines if lines.count(name) > 1})
    assert not twice, f".env.example documents these more than once: {', '.join(twice)}"
    text = COMPOSE.read_text()
    used = set(settings_read_by_code()) | {
        m.group(1) or m.group(2) for m in INTERPOLATION.finditer(text)
    }
    for service in services().values():
        used |= set(environment(service))
    stale = sorted(n for n in documented_settings() if SETTING.fullmatch(n) and n not in used)
    assert not stale, f".env.example documents settings that nothing reads: {', '.join(stale)}"


def test_env_example_has_no_secret_values() -> None:
    secrets = {"POSTGRES_PASSWORD", "MAGMA_API_KEY", "RAY_AUTH_TOKEN"}
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() in secrets:
            assert not value.strip(), f".env.example ships a value for the secret {name}"


# --------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_a_non_root_runtime() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "Dockerfile is not multi-stage"
    builder_names = [rest.split()[-1] for rest in (s[0][1] for s in stages[:-1])]
    final = stages[-1]
    copies_from = [rest for keyword, rest in final if keyword == "COPY" and "--from=" in rest]
    assert any(any(f"--from={name}" in rest for name in builder_names) for rest in copies_from), (
        "the final stage copies nothing from an earlier stage"
    )
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"the final stage runs as {users[-1]}"
    assert image_entrypoint() == ["magma-bench"], 'ENTRYPOINT must be ["magma-bench"]'


def test_dockerfile_selects_the_torch_build() -> None:
    args = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    assert args.get("TORCH_VARIANT") == "cpu", "ARG TORCH_VARIANT must default to cpu"
    assert args.get("TORCH_SPEC", "").startswith("torch"), "ARG TORCH_SPEC missing"
    text = DOCKERFILE.read_text()
    assert "download.pytorch.org/whl/cpu" in text, "no CPU torch index"
    assert re.search(r"download\.pytorch\.org/whl/(cu\d+|\$\{?TORCH_CUDA)", text), (
        "no CUDA torch index"
    )
    build = services()["api"]["build"]
    assert {"TORCH_VARIANT", "TORCH_SPEC"} <= set(build.get("args") or {}), (
        "docker-compose.yml does not pass TORCH_VARIANT and TORCH_SPEC to the build"
    )


def test_dockerfile_base_image_defaults_to_the_public_python_image() -> None:
    """BASE_IMAGE (a local base where no registry is reached) defaults to the public image,
    in the Dockerfile and in the compose file, and every stage starts from it, so that the
    venv the runtime copies finds its interpreter."""
    args = dict(
        rest.partition("=")[::2]
        for keyword, rest in dockerfile_instructions()[
            : [k for k, _ in dockerfile_instructions()].index("FROM")
        ]
        if keyword == "ARG"
    )
    default = args["BASE_IMAGE"].replace("${PYTHON_VERSION}", args["PYTHON_VERSION"])
    assert default == "python:3.11-slim-bookworm"
    assert [stage[0][1].split()[0] for stage in dockerfile_stages()] == ["${BASE_IMAGE}"] * 2
    build_args = services()["api"]["build"]["args"]
    assert build_args["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim-bookworm}"
    assert build_args["PIP_NO_INDEX"] == "${PIP_NO_INDEX:-0}"  # the indexes, by default


def test_every_pip_step_reads_the_wheelhouse() -> None:
    """An offline build (PIP_NO_INDEX=1) fails at the first pip step without the wheelhouse
    mounted, so each one mounts it; it stays a mount, never a layer."""
    pip_steps = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"
                 and "pip install" in rest]  # fmt: skip
    assert len(pip_steps) == 4
    for step in pip_steps:
        assert "--mount=type=bind,source=wheelhouse,target=/wheelhouse" in step, step
    assert (ROOT / "wheelhouse" / "README.md").is_file()
    assert not any(
        keyword in ("COPY", "ADD") and "wheelhouse" in rest
        for keyword, rest in dockerfile_instructions()
    )


def test_dockerfile_installs_the_wrappers_that_compose_runs() -> None:
    used = {
        words(service.get("entrypoint"))[0]
        for service in services().values()
        if builds_our_image(service) and service.get("entrypoint")
    }
    copied = {
        Path(rest.split()[-1]).name
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY"
    }
    # magma-bench and ray are console scripts of the installed package and its dependencies.
    missing = sorted(used - {"magma-bench", "ray"} - copied)
    assert not missing, f"docker-compose.yml runs {missing}, which the Dockerfile never installs"
    for name in used - {"magma-bench", "ray"}:
        script = ROOT / "docker" / name
        assert script.is_file(), f"docker/{name} is missing"


def test_dockerignore_keeps_secrets_and_environments_out() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for entry in (".env", ".venv", ".git"):
        assert entry in ignored, f".dockerignore does not exclude {entry}"


def test_runtime_files_are_package_data() -> None:
    """The image installs the package from a wheel, not in editable mode: every non-Python
    file inside a package (presets, migrations, model configs, the C4 sample, ...) must be
    declared package data to be in it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data = setuptools.get("package-data", {})
    missing = []
    for package in package_dirs():
        declared = package_data.get(package.name, []) + package_data.get("*", [])
        for path in sorted(package.rglob("*")):
            if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            inside = path.relative_to(package)
            if not any(inside.match(pattern) for pattern in declared):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, (
        "not in [tool.setuptools.package-data] of pyproject.toml, so missing from the installed "
        "package (and the Docker image): " + ", ".join(missing)
    )


@pytest.mark.parametrize("has_tomllib", [True, False], ids=["python>=3.11", "python3.10"])
def test_image_requirements_are_the_library_and_service_dependencies(has_tomllib: bool) -> None:
    """docker/requirements.py (run by the Dockerfile and ``make wheelhouse``) prints the
    library's dependencies and the [service] extra, also where tomllib is missing (3.10)."""
    hide = "" if has_tomllib else "import sys; sys.modules['tomllib'] = None; "
    script = ROOT / "docker" / "requirements.py"
    run = f"{hide}import runpy, sys; sys.argv = ['x', {str(ROOT / 'pyproject.toml')!r}]; "
    run += f"runpy.run_path({str(script)!r}, run_name='__main__')"
    printed = subprocess.run(
        [sys.executable, "-c", run], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["service"]
    assert printed[:-1] == expected and printed[-1] == ""
    assert any(req.startswith("torch") for req in printed)
