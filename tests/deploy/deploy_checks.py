"""Offline checks of the deployment files: compose, Kubernetes (kustomize), Dockerfiles, .env.example.

There is no Docker engine or cluster here, so every check reads the files and returns a list of
problems (empty = fine). The tests run each check on the real files and on mutated copies, so a check
that cannot fail is caught too.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterable
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKER_DIR = ROOT / "deploy" / "docker"
K8S_DIR = ROOT / "deploy" / "k8s"
K8S_OVERLAYS = ("cpu", "gpu")
K8S_VERSIONS = ("1.30", "1.37")  # oldest we support (preStop `sleep`), newest kubernetes-validate ships

QUEUES = ("association", "synthesis", "annotation", "curation", "training", "loop")
# The Celery app module that serves each queue.
QUEUE_MODULE = {
    "association": "dreammask.services.association.worker",
    "synthesis": "dreammask.services.synthesis.worker",
    "annotation": "dreammask.services.annotation.worker",
    "curation": "dreammask.services.curation.worker",
    "training": "dreammask.trainer.service.worker",
    "loop": "dreammask.services.loop.worker",
}
# A training run is resumed from its checkpoint, not waited for: its grace period is exempt.
# Stages whose backends are thread-safe and gain from tasks in flight in one process: the LLM client
# (docs/llm.md) and annotation (docs/annotation.md).
QUEUES_WITH_TASKS_IN_FLIGHT = ("association", "annotation")
QUEUES_WITH_WARM_SHUTDOWN = ("association", "synthesis", "annotation", "curation", "loop")

# Which compose service runs the same workload as which Kubernetes Deployment, per profile/overlay.
COMPOSE_TO_K8S = {
    "cpu": {
        "api": "api",
        "association-cpu": "association",
        "synthesis-cpu": "synthesis",
        "annotation-cpu": "annotation",
        "curation-cpu": "curation",
        "trainer-cpu": "trainer",
        "loop-cpu": "loop",
    },
    "gpu": {
        "api-gpu": "api",
        "association-llm": "association",
        "synthesis-gpu": "synthesis",
        "annotation-gpu": "annotation",
        "curation-gpu": "curation",
        "trainer": "trainer",
        "loop-gpu": "loop",
    },
}
# Settings whose values (not only presence) must agree between compose and Kubernetes: they decide
# what the platform runs, not where things are.
POLICY_SETTINGS = ("DREAMMASK_DEPLOYED_BACKENDS", "DREAMMASK_PRELOAD_BACKENDS", "DREAMMASK_STORAGE_BACKEND")

OUR_IMAGES = re.compile(r"(^|/)dreammask/(api|worker-cpu|gpu|trainer)(:|@|$)|(^|/)(api|worker-cpu|gpu|trainer):")
GPU_IMAGES = re.compile(r"(^|/)(gpu|trainer)(:|@)|vllm/vllm-openai")
SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL)S?($|_)", re.I)
PREFIX = "DREAMMASK_"


# ====================================================================== settings


def settings_fields() -> dict[str, Any]:
    """DREAMMASK_* env name -> pydantic FieldInfo, over every settings class of the platform."""
    from dreammask.shared.settings import ENV_PREFIX, all_settings_classes

    fields = {}
    for cls in all_settings_classes():
        for name, info in cls.model_fields.items():
            fields[ENV_PREFIX + name.upper()] = info
    return fields


def secret_settings() -> set[str]:
    """Settings that hold secrets: SecretStr fields and anything named like a key or password."""
    from pydantic import SecretStr

    out = set()
    for env, info in settings_fields().items():
        if info.annotation is SecretStr or "SecretStr" in str(info.annotation):
            out.add(env)
        elif SECRET_NAME.search(env[len(PREFIX):]) and not env.endswith("_FILE"):
            out.add(env)
    return out


def unknown_setting_names(names: Iterable[str], where: str) -> list[str]:
    fields = settings_fields()
    return [
        f"{where}: {n} is not a DreamMask setting (no field {n[len(PREFIX):].lower()!r} in "
        "all_settings_classes()); fix the name or add the field"
        for n in sorted(set(names))
        if n.startswith(PREFIX) and n not in fields
    ]


# ====================================================================== .env files


ENV_LINE = re.compile(r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_env(text: str) -> tuple[dict[str, str], set[str]]:
    """(active KEY -> value, every KEY mentioned as `KEY=` including commented-out lines)."""
    active, mentioned = {}, set()
    for line in text.splitlines():
        m = ENV_LINE.match(line)
        if not m:
            continue
        mentioned.add(m.group(2))
        if not m.group(1):
            active[m.group(2)] = m.group(3)
    return active, mentioned


def env_example_errors(text: str) -> list[str]:
    active, mentioned = parse_env(text)
    errs = [f".env.example: {k} is missing (every setting is listed; run python "
            "deploy/tools/render_env_example.py)" for k in sorted(set(settings_fields()) - mentioned)]
    errs += unknown_setting_names([k for k in mentioned if k.startswith(PREFIX)], ".env.example")
    for key in sorted(secret_settings() & set(active)):
        if "change-me" not in active[key]:
            errs.append(f".env.example: {key} must hold a change-me placeholder, not a usable secret")
    return errs


# ====================================================================== compose


INTERP = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class InterpolationError(ValueError):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+r}, $$."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        have = name in env
        val = env.get(name, "")
        if op is None:
            return val
        unset_or_empty = (not have) or (op.startswith(":") and val == "")
        if op.endswith("-"):
            return interpolate(arg, env) if unset_or_empty else val
        if op.endswith("?"):
            if unset_or_empty:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return val
        if op.endswith("+"):
            return "" if unset_or_empty else interpolate(arg, env)
        return val

    return INTERP.sub(sub, value)


def referenced_variables(obj: Any) -> set[str]:
    found = set()
    for s in _strings(obj):
        for m in INTERP.finditer(s):
            if m.group(0) != "$$":
                found.add(m.group(1) or m.group(4))
                if m.group(3):
                    found |= referenced_variables(m.group(3))
    return found


def _strings(obj: Any):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def interpolate_tree(obj: Any, env: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return interpolate(obj, env)
    if isinstance(obj, dict):
        return {k: interpolate_tree(v, env) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate_tree(v, env) for v in obj]
    return obj


def load_compose_raw(text: str | None = None) -> dict:
    return yaml.safe_load(text if text is not None else COMPOSE_FILE.read_text())


def example_env() -> dict[str, str]:
    return parse_env(ENV_EXAMPLE.read_text())[0]


def compose_schema() -> dict:
    ref = importlib_resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return json.loads(ref.read_text())


def compose_schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [
        f"compose schema: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _env_map(environment: Any) -> dict[str, str | None]:
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {k: (None if v is None else str(v)) for k, v in environment.items()}
    out = {}
    for item in environment:
        k, sep, v = str(item).partition("=")
        out[k] = v if sep else None
    return out


def _command_list(cmd: Any) -> list[str]:
    if cmd is None:
        return []
    return list(map(str, cmd)) if isinstance(cmd, list) else shlex.split(str(cmd))


def _is_one_shot(svc: dict) -> bool:
    """A service that runs to completion (bucket creation): it says so with restart "no"/"on-failure"."""
    return str(svc.get("restart")) in ("no", "on-failure", "False")


def _reserves_gpu(svc: dict) -> bool:
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return any("gpu" in (d.get("capabilities") or []) for d in devices)


def _duration_s(text: str) -> float:
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for num, unit in re.findall(r"([\d.]+)(ms|us|h|m|s)", str(text)):
        total += float(num) * units[unit]
    return total


def worker_queue(command: list[str]) -> tuple[str | None, str | None]:
    """(celery app module, queue) of a `celery -A <module> worker -Q <queue>` command."""
    if "worker" not in command or "-A" not in command:
        return None, None
    module = command[command.index("-A") + 1]
    queue = command[command.index("-Q") + 1] if "-Q" in command else None
    return module, queue


def celery_worker_errors(where: str, command: list[str]) -> list[str]:
    module, queue = worker_queue(command)
    if module is None:
        return []
    errs = []
    if queue not in QUEUES:
        errs.append(f"{where}: worker queue {queue!r} is not one of {', '.join(QUEUES)}")
    elif QUEUE_MODULE[queue] != module:
        errs.append(f"{where}: queue {queue!r} is served by {QUEUE_MODULE[queue]}, not {module}")
    if "--prefetch-multiplier=1" not in command:
        errs.append(f"{where}: a worker needs --prefetch-multiplier=1 (a task reserved only when a slot is free)")
    if "--concurrency=1" not in command:
        # One process per GPU: several tasks in flight only as threads of that process, sharing its models,
        # and only where the stage is built for it.
        threads = "--pool=threads" in command
        if not threads:
            errs.append(f"{where}: a worker needs --concurrency=1 (one process per GPU), or --pool=threads "
                        "for tasks in flight in one process")
        elif queue not in QUEUES_WITH_TASKS_IN_FLIGHT:
            errs.append(f"{where}: queue {queue!r} is not built for tasks in flight; only "
                        f"{', '.join(QUEUES_WITH_TASKS_IN_FLIGHT)} may run --pool=threads with --concurrency above 1")
    return errs


def preload_errors(where: str, env: dict[str, str | None], queue: str | None) -> list[str]:
    """Preloaded backends exist, are deployed, and run on this worker's queue."""
    from dreammask.shared.registry import QUEUE_OF_STAGE, REGISTRIES, load_backend_plugins

    raw = env.get(PREFIX + "PRELOAD_BACKENDS")
    if not raw:
        return []
    errs = []
    try:
        preload = json.loads(raw)
    except ValueError:
        return [f"{where}: DREAMMASK_PRELOAD_BACKENDS is not JSON: {raw!r}"]
    deployed_raw = env.get(PREFIX + "DEPLOYED_BACKENDS")
    deployed = json.loads(deployed_raw) if deployed_raw else None
    load_backend_plugins()
    for entry in preload:
        stage, _, name = str(entry).partition(":")
        if stage not in REGISTRIES or name not in REGISTRIES[stage]:
            errs.append(f"{where}: preloads {entry!r}, which is no registered backend")
            continue
        if queue is not None and QUEUE_OF_STAGE[stage] != queue:
            errs.append(f"{where}: preloads {entry!r} on queue {queue!r}; stage {stage} runs on {QUEUE_OF_STAGE[stage]!r}")
        if deployed is not None and name not in deployed.get(stage, []):
            errs.append(f"{where}: preloads {entry!r}, which DREAMMASK_DEPLOYED_BACKENDS does not deploy")
    return errs


def compose_env_of(doc: dict, service: str, env_file_keys: Iterable[str] = ()) -> dict[str, str | None]:
    """The DREAMMASK_* environment a compose service's container gets: env_file first, then environment."""
    svc = doc["services"][service]
    out: dict[str, str | None] = {}
    if svc.get("env_file"):
        out.update({k: None for k in env_file_keys if k.startswith(PREFIX)})
    out.update({k: v for k, v in _env_map(svc.get("environment")).items() if k.startswith(PREFIX)})
    return out


def compose_rule_errors(raw: dict, env: dict[str, str] | None = None) -> list[str]:
    """Our rules on top of the schema. `raw` is the file before interpolation (secrets are judged there)."""
    env = example_env() if env is None else env
    doc = interpolate_tree(copy.deepcopy(raw), env)
    errs: list[str] = []
    services: dict[str, dict] = doc.get("services") or {}
    raw_services: dict[str, dict] = raw.get("services") or {}
    secrets = secret_settings()
    env_active = parse_env(ENV_EXAMPLE.read_text())[0]
    time_limit = float(env_active.get(PREFIX + "TASK_TIME_LIMIT_S", settings_fields()[PREFIX + "TASK_TIME_LIMIT_S"].default))
    topology = set()

    for name, svc in services.items():
        image = str(svc.get("image", ""))
        ours = bool(OUR_IMAGES.search(image))
        command = _command_list(svc.get("command"))
        where = f"compose service {name}"
        one_shot = _is_one_shot(svc)

        # GPU services reserve a GPU; nothing else does.
        if GPU_IMAGES.search(image) and not _reserves_gpu(svc):
            errs.append(f"{where}: runs a GPU image ({image}) but reserves no GPU "
                        "(deploy.resources.reservations.devices with capabilities [gpu])")
        if _reserves_gpu(svc) and "cpu" in (svc.get("profiles") or []):
            errs.append(f"{where}: in the cpu profile but reserves a GPU")

        # Health: every long-running service has a real health check.
        if not one_shot:
            hc = svc.get("healthcheck") or {}
            test = hc.get("test")
            if not test or hc.get("disable") in (True, "true") or (isinstance(test, list) and test[:1] == ["NONE"]):
                errs.append(f"{where}: long-running service without a healthcheck")

        # depends_on: long form, with a condition that can be met.
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            errs.append(f"{where}: depends_on must use the long form with a condition")
            deps = {}
        for dep, spec in deps.items():
            if dep not in services:
                errs.append(f"{where}: depends_on unknown service {dep!r}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond == "service_healthy" and not (services[dep].get("healthcheck") or {}).get("test"):
                errs.append(f"{where}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and not _is_one_shot(services[dep]):
                errs.append(f"{where}: waits for {dep} to complete, but {dep} restarts forever")
            dep_profiles = set(services[dep].get("profiles") or [])
            own_profiles = set(svc.get("profiles") or [])
            if dep_profiles and (not own_profiles or not own_profiles <= dep_profiles):
                errs.append(f"{where}: depends on {dep}, which is not in every profile {name} runs in")

        # Secrets: never a literal value in the file, only ${VAR} from .env / env_file.
        raw_env = _env_map((raw_services.get(name) or {}).get("environment"))
        for key, value in raw_env.items():
            secretish = key in secrets or SECRET_NAME.search(key.removeprefix(PREFIX))
            if secretish and value is not None and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[?-][^}]*)?\}", value):
                errs.append(f"{where}: {key} has a literal value; secrets come from .env (${{VAR}}) only")
        for s in _strings(raw_services.get(name) or {}):
            if "change-me" in s:
                errs.append(f"{where}: contains a change-me placeholder value; it belongs in .env")

        # Our containers: every DREAMMASK_* name is a real setting.
        svc_env = _env_map(svc.get("environment"))
        if ours:
            errs += unknown_setting_names(svc_env, where)
            if not svc.get("env_file"):
                errs.append(f"{where}: DreamMask containers read .env through env_file")
            mounts = [str(v) for v in svc.get("volumes") or []]
            for m in mounts:
                if m.split(":")[1:2] == ["/models"] and not m.endswith(":ro"):
                    errs.append(f"{where}: the models volume must be mounted read-only (:ro)")
            topology |= {k for k in svc_env if k.startswith(PREFIX)}

        # Workers: the right app for the queue, one task at a time, warm shutdown, preloads valid.
        module, queue = worker_queue(command)
        if module:
            errs += celery_worker_errors(where, command)
            if queue in QUEUES_WITH_WARM_SHUTDOWN and _duration_s(svc.get("stop_grace_period", "10s")) <= time_limit:
                errs.append(f"{where}: stop_grace_period {svc.get('stop_grace_period', '10s')} must outlast "
                            f"DREAMMASK_TASK_TIME_LIMIT_S ({time_limit:.0f}s) so warm shutdown finishes the task")
            errs += preload_errors(where, svc_env, queue)

        # Published ports: the edge (the API's reverse proxy) and MinIO's S3 port face clients; the rest,
        # the API included, is reached through them or stays on the loopback.
        for port in svc.get("ports") or []:
            p = str(port)
            public = not p.startswith("127.0.0.1:")
            if public and not (name.startswith("edge") or (name == "minio" and p.endswith(":9000"))):
                errs.append(f"{where}: publishes {p} on every interface; bind it to 127.0.0.1")

    # Every profile runs the whole platform: an API and one worker per queue.
    for profile in ("cpu", "gpu"):
        in_profile = {n: s for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]}
        queues = {worker_queue(_command_list(s.get("command")))[1] for s in in_profile.values()}
        for q in QUEUES:
            if q not in queues:
                errs.append(f"compose profile {profile}: no worker on queue {q!r}")
        if not any(re.search(r"(^|/)api:", str(s.get("image", ""))) for s in in_profile.values()):
            errs.append(f"compose profile {profile}: no API service")

    # Settings in .env reach every container; one that compose also sets would be silently ignored.
    for key in sorted(topology & set(env_active)):
        errs.append(f".env.example sets {key}, but docker-compose.yml overrides it in `environment`; "
                    "keep it in one place")
    return errs


def compose_env_documented_errors(raw: dict, env_text: str) -> list[str]:
    """Every variable the compose file interpolates is documented in .env.example."""
    _, mentioned = parse_env(env_text)
    return [f"docker-compose.yml interpolates ${{{v}}}, which .env.example does not list"
            for v in sorted(referenced_variables(raw) - mentioned)]


# ====================================================================== Kubernetes (kustomize)


class KustomizeError(ValueError):
    pass


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _key(res: dict) -> tuple[str, str]:
    return res["kind"], res["metadata"].get("name") or res["metadata"].get("generateName", "")


def strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge, as far as our patches use it: maps merge, lists of named items
    merge by `name` (containers, env, volumes, ports), other lists are replaced, null deletes."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        named = all(isinstance(x, dict) and "name" in x for x in base + patch)
        if named and base:
            out = [copy.deepcopy(x) for x in base]
            index = {x["name"]: i for i, x in enumerate(out)}
            for item in patch:
                if item["name"] in index:
                    out[index[item["name"]]] = strategic_merge(out[index[item["name"]]], item)
                else:
                    out.append(copy.deepcopy(item))
            return out
    return copy.deepcopy(patch)


def json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                else:
                    parent.insert(int(last), op["value"]) if op["op"] == "add" else parent.__setitem__(int(last), op["value"])
            else:
                if op["op"] == "replace" and last not in parent:
                    raise KustomizeError(f"json patch replaces missing path {op['path']}")
                parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            try:
                del parent[int(last) if isinstance(parent, list) else last]
            except (KeyError, IndexError):
                raise KustomizeError(f"json patch removes missing path {op['path']}") from None
        else:
            raise KustomizeError(f"json patch op {op['op']!r} is not supported by this checker")
    return doc


def _target_matches(res: dict, target: dict) -> bool:
    api = res.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    if "kind" in target and target["kind"] != res["kind"]:
        return False
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    if "name" in target and not re.fullmatch(f"(?:{target['name']})", res["metadata"].get("name", "")):
        return False
    if "namespace" in target and target["namespace"] != res["metadata"].get("namespace"):
        return False
    if "labelSelector" in target:
        labels = res["metadata"].get("labels") or {}
        for term in target["labelSelector"].split(","):
            k, _, v = term.partition("=")
            if labels.get(k.strip()) != v.strip():
                return False
    return True


def _env_file_keys(path: Path) -> dict[str, str]:
    return parse_env(path.read_text())[0]


def build_kustomization(directory: Path) -> list[dict]:
    """What `kustomize build directory` would emit, for the features our manifests use; raises
    KustomizeError naming the file when a resource, generator input or patch target is missing."""
    kfile = directory / "kustomization.yaml"
    if not kfile.exists():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    known = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images",
             "configMapGenerator", "secretGenerator", "generatorOptions", "commonAnnotations"}
    unknown = set(k) - known
    if unknown:
        raise KustomizeError(f"{kfile}: fields this checker does not model: {sorted(unknown)}")

    out: list[dict] = []
    for entry in k.get("resources") or []:
        path = (directory / entry).resolve()
        if path.is_dir():
            out += build_kustomization(path)
        elif path.is_file():
            out += load_docs(path)
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} does not exist")

    for gen_kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in k.get(key) or []:
            data: dict[str, str] = {}
            for env_file in gen.get("envs") or []:
                path = directory / env_file
                example = path.with_name(path.name + ".example")
                # The real secrets file is the operator's (and ignored by git); its template has the keys.
                source = path if path.exists() else example
                if not source.exists():
                    raise KustomizeError(f"{kfile}: {gen_kind} generator input {env_file!r} (or its .example) is missing")
                data.update(_env_file_keys(source))
            for literal in gen.get("literals") or []:
                kk, _, vv = literal.partition("=")
                data[kk] = vv
            res = {"apiVersion": "v1", "kind": gen_kind, "metadata": {"name": gen["name"]}}
            res["stringData" if gen_kind == "Secret" else "data"] = data
            out.append(res)

    for patch in k.get("patches") or []:
        if "path" in patch:
            ppath = directory / patch["path"]
            if not ppath.exists():
                raise KustomizeError(f"{kfile}: patch file {patch['path']!r} does not exist")
            docs = load_docs(ppath)
        else:
            docs = [d for d in yaml.safe_load_all(patch["patch"]) if d]
        target = patch.get("target")
        if target is not None:
            hits = [i for i, r in enumerate(out) if _target_matches(r, target)]
            if not hits:
                raise KustomizeError(f"{kfile}: patch {patch.get('path', '<inline>')} targets {target}, which matches no resource")
            for doc in docs:
                for i in hits:
                    out[i] = json_patch(out[i], doc) if isinstance(doc, list) else strategic_merge(out[i], doc)
            continue
        for doc in docs:
            if isinstance(doc, list):
                raise KustomizeError(f"{kfile}: JSON patch {patch.get('path')} needs a target")
            key = _key(doc)
            hits = [i for i, r in enumerate(out) if _key(r) == key]
            if not hits:
                raise KustomizeError(f"{kfile}: patch {patch.get('path', '<inline>')} patches {key[0]}/{key[1]}, "
                                     "which no resource of this kustomization defines")
            out[hits[0]] = strategic_merge(out[hits[0]], doc)

    for img in k.get("images") or []:
        for res in out:
            for c in _containers(res):
                name, tag = _split_image(c.get("image", ""))
                if name == img["name"]:
                    new = img.get("newName", name)
                    if "digest" in img:
                        c["image"] = f"{new}@{img['digest']}"
                    else:
                        c["image"] = f"{new}:{img.get('newTag', tag)}"

    if "namespace" in k:
        for res in out:
            if res["kind"] != "Namespace":
                res["metadata"]["namespace"] = k["namespace"]
    for label_set in k.get("labels") or []:
        for res in out:
            res["metadata"].setdefault("labels", {}).update(label_set.get("pairs") or {})
    return out


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image.split("@", 1)[0], None
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, None


def _pod_spec(res: dict) -> dict | None:
    spec = res.get("spec") or {}
    if res["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return (spec.get("template") or {}).get("spec")
    if res["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if res["kind"] == "Pod":
        return spec
    return None


def _containers(res: dict) -> list[dict]:
    pod = _pod_spec(res) or {}
    return list(pod.get("containers") or []) + list(pod.get("initContainers") or [])


# KEDA's CRDs are not in kubernetes-validate's schemas: this is the part of ScaledObject we use,
# written from KEDA's v2 CRD (keda.sh/v1alpha1), strict so a misspelt field fails.
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                   "apiVersion": {"type": "string"}, "envSourceContainerName": {"type": "string"}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object", "required": ["name"]},
                            # KEDA trigger metadata values are strings, always.
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}
# What the redis list scaler reads (KEDA docs, "Redis Lists" scaler).
REDIS_LIST_METADATA = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
                       "listName", "listLength", "activationListLength", "databaseIndex", "enableTLS",
                       "unsafeSsl", "usernameFromEnv", "passwordFromEnv"}


def k8s_schema_errors(resources: list[dict], versions: Iterable[str] = K8S_VERSIONS) -> list[str]:
    import kubernetes_validate

    errs = []
    for res in resources:
        where = f"{res['kind']}/{_key(res)[1]}"
        if res.get("apiVersion") == "keda.sh/v1alpha1":
            for e in jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).iter_errors(res):
                errs.append(f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
            for t in (res.get("spec") or {}).get("triggers") or []:
                if t.get("type") == "redis":
                    extra = set(t.get("metadata") or {}) - REDIS_LIST_METADATA
                    if extra:
                        errs.append(f"{where}: redis trigger metadata has unknown keys {sorted(extra)}")
                    if "listName" not in (t.get("metadata") or {}):
                        errs.append(f"{where}: redis trigger needs listName")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(res, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errs.append(f"{where} (k8s {version}): {'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errs.append(f"{where} (k8s {version}): {e.message}")
    return errs


def _pinned(image: str) -> bool:
    name, tag = _split_image(image)
    return "@sha256:" in image or (tag is not None and tag != "latest")


def k8s_rule_errors(resources: list[dict], task_time_limit_s: float | None = None, *,
                    whole_namespace: bool = True) -> list[str]:
    """Our rules on rendered manifests; `whole_namespace` for a full overlay (network policies, PDBs)."""
    errs: list[str] = []
    fields = settings_fields()
    secrets = secret_settings()
    by_kind: dict[str, dict[str, dict]] = {}
    for res in resources:
        by_kind.setdefault(res["kind"], {})[_key(res)[1]] = res
    configmaps = by_kind.get("ConfigMap", {})
    if task_time_limit_s is None:
        cm = configmaps.get("dreammask-config", {}).get("data", {})
        task_time_limit_s = float(cm.get(PREFIX + "TASK_TIME_LIMIT_S", fields[PREFIX + "TASK_TIME_LIMIT_S"].default))

    for name, cm in configmaps.items():
        data = cm.get("data") or {}
        errs += unknown_setting_names(data, f"ConfigMap/{name}")
        for key in data:
            if key in secrets or SECRET_NAME.search(key.removeprefix(PREFIX)):
                errs.append(f"ConfigMap/{name}: {key} is a secret; it belongs in the Secret (secrets.env)")
    for name, sec in by_kind.get("Secret", {}).items():
        values = {**(sec.get("stringData") or {}), **(sec.get("data") or {})}
        errs += unknown_setting_names(values, f"Secret/{name}")

    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in by_kind.get("ScaledObject", {}).values()}
    pdbs = list(by_kind.get("PodDisruptionBudget", {}).values())

    for res in resources:
        pod = _pod_spec(res)
        if pod is None:
            continue
        where = f"{res['kind']}/{_key(res)[1]}"
        long_running = res["kind"] in ("Deployment", "StatefulSet")
        labels = ((res["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for claim in res["spec"].get("volumeClaimTemplates") or []:
            volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
        gpu_pod = False
        for c in pod.get("containers") or []:
            cw = f"{where} container {c['name']}"
            image = c.get("image", "")
            if not _pinned(image):
                errs.append(f"{cw}: image {image!r} is not pinned (a tag other than latest, or a digest)")
            res_spec = c.get("resources") or {}
            if not (res_spec.get("requests") or {}).get("cpu") or not (res_spec.get("requests") or {}).get("memory"):
                errs.append(f"{cw}: needs resources.requests cpu and memory")
            if not (res_spec.get("limits") or {}).get("memory"):
                errs.append(f"{cw}: needs a memory limit")
            if "nvidia.com/gpu" in (res_spec.get("limits") or {}):
                gpu_pod = True
            if long_running and not (c.get("livenessProbe") and (c.get("readinessProbe") or c.get("startupProbe"))):
                errs.append(f"{cw}: a long-running container needs a liveness probe and a readiness or startup probe")
            sc = {**(pod.get("securityContext") or {}), **(c.get("securityContext") or {})}
            if not sc.get("runAsNonRoot") or sc.get("runAsUser") == 0:
                errs.append(f"{cw}: must run as non-root (runAsNonRoot: true)")
            if sc.get("allowPrivilegeEscalation") is not False:
                errs.append(f"{cw}: set allowPrivilegeEscalation: false")
            env_names = [e["name"] for e in c.get("env") or []]
            errs += unknown_setting_names(env_names, cw)
            for e in c.get("env") or []:
                if "value" in e and (e["name"] in secrets or SECRET_NAME.search(e["name"].removeprefix(PREFIX))):
                    errs.append(f"{cw}: {e['name']} has a plain value; take it from the Secret (secretKeyRef)")
            for ref in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ref and ref[key]["name"] not in by_kind.get(kind, {}) and not ref[key].get("optional"):
                        errs.append(f"{cw}: envFrom {kind} {ref[key]['name']!r} is not defined")
            for m in c.get("volumeMounts") or []:
                vol = volumes.get(m["name"])
                if vol is None:
                    errs.append(f"{cw}: mounts undefined volume {m['name']!r}")
                elif m["mountPath"] == "/models" and not (m.get("readOnly") and (vol.get("persistentVolumeClaim") or {}).get("readOnly")):
                    errs.append(f"{cw}: the models volume must be mounted read-only (mount and claim)")
            module, queue = worker_queue(list(c.get("command") or []) + list(c.get("args") or []))
            if module:
                errs += celery_worker_errors(cw, list(c.get("command") or []))
                env_values = {e["name"]: e.get("value") for e in c.get("env") or []}
                merged = {**(configmaps.get("dreammask-config", {}).get("data") or {}), **env_values}
                errs += preload_errors(cw, merged, queue)
                if not ((c.get("lifecycle") or {}).get("preStop")):
                    errs.append(f"{cw}: a worker needs a preStop hook (stop consuming before SIGTERM)")
                if queue in QUEUES_WITH_WARM_SHUTDOWN and pod.get("terminationGracePeriodSeconds", 30) <= task_time_limit_s:
                    errs.append(f"{cw}: terminationGracePeriodSeconds must outlast DREAMMASK_TASK_TIME_LIMIT_S "
                                f"({task_time_limit_s:.0f}s): warm shutdown finishes the task in flight")
                so = scaled.get(_key(res)[1]) if res["kind"] == "Deployment" else None
                if so is None:
                    errs.append(f"{where}: worker on queue {queue!r} has no KEDA ScaledObject")
                else:
                    lists = [t["metadata"].get("listName") for t in so["spec"]["triggers"] if t["type"] == "redis"]
                    if lists != [queue]:
                        errs.append(f"ScaledObject/{so['metadata']['name']}: scales on lists {lists}, the worker consumes {queue!r}")
        if gpu_pod:
            tolerates = any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations") or [])
            if not tolerates or not pod.get("nodeSelector"):
                errs.append(f"{where}: a GPU pod needs a nodeSelector and a toleration for nvidia.com/gpu")
        autoscaled = _key(res)[1] in scaled or any(
            h["spec"]["scaleTargetRef"]["name"] == _key(res)[1]
            for h in by_kind.get("HorizontalPodAutoscaler", {}).values())
        if autoscaled and "replicas" in res["spec"]:
            errs.append(f"{where}: autoscaled, so it must not set spec.replicas (each apply would reset the count)")
        if res["kind"] == "Deployment" and whole_namespace:
            if not any(_selects(p["spec"].get("selector") or {}, labels) for p in pdbs):
                errs.append(f"{where}: no PodDisruptionBudget selects it")

    for name, so in scaled.items():
        if name not in by_kind.get("Deployment", {}):
            errs.append(f"ScaledObject {so['metadata']['name']}: scaleTargetRef {name!r} is not a Deployment here")

    # Services select pods that exist.
    templates = [((r["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
                 for r in resources if r["kind"] in ("Deployment", "StatefulSet")]
    for name, svc in by_kind.get("Service", {}).items():
        sel = (svc.get("spec") or {}).get("selector") or {}
        if not any(all(t.get(k) == v for k, v in sel.items()) for t in templates):
            errs.append(f"Service/{name}: selector {sel} matches no pod template")

    # Network: only the API accepts connections from outside the namespace.
    for name, np_ in by_kind.get("NetworkPolicy", {}).items():
        target = ((np_["spec"].get("podSelector") or {}).get("matchLabels") or {}).get("app.kubernetes.io/name")
        for rule in np_["spec"].get("ingress") or []:
            peers = rule.get("from")
            if not peers and target != "api":
                errs.append(f"NetworkPolicy/{name}: admits every source to {target or 'all pods'}; only the API may")
            for peer in peers or []:
                if "ipBlock" in peer:
                    errs.append(f"NetworkPolicy/{name}: ipBlock sources open {target} to outside traffic")
    if whole_namespace and "default-deny-all" not in by_kind.get("NetworkPolicy", {}):
        errs.append("NetworkPolicy/default-deny-all is missing: everything would be open")
    return errs


def _selects(selector: dict, labels: dict) -> bool:
    ml = selector.get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def k8s_workload_env(resources: list[dict], name: str) -> dict[str, str | None]:
    """DREAMMASK_* env of the Deployment's main container: envFrom ConfigMaps/Secrets, then env."""
    by = {(r["kind"], r["metadata"]["name"]): r for r in resources}
    dep = by[("Deployment", name)]
    c = _pod_spec(dep)["containers"][0]
    out: dict[str, str | None] = {}
    for ref in c.get("envFrom") or []:
        if "configMapRef" in ref:
            out.update(by[("ConfigMap", ref["configMapRef"]["name"])].get("data") or {})
        if "secretRef" in ref:
            sec = by[("Secret", ref["secretRef"]["name"])]
            out.update({k: None for k in {**(sec.get("stringData") or {}), **(sec.get("data") or {})}})
    for e in c.get("env") or []:
        out[e["name"]] = e.get("value")
    return {k: v for k, v in out.items() if k.startswith(PREFIX)}


def parity_errors(compose_raw: dict, overlays: dict[str, list[dict]], env_text: str | None = None) -> list[str]:
    """The same settings reach the same workload in compose and in Kubernetes."""
    env_text = ENV_EXAMPLE.read_text() if env_text is None else env_text
    active = parse_env(env_text)[0]
    doc = interpolate_tree(copy.deepcopy(compose_raw), active)
    errs = []
    for profile, mapping in COMPOSE_TO_K8S.items():
        resources = overlays[profile]
        for svc, dep in mapping.items():
            if svc not in doc["services"]:
                errs.append(f"compose service {svc} (profile {profile}) is missing")
                continue
            c_env = compose_env_of(doc, svc, active)
            try:
                k_env = k8s_workload_env(resources, dep)
            except KeyError as e:
                errs.append(f"overlay {profile}: Deployment {dep} or what it references is missing ({e})")
                continue
            for key in sorted(set(c_env) - set(k_env)):
                errs.append(f"{key} reaches compose service {svc} but not Deployment {dep} (overlay {profile})")
            for key in sorted(set(k_env) - set(c_env)):
                errs.append(f"{key} reaches Deployment {dep} (overlay {profile}) but not compose service {svc}")
            for key in POLICY_SETTINGS:
                a, b = c_env.get(key), k_env.get(key)
                if a is not None and b is not None and _loose(a) != _loose(b):
                    errs.append(f"{key} differs: compose {svc} {a!r}, Kubernetes {dep} {b!r} (overlay {profile})")
    return errs


def _loose(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


# ====================================================================== Dockerfiles


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_errors(text: str, name: str = "Dockerfile", *, allow_torch: bool = True) -> list[str]:
    errs: list[str] = []
    args: dict[str, str] = {}
    stages: list[str] = []
    final_user: str | None = None
    has_healthcheck = False
    for instr, rest in dockerfile_instructions(text):
        if instr == "ARG":
            k, eq, v = rest.partition("=")
            if eq and k.strip() not in args:
                args[k.strip()] = v.strip().strip('"')
        elif instr == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            if image.lower() not in stages and image != "scratch":
                if "$" in image:
                    errs.append(f"{name}: FROM {parts[0]} uses an ARG without a default")
                elif not _pinned(image):
                    errs.append(f"{name}: base image {image} is not pinned (use a version tag or a digest, never latest)")
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.append(parts[2].lower())
            final_user, has_healthcheck = None, False
        elif instr == "USER":
            final_user = rest.split(":")[0].strip()
        elif instr == "HEALTHCHECK":
            has_healthcheck = not rest.upper().startswith("NONE")
        elif instr == "RUN":
            for m in re.finditer(r"pip3? install[^&;|]*", rest):
                cmd = m.group(0)
                for tok in shlex.split(cmd.replace('"', " ").replace("'", " ")):
                    if re.fullmatch(r"torch(vision)?(\[.*\])?", tok) or re.match(r"torch(vision)?(>=|~=|<|>)", tok):
                        errs.append(f"{name}: `{tok}` is not an exact pin (torch==..., torchvision==...)")
                    if not allow_torch and re.match(r"torch(vision)?==", tok):
                        errs.append(f"{name}: installs {tok}; this image must not contain torch")
        elif instr in ("COPY", "ADD"):
            if re.search(r"(^|\s)\.?/?models(/|\s|$)", rest):
                errs.append(f"{name}: copies models into the image; weights are mounted at run time")
    if final_user is None:
        errs.append(f"{name}: the final stage has no USER: containers would run as root")
    elif final_user in ("root", "0"):
        errs.append(f"{name}: the final stage runs as root (USER {final_user})")
    if not has_healthcheck:
        errs.append(f"{name}: the final stage has no HEALTHCHECK")
    return errs


# ====================================================================== everything


def all_overlays() -> dict[str, list[dict]]:
    return {name: build_kustomization(K8S_DIR / "overlays" / name) for name in K8S_OVERLAYS}
