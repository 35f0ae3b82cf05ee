"""Kubernetes manifests: kustomize overlays rendered offline, validated against the Kubernetes schemas
shipped by kubernetes-validate (KEDA's ScaledObject against our own schema), plus our rules."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml
from deploy_checks import (
    K8S_DIR,
    K8S_OVERLAYS,
    K8S_VERSIONS,
    KustomizeError,
    build_kustomization,
    k8s_rule_errors,
    k8s_schema_errors,
    load_docs,
    strategic_merge,
)


@pytest.fixture(scope="module")
def overlays():
    return {name: build_kustomization(K8S_DIR / "overlays" / name) for name in K8S_OVERLAYS}


def find(resources, kind, name):
    return next(r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)


def test_kubernetes_validate_ships_the_versions_we_check():
    from kubernetes_validate import utils

    shipped = {v.rsplit(".", 1)[0] for v in utils.all_versions()}
    assert set(K8S_VERSIONS) <= shipped


@pytest.mark.parametrize("overlay", K8S_OVERLAYS)
def test_overlay_manifests_are_valid_kubernetes(overlays, overlay):
    resources = overlays[overlay]
    assert k8s_schema_errors(resources) == []
    assert k8s_rule_errors(resources) == []


def test_every_manifest_file_parses_and_validates(overlays):
    """Files outside the overlays' builds (the trainer Job template) are held to the same schemas; the
    Job runs next to the gpu overlay, whose ConfigMap and Secret it reads."""
    job = load_docs(K8S_DIR / "jobs" / "trainer-job.yaml")
    assert [r["kind"] for r in job] == ["Job"]
    assert k8s_schema_errors(job) == []
    shared = [r for r in overlays["gpu"] if r["kind"] in ("ConfigMap", "Secret")]
    assert k8s_rule_errors(job + shared, whole_namespace=False) == []
    assert any("dreammask-config" in e for e in k8s_rule_errors(job, whole_namespace=False))
    for path in K8S_DIR.rglob("*.yaml"):
        assert load_docs(path), f"{path} is empty"


def test_overlays_hold_what_the_platform_needs(overlays):
    for name, resources in overlays.items():
        kinds = {(r["kind"], r["metadata"]["name"]) for r in resources}
        for dep in ("api", "association", "synthesis", "annotation", "curation", "trainer"):
            assert ("Deployment", dep) in kinds, (name, dep)
        for so in ("association", "synthesis", "annotation", "curation", "trainer"):
            assert ("ScaledObject", so) in kinds
        assert ("Job", "minio-create-bucket") in kinds
        assert ("Secret", "dreammask-secrets") in kinds
        assert all(r["metadata"].get("namespace") == "dreammask" for r in resources if r["kind"] != "Namespace")
    gpu = overlays["gpu"]
    assert ("Deployment", "llm") in {(r["kind"], r["metadata"]["name"]) for r in gpu}
    for dep in ("llm", "synthesis", "annotation", "trainer"):
        spec = find(gpu, "Deployment", dep)["spec"]["template"]["spec"]
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nvidia.com/gpu" not in find(overlays["cpu"], "Deployment", "synthesis")["spec"]["template"]["spec"][
        "containers"][0]["resources"]["limits"]
    image = find(gpu, "Deployment", "synthesis")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/dreammask/gpu:0.1.0"
    assert find(gpu, "ScaledObject", "synthesis")["spec"]["minReplicaCount"] == 0


def copy_tree(tmp_path):
    dst = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, dst)
    return dst


def edit_yaml(path, fn):
    docs = load_docs(path)
    fn(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def test_patch_naming_a_missing_resource_fails(tmp_path):
    k8s = copy_tree(tmp_path)
    edit_yaml(k8s / "overlays/gpu/synthesis-gpu.yaml", lambda d: d[0]["metadata"].update(name="synthesys"))
    with pytest.raises(KustomizeError, match="Deployment/synthesys, which no resource"):
        build_kustomization(k8s / "overlays/gpu")


def test_json_patch_target_matching_nothing_fails(tmp_path):
    k8s = copy_tree(tmp_path)

    def retarget(d):
        d[0]["patches"][-1]["target"]["name"] = "no-such-deployment"

    edit_yaml(k8s / "overlays/gpu/kustomization.yaml", retarget)
    with pytest.raises(KustomizeError, match="matches no resource"):
        build_kustomization(k8s / "overlays/gpu")


def test_missing_resource_file_fails(tmp_path):
    k8s = copy_tree(tmp_path)
    (k8s / "base/curation.yaml").unlink()
    with pytest.raises(KustomizeError, match="resource 'curation.yaml' does not exist"):
        build_kustomization(k8s / "overlays/cpu")


def test_schema_check_catches_invalid_manifests(overlays):
    resources = copy.deepcopy(overlays["gpu"])
    find(resources, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    find(resources, "Service", "api")["spec"]["prots"] = []
    find(resources, "ScaledObject", "synthesis")["spec"]["triggers"][0]["metadata"]["listLength"] = 4
    find(resources, "ScaledObject", "annotation")["spec"]["triggers"][0]["metadata"]["listname"] = "annotation"
    errors = k8s_schema_errors(resources, versions=("1.30",))
    assert any("Deployment/api" in e and "containerPort" in e for e in errors), errors
    assert any("Service/api" in e and "prots" in e for e in errors), errors
    assert any("ScaledObject/synthesis" in e and "listLength" in e for e in errors), errors
    assert any("ScaledObject/annotation" in e and "listname" in e for e in errors), errors


def _container(resources, name):
    return find(resources, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: _container(r, "synthesis")["lifecycle"].pop("preStop"), "synthesis container worker: a worker needs a preStop"),
        (lambda r: find(r, "Deployment", "annotation")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
         "annotation container worker: terminationGracePeriodSeconds must outlast"),
        (lambda r: find(r, "Deployment", "synthesis")["spec"]["template"]["spec"].pop("tolerations"),
         "Deployment/synthesis: a GPU pod needs a nodeSelector and a toleration"),
        (lambda r: _container(r, "api")["env"].__setitem__(slice(None), [{"name": "DREAMMASK_S3_SECRET_KEY", "value": "x"}])
         if "env" in _container(r, "api") else _container(r, "api").update(env=[{"name": "DREAMMASK_S3_SECRET_KEY", "value": "x"}]),
         "DREAMMASK_S3_SECRET_KEY has a plain value"),
        (lambda r: find(r, "ConfigMap", "dreammask-config")["data"].update(DREAMMASK_API_KEYS='{"k": "t"}'),
         "DREAMMASK_API_KEYS is a secret"),
        (lambda r: find(r, "ConfigMap", "dreammask-config")["data"].update(DREAMMASK_REDIS_HOST="redis"),
         "DREAMMASK_REDIS_HOST is not a DreamMask setting"),
        (lambda r: _container(r, "curation").update(image="registry.example.com/dreammask/worker-cpu:latest"),
         "is not pinned"),
        (lambda r: _container(r, "api")["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda r: find(r, "Deployment", "api")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
         "must run as non-root"),
        (lambda r: _container(r, "association").pop("livenessProbe"), "needs a liveness probe"),
        (lambda r: _container(r, "synthesis")["volumeMounts"][0].pop("readOnly"), "models volume must be mounted read-only"),
        (lambda r: find(r, "ScaledObject", "synthesis")["spec"]["triggers"][0]["metadata"].update(listName="annotation"),
         "scales on lists ['annotation'], the worker consumes 'synthesis'"),
        (lambda r: r.remove(find(r, "ScaledObject", "curation")), "Deployment/curation: worker on queue 'curation' has no KEDA"),
        (lambda r: r.remove(find(r, "PodDisruptionBudget", "annotation")), "Deployment/annotation: no PodDisruptionBudget"),
        (lambda r: find(r, "Deployment", "synthesis")["spec"].update(replicas=1), "must not set spec.replicas"),
        (lambda r: find(r, "NetworkPolicy", "redis-ingress")["spec"]["ingress"][0].pop("from"),
         "redis-ingress: admits every source to redis"),
        (lambda r: r.remove(find(r, "NetworkPolicy", "default-deny-all")), "default-deny-all is missing"),
        (lambda r: find(r, "Service", "llm")["spec"]["selector"].update({"app.kubernetes.io/name": "vllm"}),
         "Service/llm: selector"),
        (lambda r: _container(r, "annotation")["env"].__setitem__(0, {"name": "DREAMMASK_PRELOAD_BACKENDS", "value": '["masks:sam2"]'}),
         "preloads 'masks:sam2', which is no registered backend"),
    ],
)
def test_rules_catch_broken_manifests(overlays, mutate, expected):
    resources = copy.deepcopy(overlays["gpu"])
    mutate(resources)
    errors = k8s_rule_errors(resources)
    assert any(expected in e for e in errors), errors


def test_strategic_merge_merges_named_lists():
    base = {"spec": {"containers": [{"name": "w", "image": "a", "env": [{"name": "A", "value": "1"}]}]}}
    patch = {"spec": {"containers": [{"name": "w", "image": "b", "env": [{"name": "B", "value": "2"}]}]}}
    merged = strategic_merge(base, patch)
    assert merged["spec"]["containers"] == [
        {"name": "w", "image": "b", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    ]
