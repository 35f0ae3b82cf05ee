"""docker-compose.yml: the Compose specification's schema (bundled with check-jsonschema) and our rules."""

from __future__ import annotations

import copy

import pytest
from deploy_checks import (
    ENV_EXAMPLE,
    InterpolationError,
    compose_env_documented_errors,
    compose_rule_errors,
    compose_schema,
    compose_schema_errors,
    example_env,
    interpolate,
    interpolate_tree,
    load_compose_raw,
)


@pytest.fixture(scope="module")
def raw():
    return load_compose_raw()


def rendered(raw_doc):
    return interpolate_tree(copy.deepcopy(raw_doc), example_env())


def test_schema_is_the_compose_spec():
    schema = compose_schema()
    assert "compose" in schema.get("$id", "").lower() or "Compose" in schema.get("title", "")
    assert "services" in schema["properties"]


def test_compose_file_matches_the_compose_spec(raw):
    assert compose_schema_errors(rendered(raw)) == []


def test_schema_check_catches_a_broken_file(raw):
    broken = rendered(raw)
    broken["services"]["redis"]["healthcheck"]["intervall"] = "10s"  # misspelt key
    broken["services"]["api"]["ports"] = "8000:8000"  # must be a list
    errors = compose_schema_errors(broken)
    assert any("intervall" in e for e in errors)
    assert any("services/api/ports" in e for e in errors)


def test_compose_follows_our_rules(raw):
    assert compose_rule_errors(raw) == []


def test_every_interpolated_variable_is_documented_in_env_example(raw):
    assert compose_env_documented_errors(raw, ENV_EXAMPLE.read_text()) == []
    broken = copy.deepcopy(raw)
    broken["services"]["redis"]["image"] = "redis:${REDIS_VERSION:-7.4.2}-alpine"
    assert compose_env_documented_errors(broken, ENV_EXAMPLE.read_text()) == [
        "docker-compose.yml interpolates ${REDIS_VERSION}, which .env.example does not list"
    ]


def test_profiles_split_cpu_and_gpu(raw):
    services = raw["services"]
    gpu_reserving = {n for n, s in services.items() if "deploy" in s}
    assert gpu_reserving == {"llm", "synthesis-gpu", "annotation-gpu", "trainer"}
    for name in gpu_reserving:
        assert services[name]["profiles"] == ["gpu"]
    infra = {n for n, s in services.items() if not s.get("profiles")}
    assert infra == {"redis", "minio", "minio-init"}


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["services"]["synthesis-gpu"].pop("deploy"), "synthesis-gpu: runs a GPU image"),
        (lambda d: d["services"]["llm"].pop("deploy"), "llm: runs a GPU image"),
        (lambda d: d["services"]["annotation-cpu"].update(deploy=copy.deepcopy(d["services"]["trainer"]["deploy"])),
         "annotation-cpu: in the cpu profile but reserves a GPU"),
        (lambda d: d["services"]["flower"].pop("healthcheck"), "flower: long-running service without a healthcheck"),
        (lambda d: d["services"]["curation-cpu"].update(healthcheck={"disable": True}),
         "curation-cpu: long-running service without a healthcheck"),
        (lambda d: d["services"]["minio"]["environment"].update(MINIO_ROOT_PASSWORD="hunter2hunter2"),
         "minio: MINIO_ROOT_PASSWORD has a literal value"),
        (lambda d: d["services"]["api"]["environment"].update(DREAMMASK_S3_SECRET_KEY="change-me-s3-secret"),
         "api: DREAMMASK_S3_SECRET_KEY has a literal value"),
        (lambda d: d["services"]["api"]["environment"].update(DREAMMASK_REDIS_URLL="redis://redis:6379/0"),
         "DREAMMASK_REDIS_URLL is not a DreamMask setting"),
        (lambda d: d["services"]["api"]["depends_on"].update(llm={"condition": "service_healthy"}),
         "api: depends on llm, which is not in every profile"),
        (lambda d: d["services"]["synthesis-cpu"].update(stop_grace_period="30s"),
         "synthesis-cpu: stop_grace_period 30s must outlast"),
        (lambda d: d["services"]["synthesis-gpu"]["command"].__setitem__(2, "dreammask.services.annotation.worker"),
         "queue 'synthesis' is served by dreammask.services.synthesis.worker"),
        (lambda d: d["services"]["annotation-gpu"]["command"].remove("--prefetch-multiplier=1"),
         "annotation-gpu: a worker needs --prefetch-multiplier=1"),
        # tasks in flight: threads of one process, and only on a stage built for it
        (lambda d: d["services"]["annotation-gpu"]["command"].remove("--pool=threads"),
         "annotation-gpu: a worker needs --concurrency=1 (one process per GPU), or --pool=threads"),
        (lambda d: d["services"]["synthesis-gpu"]["command"].__setitem__(
            slice(6, 7), ["--pool=threads", "--concurrency=2"]),
         "queue 'synthesis' is not built for tasks in flight"),
        (lambda d: d["services"]["synthesis-gpu"]["environment"].update(DREAMMASK_PRELOAD_BACKENDS='["masks:sam"]'),
         "preloads 'masks:sam' on queue 'synthesis'"),
        (lambda d: d["services"]["synthesis-cpu"]["environment"].update(DREAMMASK_PRELOAD_BACKENDS='["synthesis:gligen"]'),
         "preloads 'synthesis:gligen', which DREAMMASK_DEPLOYED_BACKENDS does not deploy"),
        (lambda d: d["services"].pop("curation-gpu"), "compose profile gpu: no worker on queue 'curation'"),
        (lambda d: d["services"]["flower"].update(ports=["5555:5555"]), "flower: publishes 5555:5555"),
        (lambda d: d["services"]["trainer"].update(volumes=["./models:/models"]), "mounted read-only"),
    ],
)
def test_rules_catch_broken_files(raw, mutate, expected):
    broken = copy.deepcopy(raw)
    mutate(broken)
    errors = compose_rule_errors(broken)
    assert any(expected in e for e in errors), errors


def test_a_setting_in_both_env_example_and_compose_environment_is_caught(raw):
    """`environment` wins over env_file, so an operator's .env value would be silently ignored."""
    broken = copy.deepcopy(raw)
    broken["services"]["api"]["environment"]["DREAMMASK_LOG_LEVEL"] = "DEBUG"
    errors = compose_rule_errors(broken)
    assert any("sets DREAMMASK_LOG_LEVEL, but docker-compose.yml overrides it" in e for e in errors), errors


def test_interpolation_follows_compose():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-e}-${EMPTY-f}-$$x", env) == "v-d-e--$x"
    assert interpolate("${UNSET:-a${SET}b}", env) == "avb"
    assert interpolate("${SET:+yes}${UNSET:+no}", env) == "yes"
    with pytest.raises(InterpolationError, match="set it in .env"):
        interpolate("${UNSET:?set it in .env}", env)


def test_compose_refuses_to_start_without_secrets(raw):
    env = example_env()
    del env["DREAMMASK_S3_SECRET_KEY"]
    with pytest.raises(InterpolationError, match="DREAMMASK_S3_SECRET_KEY"):
        interpolate_tree(copy.deepcopy(raw), env)
