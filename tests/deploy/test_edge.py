"""The edge in front of the API: compose publishes only the proxy (nginx) and the proxy carries the same
deadlines and caps as the API's own protocol; Kubernetes exposes the API through an Ingress with the
ingress-nginx annotations, and the controller settings for the deadlines ship beside it."""

from __future__ import annotations

import re

import yaml
from deploy_checks import COMPOSE_FILE, K8S_DIR, ROOT, all_overlays, compose_rule_errors, load_compose_raw

from dreammask.shared.settings import Settings

TEMPLATE = ROOT / "deploy" / "nginx" / "dreammask.conf.template"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.endswith(";"):
            name, _, value = line[:-1].partition(" ")
            out.setdefault(name, []).append(value.strip())
    return out


def seconds(v: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)?", v)
    assert m, v
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def test_the_proxy_has_the_apis_limits():
    d = directives(TEMPLATE.read_text())
    s = Settings()
    assert seconds(d["client_header_timeout"][0]) <= s.header_timeout_s
    assert seconds(d["client_body_timeout"][0]) <= s.body_grace_s
    assert seconds(d["send_timeout"][0]) <= s.send_timeout_s
    assert d["client_max_body_size"] == ["1m"] and s.max_request_bytes == 1 << 20
    assert any(v.startswith("dm_conn_per_ip ") for v in d["limit_conn"])
    assert d["limit_conn_status"] == ["429"] and d["limit_req_status"] == ["429"]
    assert "zone=dm_login" in " ".join(d["limit_req"])
    # The client address is set, never appended to: a client cannot forge what the API trusts.
    assert "X-Forwarded-For $remote_addr" in d["proxy_set_header"]
    assert d["proxy_request_buffering"] == ["on"] and d["reset_timedout_connection"] == ["on"]
    assert "${API_UPSTREAM}" in TEMPLATE.read_text()


def test_compose_publishes_the_edge_not_the_api():
    raw = load_compose_raw()
    services = raw["services"]
    for profile, edge, api in (("cpu", "edge", "api"), ("gpu", "edge-gpu", "api-gpu")):
        assert profile in services[edge]["profiles"] and not services[api].get("ports")
        assert services[edge]["environment"]["API_UPSTREAM"] == f"{api}:8000"
        assert services[edge]["depends_on"][api]["condition"] == "service_healthy"
        assert any("/etc/nginx/templates/" in v for v in services[edge]["volumes"])
        env = services[api]["environment"]
        assert env["DREAMMASK_FORWARDED_ALLOW_IPS"] == "*" and env["DREAMMASK_MAX_CONNECTIONS_PER_CLIENT"] == "0"
    assert "./deploy/nginx/dreammask.conf.template" in COMPOSE_FILE.read_text()


def test_publishing_the_api_itself_is_caught():
    raw = load_compose_raw()
    raw["services"]["api"]["ports"] = ["8000:8000"]
    assert any("compose service api: publishes 8000:8000" in e for e in compose_rule_errors(raw))


def test_kubernetes_exposes_the_api_through_an_ingress_with_limits():
    for name, resources in all_overlays().items():
        ing = next(r for r in resources if r["kind"] == "Ingress" and r["metadata"]["name"] == "api")
        ann = ing["metadata"]["annotations"]
        assert ann["nginx.ingress.kubernetes.io/proxy-body-size"] == "1m"
        assert int(ann["nginx.ingress.kubernetes.io/limit-connections"]) > 0
        assert ann["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
        backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == "api"
        cm = next(r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "dreammask-config")
        assert ing["spec"]["rules"][0]["host"] in cm["data"]["DREAMMASK_ALLOWED_HOSTS"], name
    controller = yaml.safe_load((K8S_DIR / "edge" / "ingress-nginx-config.yaml").read_text())["data"]
    s = Settings()
    assert float(controller["client-header-timeout"]) <= s.header_timeout_s
    assert float(controller["client-body-timeout"]) <= s.body_grace_s
