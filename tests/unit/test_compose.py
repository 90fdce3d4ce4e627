"""docker-compose.yml checked without a Docker engine: valid under the Compose Specification's JSON
schema (vendored, tests/fixtures/compose-spec/), every image pinned, every Dockerfile, mounted file,
command and option it names exists, the configs it mounts are the files the tests run, and the
pieces agree with each other (ports, users, tokens, plugin version, provisioning paths).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.main
import yaml

from spanmeter.ingest import migrate
from spanmeter.ingest.cli import app as cli_app
from spanmeter.ingest.cli import check_bind
from spanmeter.ingest.config import Settings
from spanmeter.ingest.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SCHEMA_FILE = REPO / "tests" / "fixtures" / "compose-spec" / "compose_spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
ENV_EXAMPLE = REPO / ".env.example"
# ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a literal dollar.
_INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", REPO / "grafana" / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env(service: str) -> dict[str, str]:
    value = SERVICES[service].get("environment", {})
    assert isinstance(value, dict), f"{service}: environment as a mapping"
    return {k: str(v) for k, v in value.items()}


def bind_mounts(service: str) -> dict[str, str]:
    """Host path (relative to the repository) -> container path, for every bind mount."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[source] = target
    return mounts


def test_valid_under_the_compose_specification_schema():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256  # the vendored file, unchanged
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft201909Validator)
    validator.check_schema(schema)
    errors = sorted(validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # The schema catches what it should: an unknown key is refused.
    broken = {**COMPOSE, "services": {**SERVICES, "ingest": {**SERVICES["ingest"], "helthcheck": {}}}}
    assert list(validator(schema).iter_errors(broken))


def test_the_stack_has_its_services():
    assert set(SERVICES) == {"clickhouse", "migrate", "ingest", "collector", "grafana", "demo"}
    assert SERVICES["demo"]["profiles"] == ["demo"]  # optional traffic, off by default


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and tag != "latest" and re.fullmatch(r"v?\d+(\.\d+){1,3}([-.][\w.-]+)?", tag) is not None


def dockerfiles() -> dict[str, Path]:
    out = {}
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            out[name] = REPO / build.get("context", ".") / build["dockerfile"]
    return out


def test_every_image_is_pinned():
    for name, service in SERVICES.items():
        if "build" in service:
            assert service["image"].endswith(":local"), name  # built here, never pulled
        else:
            assert _pinned(service["image"]), f"{name}: {service['image']}"
    for base in _bases(REPO / "ingest" / "Dockerfile"):
        assert _pinned(base.split("@")[0]), f"ingest/Dockerfile: FROM {base}"


def _bases(dockerfile: Path) -> list[str]:
    return [m.group(1) for line in dockerfile.read_text().splitlines() if (m := re.match(r"FROM\s+(\S+)", line))]


def test_collector_base_images_are_pinned():
    for base in _bases(REPO / "collector" / "Dockerfile"):
        name, _, digest = base.partition("@")
        assert _pinned(name) or digest.startswith("sha256:"), f"collector/Dockerfile: FROM {base}"


def test_dockerfiles_and_what_they_copy_exist():
    assert set(dockerfiles()) == {"migrate", "ingest", "collector", "demo"}
    for name, dockerfile in dockerfiles().items():
        assert dockerfile.is_file(), f"{name}: {dockerfile}"
        context = REPO / SERVICES[name]["build"].get("context", ".")
        for line in dockerfile.read_text().splitlines():
            m = re.match(r"COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", line)
            if m:
                for source in m.group(1).split():
                    assert (context / source).exists(), f"{dockerfile}: COPY {source}"


def test_mounted_files_exist():
    for name in SERVICES:
        for source in bind_mounts(name):
            assert (REPO / source).exists(), f"{name}: {source}"
    named = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", []) if not v.startswith((".", "/"))}
    assert named == set(COMPOSE["volumes"])


def test_the_collector_runs_the_config_the_tests_run():
    collector_tests = importlib.import_module("tests.integration.test_collector")
    mounts = bind_mounts("collector")
    (config_target,) = [t for s, t in mounts.items() if (REPO / s).resolve() == collector_tests.CONFIG.resolve()]
    assert SERVICES["collector"]["command"] == [f"--config={config_target}"]
    # The Dockerfile's own default points at the same place.
    assert f'"--config={config_target}"' in (REPO / "collector" / "Dockerfile").read_text()
    # Every variable the compose file sets is one the config (or the image) reads.
    config = (REPO / "collector" / "config.yaml").read_text()
    read = set(re.findall(r"\$\{env:(\w+)", config))
    for key in env("collector"):
        assert key in read, f"collector: {key} is not read by collector/config.yaml"
    assert {"SPANMETER_INGEST_ENDPOINT", "SPANMETER_INGEST_TOKEN", "SPANMETER_CLICKHOUSE_ENDPOINT"} <= set(env("collector"))


def test_the_ingest_runs_the_tiers_file_the_tests_run():
    from spanmeter.ingest.caps import TierBook

    (source, target), = bind_mounts("ingest").items()
    assert env("ingest")["SPANMETER_TIERS_FILE"] == target
    assert (REPO / source).resolve() == (REPO / "ingest" / "tiers.example.yaml").resolve()
    assert "tiers.example.yaml" in (REPO / "tests" / "unit" / "test_caps_windows.py").read_text()
    TierBook.load(REPO / source)  # loads as the service would


def _commands() -> dict[str, list[str]]:
    return {name: s["command"] for name, s in SERVICES.items() if name != "collector" and "command" in s}


def test_commands_and_their_options_exist():
    group = typer.main.get_command(cli_app)
    for name, command in _commands().items():
        assert command[0] == "spanmeter", name
        sub = group.commands.get(command[1])
        assert sub is not None, f"{name}: no `spanmeter {command[1]}`"
        options = {opt for param in sub.params for opt in param.opts}
        for arg in command[2:]:
            if arg.startswith("--"):
                assert arg in options, f"{name}: `spanmeter {command[1]}` has no {arg}"
    # The image's default command is the ingest service's.
    dockerfile = (REPO / "ingest" / "Dockerfile").read_text()
    assert f"CMD {json.dumps(SERVICES['ingest']['command'])}" in dockerfile


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_ingest_serves_with_tokens_on_every_interface():
    command = SERVICES["ingest"]["command"]
    assert command[:2] == ["spanmeter", "serve"]
    host, port = _option(command, "--host"), _option(command, "--port")
    assert host == "0.0.0.0"
    e = env("ingest")
    for token in ("SPANMETER_INGEST_TOKEN", "SPANMETER_ADMIN_TOKEN"):
        m = _INTERPOLATION.fullmatch(e[token])
        assert m and m.group(1) == token and m.group(2) == ":?", f"{token}: required, no default"
    # What `spanmeter serve` does with that: refuse without tokens, start with them.
    with pytest.raises(ConfigError):
        check_bind(Settings(host=host))
    check_bind(Settings(host=host, ingest_token="t", admin_token="a"))
    # The collector exports to that port, with the same token.
    assert env("collector")["SPANMETER_INGEST_ENDPOINT"] == f"http://ingest:{port}"
    assert env("collector")["SPANMETER_INGEST_TOKEN"] == e["SPANMETER_INGEST_TOKEN"]
    assert f"{port}:{port}" in SERVICES["ingest"]["ports"]
    assert f"http://ingest:{port}" in SERVICES["demo"]["command"]


def test_service_environments_are_settings_the_code_reads():
    known = {f"SPANMETER_{name.upper()}" for name in Settings.model_fields}
    known |= {migrate.CLUSTER_ENV, migrate.WRITER_PASSWORD_ENV, migrate.READER_PASSWORD_ENV,
              migrate.WRITER_USER_ENV, migrate.READER_USER_ENV, migrate.TRACES_DATABASE_ENV}
    for name in ("migrate", "ingest", "demo"):
        for key in env(name):
            assert key in known, f"{name}: {key} is read by nothing"


def test_users_and_passwords_agree():
    defaults = migrate.Access(writer_password="x", reader_password="y")
    writer_dsn = env("ingest")["SPANMETER_CLICKHOUSE_DSN"]
    assert writer_dsn.startswith(f"http://{defaults.writer_user}:${{SPANMETER_CLICKHOUSE_WRITER_PASSWORD")
    assert env("collector")["SPANMETER_CLICKHOUSE_USERNAME"] == defaults.writer_user
    assert env("collector")["SPANMETER_CLICKHOUSE_PASSWORD"] == env("migrate")["SPANMETER_CLICKHOUSE_WRITER_PASSWORD"]
    assert env("grafana")["SPANMETER_CLICKHOUSE_READER_USER"] == defaults.reader_user
    assert env("grafana")["SPANMETER_CLICKHOUSE_READER_PASSWORD"] == env("migrate")["SPANMETER_CLICKHOUSE_READER_PASSWORD"]
    assert env("migrate")["SPANMETER_CLICKHOUSE_TRACES_DATABASE"] == env("collector")["SPANMETER_CLICKHOUSE_TRACES_DATABASE"] == defaults.traces_database
    # The migrations run as the administrator ClickHouse creates.
    admin = env("clickhouse")["CLICKHOUSE_USER"]
    assert env("migrate")["SPANMETER_CLICKHOUSE_DSN"].startswith(f"http://{admin}:")
    assert env("clickhouse")["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"] == "1"


def test_every_required_variable_is_in_the_example_env_file():
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    text = (REPO / "docker-compose.yml").read_text()
    for m in _INTERPOLATION.finditer(text):
        assert m.group(1) in example, f"{m.group(1)} is not in .env.example"
    assert all(v == "change-me" for k, v in example.items() if "PASSWORD" in k or "TOKEN" in k or "SECRET" in k)
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_grafana_gets_the_plugin_the_dashboards_were_built_for():
    builder = _builder()
    e = env("grafana")
    assert e["GF_INSTALL_PLUGINS"] == f"grafana-clickhouse-datasource {builder.PLUGIN_VERSION}"
    major = int(SERVICES["grafana"]["image"].split(":")[1].split(".")[0])
    assert {12: 41, 13: 42}[major] == builder.SCHEMA_VERSION
    mounts = bind_mounts("grafana")
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/dashboards.yaml").read_text())["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert e["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].startswith(provider["options"]["path"] + "/")
    assert (REPO / "grafana/dashboards" / Path(e["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).name).is_file()
    # Every ${VAR} the data source file reads is set for Grafana.
    datasource = (REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text()
    values = "\n".join(line for line in datasource.splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r"\$\{(\w+)\}", values)
    for var in re.findall(r"\$\{(\w+)\}", values):
        assert var in e, f"grafana: {var} is not set"
    assert e["SPANMETER_GRAFANA_CLICKHOUSE_HOST"] in SERVICES


def test_health_checks_and_start_order():
    for name in ("clickhouse", "ingest", "grafana"):
        check = SERVICES[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3, name
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, name
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency} to be healthy"
            if condition["condition"] == "service_completed_successfully":
                assert SERVICES[dependency]["restart"] == "no"
    for name in ("ingest", "collector", "grafana"):
        assert SERVICES[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}, name
    assert SERVICES["migrate"]["command"] == ["spanmeter", "migrate"]


def test_the_ingests_state_is_on_a_volume_it_can_write():
    """The pending batch and the batches owed to the rollups survive a recreated container."""
    state = env("ingest")["SPANMETER_STATE_DIR"]
    named = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["ingest"]["volumes"] if not v.startswith((".", "/"))}
    assert named.get(state) in COMPOSE["volumes"]
    # A new named volume takes the image folder's owner: the folder exists, owned by the service's user.
    dockerfile = (REPO / "ingest" / "Dockerfile").read_text()
    assert f"install -d -o 10001 -g 10001 {state}" in dockerfile and "USER 10001:10001" in dockerfile
