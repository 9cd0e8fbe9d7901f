"""The Helm chart against the real control plane: lint, render, server-side validation, install,
and the RBAC proof (operator and gateway running as the chart's own ServiceAccounts)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from aikeys_dev.devstack import usageapi
from aikeys_dev.devstack.binaries import REPO_ROOT, locate
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.processes import free_port
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess, OperatorProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from aikeys_gateway.config import ServerSettings, UISettings
from cryptography import x509

from tests.integration.kube import (
    apply_allocation,
    apply_provider,
    create_key,
    create_provider_secret,
    gateway_knows,
    get,
    wait_for,
)

pytestmark = pytest.mark.integration
CHART = REPO_ROOT / "charts" / "aikeys"
VALUE_SETS = sorted((CHART / "ci").glob("*-values.yaml"))
MONITORING_CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %(plural)s.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: %(kind)s, plural: %(plural)s, singular: %(singular)s, listKind: %(kind)sList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""
CERT_MANAGER_KINDS = (("Certificate", "certificates"), ("Issuer", "issuers"))


def helm(cp: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(locate().helm), *args], capture_output=True, text=True, env=cp.env(), check=False, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, operator: OperatorProcess, gateway: GatewayProcess) -> ControlPlane:
    # the Prometheus Operator's and cert-manager's kinds, so those manifests can be validated by the server
    for group, kinds in (
        (
            "monitoring.coreos.com",
            (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules")),
        ),
        ("cert-manager.io", CERT_MANAGER_KINDS),
    ):
        for kind, plural in kinds:
            crd = MONITORING_CRDS.replace("monitoring.coreos.com", group)
            control_plane.kubectl(
                "apply", "-f", "-", stdin=crd % {"kind": kind, "plural": plural, "singular": kind.lower()}
            )
            control_plane.kubectl("wait", "--for=condition=Established", f"crd/{plural}.{group}")
    for ns in ("chart-render", "chart-install"):
        control_plane.kubectl("create", "namespace", ns, check=False)
    return control_plane


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda p: p.stem)
def test_lint_and_server_side_dry_run(cluster: ControlPlane, values: Path) -> None:
    lint = helm(cluster, "lint", str(CHART), "-f", str(values), "--strict")
    assert "0 chart(s) failed" in lint.stdout
    rendered = helm(cluster, "template", "aikeys", str(CHART), "-n", "chart-render", "-f", str(values)).stdout
    by_namespace: dict[str, list[Any]] = {}  # the release's namespace, and kube-system for one RoleBinding
    for doc in yaml.safe_load_all(rendered):
        if doc:
            by_namespace.setdefault(doc["metadata"].get("namespace", "chart-render"), []).append(doc)
    assert set(by_namespace) <= {"chart-render", "kube-system"}
    for ns, docs in by_namespace.items():
        applied = cluster.kubectl(
            "apply", "--dry-run=server", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(docs)
        )
        assert applied.stdout.count("(server dry run)") == len(docs)
        if ns == "chart-render":
            assert "deployment.apps/aikeys-gateway created (server dry run)" in applied.stdout
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    if "monitoring" in values.stem:
        assert {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    if "external-redis" in values.stem:
        assert "StatefulSet" not in kinds
    assert "APIService" in kinds  # the usage API is on by default
    if "cert-manager" in values.stem:
        assert {"Certificate", "NetworkPolicy"} <= kinds and "Issuer" not in kinds  # the user's ClusterIssuer
        [api] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "APIService"]
        assert (
            api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == "chart-render/aikeys-usage-api"
        )


def test_the_usage_right_ships_without_the_aggregated_api(cluster: ControlPlane) -> None:
    """/api/usage and the AI Usage page ask for `list keyusages` whether or not the usage API is served:
    the ClusterRole that gives it to view, edit and admin is there either way."""
    for enabled in ("true", "false"):
        rendered = helm(
            cluster, "template", "aikeys", str(CHART), "--set", f"usageAPI.enabled={enabled}"
        ).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        [reader] = [
            d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "aikeys-usage-reader"
        ]
        assert reader["rules"] == [
            {"apiGroups": ["usage.aikeys.dev"], "resources": ["keyusages"], "verbs": ["get", "list"]}
        ]
        for role in ("view", "edit", "admin"):
            assert reader["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{role}"] == "true"
        assert ("APIService" in {d["kind"] for d in docs}) is (enabled == "true")
    off = helm(
        cluster, "template", "aikeys", str(CHART), "--set", "usageAPI.aggregateToViewRoles=false"
    ).stdout
    assert "aikeys-usage-reader" not in off


@contextlib.contextmanager
def usage_api_released(cp: ControlPlane, usage_api: usageapi.UsageAPI) -> Iterator[None]:
    """An APIService name is cluster-wide: the test gateway's registration steps aside while a release
    installs its own, and comes back afterwards."""
    usageapi.unregister(cp)
    try:
        yield
    finally:
        usageapi.apply(cp, usage_api)
        usageapi.wait_available(cp)


def test_schema_rejects_bad_values_clearly(cluster: ControlPlane) -> None:
    cases = {
        ("--set", "gateway.replicas=zero"): "gateway/replicas",
        ("--set", "gateway.replica=2"): "additional properties 'replica' not allowed",
        ("--set", "redis.external.url=http://redis:6379"): "redis/external/url",
        ("--set", "ingress.tls.enabled=maybe"): "ingress/tls/enabled",
        ("--set", "image.pullPolicy=Sometimes"): "image/pullPolicy",
        ("--set", "usageAPI.port=443"): "usageAPI/port",
        ("--set", "usageAPI.certManager.issuerRef.kind=Vault"): "usageAPI/certManager/issuerRef/kind",
        ("--set", "operator.statusWritesPerSecond=0"): "operator/statusWritesPerSecond",
        ("--set", "operator.keyWorkers=0"): "operator/keyWorkers",
    }
    for args, message in cases.items():
        result = helm(cluster, "template", "aikeys", str(CHART), *args, check=False)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
    missing = helm(
        cluster, "template", "aikeys", str(CHART), "--set", "redis.bundled.enabled=false", check=False
    )
    assert "redis.external.url is required" in missing.stderr


def test_operator_settings_reach_its_environment(cluster: ControlPlane) -> None:
    """The control loop's bounds (status writes per second, lastUsedAt granularity, key workers)
    are chart values, rendered into the operator's environment."""
    args = ("--set", "operator.statusWritesPerSecond=5", "--set", "operator.keyWorkers=4")
    docs = yaml.safe_load_all(helm(cluster, "template", "aikeys", str(CHART), *args).stdout)
    operator = next(
        d for d in docs if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
    )
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AIKEYS_STATUS_WRITES_PER_SECOND"] == "5"
    assert env["AIKEYS_KEY_WORKERS"] == "4"
    assert env["AIKEYS_LAST_USED_GRANULARITY"] == "60"


def test_gateway_shutdown_and_client_bounds_come_from_the_values(cluster: ControlPlane) -> None:
    """terminationGracePeriodSeconds is derived from preStop + graceful + drain (+ 10 s to settle),
    so a pod is never killed while it reads a cut-short stream for its usage; the same values reach
    the preStop hook and the gateway's environment, which the gateway accepts."""

    def gateway(*args: str) -> dict[str, Any]:
        rendered = helm(cluster, "template", "aikeys", str(CHART), "-n", "chart-render", *args).stdout
        [deployment] = [
            d
            for d in yaml.safe_load_all(rendered)
            if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "aikeys-gateway"
        ]
        applied = cluster.kubectl(
            "apply", "--dry-run=server", "-n", "chart-render", "-f", "-", stdin=yaml.safe_dump(deployment)
        )
        assert "deployment.apps/aikeys-gateway created (server dry run)" in applied.stdout
        return deployment  # type: ignore[no-any-return]

    for args, (pre_stop, graceful, drain) in {
        (): (5, 30, 60),
        (
            "--set",
            "gateway.shutdown.preStopSeconds=3",
            "--set",
            "gateway.shutdown.gracefulSeconds=20",
            "--set",
            "gateway.shutdown.drainSeconds=120",
        ): (3, 20, 120),
    }.items():
        pod = gateway(*args)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        assert pod["terminationGracePeriodSeconds"] == pre_stop + graceful + drain + 10
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == pre_stop
        server = ServerSettings.from_env(env)
        assert server.graceful_seconds == graceful
        assert float(env["AIKEYS_STREAM_DRAIN_SECONDS"]) == drain
        assert (server.max_header_bytes, server.max_headers, server.header_timeout, server.idle_timeout) == (
            65536,
            100,
            10.0,
            5,
        )
        assert env["AIKEYS_BODY_TIMEOUT"] == "60"

    for value, message in {
        "gateway.shutdown.drainSeconds=-1": "gateway/shutdown/drainSeconds",
        "gateway.shutdown.preStopSeconds=0": "gateway/shutdown/preStopSeconds",
        "gateway.clients.idleTimeoutSeconds=0.5": "gateway/clients/idleTimeoutSeconds",
        "gateway.clients.maxHeaders=0": "gateway/clients/maxHeaders",
    }.items():
        result = helm(cluster, "template", "aikeys", str(CHART), "--set", value, check=False)
        assert result.returncode != 0 and message in result.stderr, (value, result.stderr)


def test_the_pages_are_on_by_default_behind_the_ingress(cluster: ControlPlane) -> None:
    """`helm install` serves the web pages (/ui through the Ingress) with a generated session key;
    the pages name the public URL when the chart knows it (gateway.publicURL, else the Ingress
    host), else the one the browser used; `gateway.ui.enabled=false` turns them off."""

    def render(*args: str) -> tuple[dict[str, str | None], list[str], set[str]]:
        rendered = helm(cluster, "template", "aikeys", str(CHART), "-n", "chart-render", *args).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        [gateway] = [
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "aikeys-gateway"
        ]
        env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
        [ingress] = [d for d in docs if d["kind"] == "Ingress"]
        paths = [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]]
        return env, paths, {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}

    env, paths, secrets = render()
    assert env["AIKEYS_UI"] == "true" and paths == ["/api", "/ui"] and "aikeys-ui-session" in secrets
    assert "AIKEYS_UI_SESSION_KEY" in env and "AIKEYS_GATEWAY_URL" not in env  # no host: the browser's URL
    settings = UISettings.from_env(
        {k: v for k, v in env.items() if v is not None} | {"AIKEYS_UI_SESSION_KEY": "k" * 32}
    )
    assert (settings.enabled, settings.secure_cookies, settings.public_url) == (True, "auto", None)
    tls = (
        "--set",
        "ingress.host=ai.example.com",
        "--set",
        "ingress.tls.enabled=true",
        "--set",
        "ingress.tls.secretName=t",
    )
    env, _, _ = render(*tls)
    assert env["AIKEYS_GATEWAY_URL"] == "https://ai.example.com/api/openai/v1"
    env, _, _ = render(*tls, "--set", "gateway.publicURL=https://llm.example.org/api/openai/v1")
    assert env["AIKEYS_GATEWAY_URL"] == "https://llm.example.org/api/openai/v1"
    env, paths, secrets = render("--set", "gateway.ui.enabled=false")
    assert "AIKEYS_UI" not in env and paths == ["/api"] and "aikeys-ui-session" not in secrets


def test_alert_rules_pass_promtool(cluster: ControlPlane, tmp_path: Path) -> None:
    rendered = helm(
        cluster, "template", "aikeys", str(CHART), "-f", str(CHART / "ci" / "monitoring-values.yaml")
    ).stdout
    [rule] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "PrometheusRule"]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {
        "AIKeysAllocationBudget50Percent",
        "AIKeysAllocationBudget80Percent",
        "AIKeysAllocationBudget100Percent",
        "AIKeysAllocationExhausted",
        "AIKeysLedgerErrors",
        "AIKeysUpstreamErrorRate",
    } == set(alerts)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    check = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout


def test_dashboard_is_valid_and_its_queries_parse(cluster: ControlPlane, tmp_path: Path) -> None:
    rendered = helm(cluster, "template", "aikeys", str(CHART)).stdout
    [cm] = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["aikeys.json"])
    assert dash["uid"] == "aikeys-overview"
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"] for p in panels)
    for wanted in (
        "by namespace",
        "by model",
        "by allocation",
        "by key",
        "Top 10 keys",
        "Budget remaining",
        "Tokens",
    ):
        assert wanted in titles
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    # every query is valid PromQL once Grafana's variables are substituted (promtool parses them as rules)
    rules = [
        {
            "record": f"aikeys:dashboard:{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$__range", "7d").replace("$namespace", ".*"),
        }
        for i, e in enumerate(exprs)
    ]
    (tmp_path / "dash-rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    check = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "dash-rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_install_creates_everything_and_uninstall_keeps_crs(
    cluster: ControlPlane, usage_api: usageapi.UsageAPI
) -> None:
    with usage_api_released(cluster, usage_api):
        install = helm(cluster, "install", "aikeys", str(CHART), "-n", "chart-install")
        assert "STATUS: deployed" in install.stdout
        assert "kubectl apply -n team-a" in install.stdout  # NOTES tell how to create a first key
        manifest = helm(cluster, "get", "manifest", "aikeys", "-n", "chart-install").stdout
        for doc in yaml.safe_load_all(manifest):
            if not doc:
                continue
            kind, name = doc["kind"], doc["metadata"]["name"]
            cluster_wide = kind in ("ClusterRole", "ClusterRoleBinding", "APIService")
            scope = [] if cluster_wide else ["-n", doc["metadata"].get("namespace", "chart-install")]
            assert cluster.kubectl("get", kind, name, *scope, check=False).returncode == 0, (
                f"{kind}/{name} missing"
            )
        ca = _check_usage_api_certificate(cluster, "chart-install", "aikeys")
        helm(cluster, "upgrade", "aikeys", str(CHART), "-n", "chart-install")
        assert (
            _check_usage_api_certificate(cluster, "chart-install", "aikeys") == ca
        )  # kept: caBundle stays valid
        apply_allocation(cluster, "chart-install", "survives", "1")
        helm(cluster, "uninstall", "aikeys", "-n", "chart-install")
        assert cluster.kubectl("get", "apiservice", usageapi.APISERVICE, check=False).returncode != 0
    assert (
        cluster.kubectl("get", "deployment", "aikeys-gateway", "-n", "chart-install", check=False).returncode
        != 0
    )
    # CRDs (and so everyone's keys and budgets) are kept: helm never deletes what it installed from crds/
    assert get(cluster, "allocation", "survives", "chart-install") is not None
    assert cluster.kubectl("get", "crd", "aikeys.aikeys.dev", check=False).returncode == 0


def _json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def _check_usage_api_certificate(cp: ControlPlane, ns: str, release: str) -> bytes:
    """The chart's serving certificate: for the Service's DNS name, signed by the CA in the caBundle.
    Returns that CA (PEM)."""
    secret = json.loads(
        cp.kubectl("get", "secret", f"{release}-usage-api-tls", "-n", ns, "-o", "json").stdout
    )
    api = json.loads(cp.kubectl("get", "apiservice", usageapi.APISERVICE, "-o", "json").stdout)
    assert api["spec"]["caBundle"] == secret["data"]["ca.crt"]
    assert api["spec"]["service"] == {"name": f"{release}-usage-api", "namespace": ns, "port": 443}
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{release}-usage-api.{ns}.svc" in names.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    return base64.b64decode(secret["data"]["ca.crt"])


def _kubeconfig_for(cp: ControlPlane, namespace: str, sa: str, path: Path) -> Path:
    token = cp.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": sa, "user": {"token": token}}]
    config["contexts"][0]["context"].update(user=sa, namespace=namespace)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def rbac_release(
    cluster: ControlPlane, operator: OperatorProcess, usage_api: usageapi.UsageAPI
) -> Iterator[str]:
    ns = "aikeys-rbac"
    cluster.kubectl("create", "namespace", ns, check=False)
    with usage_api_released(cluster, usage_api):
        helm(cluster, "install", "proof", str(CHART), "-n", ns)
        operator.stop()  # one operator at a time: the chart's takes over for this test
        try:
            yield ns
        finally:
            operator.start()
            helm(cluster, "uninstall", "proof", "-n", ns, check=False)


def test_rbac_proof_with_the_charts_service_accounts(
    cluster: ControlPlane,
    rbac_release: str,
    redis_server: RedisServer,
    mock_upstream_process: MockUpstreamProcess,
    tmp_path: Path,
) -> None:
    ns = rbac_release
    op_config = _kubeconfig_for(cluster, ns, "proof-aikeys-operator", tmp_path / "operator.kubeconfig")
    gw_config = _kubeconfig_for(cluster, ns, "proof-aikeys-gateway", tmp_path / "gateway.kubeconfig")
    env = {"AIKEYS_CREDENTIALS_SECRET": f"{ns}/aikeys-provider-credentials", "POD_NAMESPACE": ns}
    op = OperatorProcess(op_config, redis_server.url, tmp_path / "operator.log", extra_env=env).start()
    # the gateway also serves the usage API with the chart's certificate: it must read the front
    # proxy's settings in kube-system with its own identity, or it does not start
    tls = json.loads(
        cluster.kubectl("get", "secret", "proof-aikeys-usage-api-tls", "-n", ns, "-o", "json").stdout
    )
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(tls["data"][name]))
    usage = usageapi.UsageAPI(free_port(), tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "tls.crt")
    gw = GatewayProcess(
        gw_config,
        redis_server.url,
        tmp_path / "gateway.log",
        env["AIKEYS_CREDENTIALS_SECRET"],
        extra_env={"POD_NAMESPACE": ns, **usage.env()},
    )
    try:
        gw.start()
        team = "rbac-team"
        cluster.kubectl("create", "namespace", team)
        create_provider_secret(cluster, team, "upstream", "sk-rbac")
        apply_provider(
            cluster,
            team,
            mock_upstream_process.url,
            {"m": ("1", "1")},
            credentialsSecretRef={"name": "upstream"},
        )
        apply_allocation(cluster, team, "a", "1")
        key = create_key(cluster, team, "proof", "a")
        gateway_knows(gw.openai_url, key)
        wait_for(
            lambda: (
                f"{team}.mock"
                in (get(cluster, "secret", "aikeys-provider-credentials", ns) or {}).get("data", {})
            ),
            30,
            "the projected credentials",
        )
        mock_upstream_process.clear_requests()
        reply = openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0).chat.completions.create(
            model=f"{team}:mock/m", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.choices[0].message.content
        assert mock_upstream_process.requests()[-1]["headers"]["Authorization"] == "Bearer sk-rbac"
        wait_for(
            lambda: (get(cluster, "aikey", "proof", team) or {}).get("status", {}).get("lastUsedAt"),
            15,
            "status updated by the operator's service account",
        )
        assert "Forbidden" not in op.log() and "forbidden" not in gw.log()
    finally:
        gw.stop()
        op.stop()
    # what the gateway's identity may not do
    gw_sa = f"system:serviceaccount:{ns}:proof-aikeys-gateway"
    for args in (
        ["get", "secrets", "-n", team],
        ["get", "secrets", "-n", ns],
        ["list", "secrets", "-A"],
        ["create", "aikeys", "-n", team],
        ["patch", "aikeys/status", "-n", team],
    ):
        assert cluster.kubectl("auth", "can-i", *args, f"--as={gw_sa}", check=False).stdout.strip() == "no", (
            args
        )
    for args in (
        ["get", "secret/aikeys-provider-credentials", "-n", ns],
        ["get", "configmap/extension-apiserver-authentication", "-n", "kube-system"],
        ["create", "subjectaccessreviews.authorization.k8s.io"],
    ):
        assert cluster.kubectl("auth", "can-i", *args, f"--as={gw_sa}").stdout.strip() == "yes", args
    # whoever holds the chart's usage-reader role in a namespace may read its usage; the role is
    # labelled to join view, edit and admin (which the controller-manager's clusterrole-aggregation
    # controller does on a real cluster). Asked with a SubjectAccessReview: `kubectl auth can-i`
    # needs discovery, and this release's API has no pods here.
    reader = _json(cluster, "clusterrole", "proof-aikeys-usage-reader")
    for role in ("view", "edit", "admin"):
        assert reader["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{role}"] == "true"
    viewer = "viewer@example.com"
    cluster.kubectl(
        "create",
        "rolebinding",
        "usage",
        "-n",
        team,
        "--clusterrole=proof-aikeys-usage-reader",
        f"--user={viewer}",
    )
    for where, allowed in ((team, True), (ns, False)):
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": viewer,
                "resourceAttributes": {
                    "verb": "list",
                    "group": "usage.aikeys.dev",
                    "resource": "keyusages",
                    "namespace": where,
                },
            },
        }
        answer = cluster.kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(review)).stdout
        assert json.loads(answer)["status"].get("allowed", False) is allowed, where
    denied = cluster.kubectl(
        "get", "secret", "upstream", "-n", team, f"--kubeconfig={gw_config}", check=False
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_image_is_consistent_with_the_package(tmp_path: Path) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for entry in ("aikeys-gateway", "aikeys-operator"):
        assert entry in scripts
    assert 'ENTRYPOINT ["aikeys-gateway"]' in dockerfile
    chart = (CHART / "templates" / "operator.yaml").read_text()
    assert 'command: ["aikeys-operator"]' in chart
    for source in ("aikeys", "operator", "gateway", "pyproject.toml", "README.md"):
        assert (REPO_ROOT / source).exists()
        assert f"COPY {source}" in dockerfile or source in dockerfile
    # the wheel the image installs carries both packages, the Lua scripts and the entry points
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("aikeys-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "aikeys/ledger/scripts/reserve.lua" in names
    assert any(n.startswith("aikeys_operator/") for n in names)
    assert any(n.startswith("aikeys_gateway/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "aikeys-gateway = aikeys_gateway.main:main" in text
    assert "aikeys-operator = aikeys_operator.main:main" in text


def test_kind_config_is_ingress_ready() -> None:
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())
    [node] = config["nodes"]
    assert "ingress-ready=true" in node["kubeadmConfigPatches"][0]
    assert {(m["containerPort"], m["hostPort"]) for m in node["extraPortMappings"]} == {(80, 80), (443, 443)}


def test_examples_are_valid_objects(cluster: ControlPlane) -> None:
    docs = [
        d
        for f in sorted((REPO_ROOT / "examples").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    for ns in namespaces:
        cluster.kubectl("create", "namespace", ns["metadata"]["name"], check=False)
    rest = [d for d in docs if d["kind"] != "Namespace"]
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(rest)).stdout
    assert out.count("(server dry run)") == len(rest)
