"""deploy/compose.yaml: valid against the compose-spec schema, and wired as docs/deploy.md says.

The project's machines have the docker client but no compose plugin and no engine, so the file
is checked against the Compose Specification's JSON schema (vendored by check-jsonschema) and
by the assertions below; where `docker compose` exists, `docker compose config` checks it too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SHELFMARK_SERVICES = {"migrate", "api", "worker", "beat", "sip2"}
DEFAULT_SERVICES = {"migrate", "api", "worker", "beat", "postgres", "redis"}


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    has_plugin = docker is not None and (
        subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    )
    if not has_plugin:
        pytest.skip(
            "no `docker compose` plugin on this machine: test_valid_against_the_compose_"
            "specification checks the file against the same specification instead"
        )
    # A copy beside an .env made from the example: the real deploy/.env may not exist.
    project = tmp_path / "deploy"
    project.mkdir()
    shutil.copy(DEPLOY / "compose.yaml", project / "compose.yaml")
    shutil.copy(DEPLOY / ".env.example", project / ".env")
    result = subprocess.run(
        [docker, "compose", "-f", str(project / "compose.yaml"),
         "--profile", "rabbitmq", "--profile", "sip2", "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_default_shape_and_the_optional_profiles(compose: dict[str, Any]) -> None:
    default = {name for name, s in services(compose).items() if not s.get("profiles")}
    assert default == DEFAULT_SERVICES
    assert services(compose)["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert services(compose)["sip2"]["profiles"] == ["sip2"]


def test_every_shelfmark_service_runs_the_one_image(compose: dict[str, Any]) -> None:
    images = {services(compose)[name]["image"] for name in SHELFMARK_SERVICES}
    assert len(images) == 1
    for name in SHELFMARK_SERVICES:
        build = services(compose)[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
        assert services(compose)[name]["init"] is True  # signals forwarded, zombies reaped


def test_roles_run_the_image_commands(compose: dict[str, Any], image_command: list[str]) -> None:
    commands = {name: services(compose)[name]["command"] for name in SHELFMARK_SERVICES}
    # The image's default command, less the embedded worker and beat (services of their own).
    assert commands["api"] == [*image_command[1:], "--no-worker"]
    assert commands["migrate"] == ["migrate"]
    assert commands["worker"] == ["worker", "--concurrency", "2"]
    assert commands["beat"] == ["beat"]
    assert commands["sip2"] == ["sip2"]


def test_everything_waits_for_the_one_shot_migration(compose: dict[str, Any]) -> None:
    migrate = services(compose)["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in SHELFMARK_SERVICES - {"migrate"}:
        depends_on = services(compose)[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name
        # RabbitMQ is waited for only when its profile is on.
        assert depends_on["rabbitmq"] == {"condition": "service_healthy", "required": False}


def test_what_is_waited_for_can_be_healthy(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services(compose), f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                healthcheck = services(compose)[dependency].get("healthcheck", {})
                assert healthcheck.get("test"), dependency
                assert not healthcheck.get("disable"), dependency


def test_long_running_services_have_health_checks_and_restart(compose: dict[str, Any]) -> None:
    for name in ("api", "worker", "sip2", "postgres", "redis", "rabbitmq"):
        service = services(compose)[name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
    api_check = " ".join(services(compose)["api"]["healthcheck"]["test"])
    assert "/readyz" in api_check
    assert "curl" not in api_check


def test_graceful_stop_periods(compose: dict[str, Any]) -> None:
    def seconds(value: str) -> int:
        match = re.fullmatch(r"(\d+)s", value)
        assert match, value
        return int(match.group(1))

    assert seconds(services(compose)["api"]["stop_grace_period"]) >= 30
    # Long enough for a running Celery task to finish on warm shutdown.
    assert seconds(services(compose)["worker"]["stop_grace_period"]) >= 60


def test_named_volumes_hold_the_data(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for service in services(compose).values():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert not source.startswith((".", "/")), f"bind mount {mount}: use a named volume"
            used.add(source)
    assert used == declared
    mounts = {name: services(compose)[name]["volumes"] for name in ("postgres", "redis")}
    assert mounts["postgres"] == ["pgdata:/var/lib/postgresql/data"]
    assert mounts["redis"] == ["redisdata:/data"]


def environment(service: dict[str, Any], image_env: dict[str, str]) -> dict[str, str]:
    """A service's environment as Compose builds it over the image's ENV: the settings
    .env.example sets (the env_file), then `environment`."""
    example = (DEPLOY / ".env.example").read_text()
    env = dict(image_env) | dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", example, re.MULTILINE))
    declared = service.get("environment", {})
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) for item in declared if "=" in item)
    return env | {name: str(value) for name, value in declared.items() if value is not None}


def volume_at(service: dict[str, Any], path: PurePosixPath) -> tuple[str, PurePosixPath]:
    """The named volume that holds `path` in a service's containers (that of the deepest mount
    above it), and where in that volume."""
    mounts: list[tuple[PurePosixPath, str | None]] = []
    for mount in service.get("volumes", []):
        if isinstance(mount, str):
            source, target, *options = mount.split(":")
            assert "ro" not in options, f"{mount} is read-only"
        else:
            source, target = mount.get("source"), mount["target"]
            assert mount.get("type", "volume") == "volume", f"{mount}: not a named volume"
            assert not mount.get("read_only"), f"{mount} is read-only"
        mounts.append((PurePosixPath(target), source))
    tmpfs = service.get("tmpfs", [])
    mounts += [
        (PurePosixPath(target), None) for target in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)
    ]
    above = [(target, source) for target, source in mounts if path.is_relative_to(target)]
    assert above, f"{path} would be on the read-only root file system"
    target, source = max(above, key=lambda mount: len(mount[0].parts))
    assert source, f"{path} is on a tmpfs of the container's own"
    return source, path.relative_to(target)


def test_api_and_workers_share_the_volume_of_uploads_and_reports(
    compose: dict[str, Any],
    image_command: list[str],
    runtime_env: dict[str, str],
    folders_shared_by_roles: Callable[[str], dict[str, PurePosixPath]],
    sharing_roles: tuple[str, ...],
) -> None:
    """An upload saved by the api is found by every worker (`--scale worker=N` included), and
    a report a worker writes is downloaded through the api: the folders the code uses resolve
    to the same place in one named volume."""
    places: dict[str, set[tuple[str, PurePosixPath]]] = {}
    roles = set()
    for name in SHELFMARK_SERVICES:
        service = services(compose)[name]
        role = service.get("command", image_command[1:])[0]
        if role not in sharing_roles:
            continue
        roles.add(role)
        home = environment(service, runtime_env)["SHELFMARK_HOME"]
        for folder, path in folders_shared_by_roles(home).items():
            volume, inside = volume_at(service, path)
            assert volume in compose["volumes"], f"{name}: {folder} is on {volume}, no named volume"
            places.setdefault(folder, set()).add((volume, inside))
    assert roles == set(sharing_roles)
    assert set(places) == set(folders_shared_by_roles("/"))
    for folder, found in places.items():
        assert len(found) == 1, f"{folder} is in different places: {found}"


def test_secrets_come_from_the_env_file(compose: dict[str, Any]) -> None:
    example = (DEPLOY / ".env.example").read_text()
    defined = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::?\?)", text))
    assert {"SECRET_KEY", "POSTGRES_PASSWORD"} <= required
    referenced = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert referenced <= defined, f"not in .env.example: {referenced - defined}"
    for name in SHELFMARK_SERVICES:
        assert services(compose)[name]["env_file"] == [{"path": ".env", "required": True}]
    # The real .env is never committed, and never sent to the Docker daemon.
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()
