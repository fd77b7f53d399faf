"""deploy/k8s/: every document valid for a pinned Kubernetes (kubernetes-validate's own schemas,
offline, strict: an unknown field is an error), and the rest the schemas cannot see: probes on
the right paths, locked-down pods, grace periods past the drain, and an HPA whose metric
Tapedeck's /metrics really exposes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TapedeckFactory

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.33.0"  # a version every supported cluster runs or has passed
Doc = dict[str, Any]


def documents() -> list[Doc]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> Doc:
    (found,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def deployments() -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == "Deployment"}


def container(deployment: Doc) -> Doc:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    found: Doc = only
    return found


def label(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("doc", documents(), ids=label)
def test_document_is_valid_for_kubernetes(doc: Doc) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises ValidationError


def test_the_validation_refuses_a_misspelt_field() -> None:
    web = find("Deployment", "tapedeck-web")
    container(web)["readinesProbe"] = container(web).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES, strict=True)


def test_every_procfile_process_has_a_deployment_running_it() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    processes = {
        name: command.split()[1] for name, _, command in (line.partition(": ") for line in lines if line)
    }
    assert {name: container(deployments()[f"tapedeck-{name}"])["args"][0] for name in processes} == processes


def test_web_is_ready_on_readyz_alive_on_healthz_and_twice() -> None:
    web = find("Deployment", "tapedeck-web")
    spec = container(web)
    (port,) = spec["ports"]
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert str(port["containerPort"]) == spec["args"][spec["args"].index("--port") + 1]
    assert web["spec"]["replicas"] == 2


def test_the_service_and_the_disruption_budget_select_the_web_pods() -> None:
    pods = find("Deployment", "tapedeck-web")["spec"]["template"]["metadata"]["labels"]
    service = find("Service", "tapedeck-web")
    assert service["spec"]["selector"] == pods
    assert (
        service["spec"]["ports"][0]["targetPort"]
        == container(find("Deployment", "tapedeck-web"))["ports"][0]["name"]
    )
    budget = find("PodDisruptionBudget", "tapedeck-web")
    assert budget["spec"]["selector"]["matchLabels"] == pods and budget["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("name", deployments())
def test_pods_are_locked_down_and_bounded(name: str) -> None:
    pod = deployments()[name]["spec"]["template"]["spec"]
    spec = container(deployments()[name])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}
    }  # fmt: skip
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][bound]), bound
    # Read-only root: whatever must be written has a volume of its own.
    assert "/tmp" in {m["mountPath"] for m in spec["volumeMounts"]}


def test_the_image_runs_as_the_pods_user() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for pod in (d["spec"]["template"]["spec"] for d in deployments().values()):
        user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        assert f"\nUSER {user}\n" in dockerfile


@pytest.mark.parametrize("name", deployments())
def test_pods_take_their_settings_from_the_configmap_and_the_secret(name: str) -> None:
    sources = container(deployments()[name])["envFrom"]
    assert sources == [
        {"configMapRef": {"name": "tapedeck-config"}},
        {"secretRef": {"name": "tapedeck-secrets"}},
    ]


def test_the_secret_holds_placeholders_only() -> None:
    secret = find("Secret", "tapedeck-secrets")
    assert "data" not in secret and set(secret["stringData"].values()) == {""}


@pytest.mark.parametrize("name", ["tapedeck-worker", "tapedeck-deliver"])
def test_grace_period_outlasts_the_worker_drain(name: str) -> None:
    drain_s = int(find("ConfigMap", "tapedeck-config")["data"]["WORKER_DRAIN_S"])
    assert deployments()[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain_s


def test_the_hpa_alone_sizes_the_workers() -> None:
    hpa = find("HorizontalPodAutoscaler", "tapedeck-worker")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "tapedeck-worker")
    assert "replicas" not in deployments()["tapedeck-worker"]["spec"]  # else each apply resets it
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def external_metric() -> tuple[str, dict[str, str]]:
    (metric,) = find("HorizontalPodAutoscaler", "tapedeck-worker")["spec"]["metrics"]
    assert metric["type"] == "External"
    name: str = metric["external"]["metric"]["name"]
    labels: dict[str, str] = metric["external"]["metric"]["selector"]["matchLabels"]
    return name, labels


def test_prometheus_adapter_serves_the_hpas_metric() -> None:
    name, _ = external_metric()
    rules = yaml.safe_load(find("ConfigMap", "adapter-config")["data"]["config.yaml"])["externalRules"]
    served = [r for r in rules if r["name"]["as"] == name]
    assert len(served) == 1 and served[0]["seriesQuery"].startswith(name + "{")
    assert "<<.LabelMatchers>>" in served[0]["metricsQuery"]  # the HPA's selector reaches the query


@pytest.fixture
def series(tapedeck_local: TapedeckFactory) -> dict[str, list[dict[str, str]]]:
    """Each gauge /metrics exposes, with the label sets of its series."""
    with tapedeck_local() as client:
        text = client.get("/metrics").text
    return {f.name: [s.labels for s in f.samples] for f in text_string_to_metric_families(text)}


def test_tapedeck_exposes_the_hpas_metric_with_its_labels(series: dict[str, list[dict[str, str]]]) -> None:
    name, labels = external_metric()
    assert any(labels.items() <= found.items() for found in series[name]), series.get(name)


def test_prometheus_scrapes_the_web_service_with_the_namespace_label_the_adapter_matches() -> None:
    (job,) = yaml.safe_load((ROOT / "deploy" / "prometheus" / "scrape.yml").read_text())["scrape_configs"]
    service = find("Service", "tapedeck-web")
    keep = next(r for r in job["relabel_configs"] if r.get("action") == "keep")
    assert keep["regex"] == f"{service['metadata']['name']};{service['spec']['ports'][0]['name']}"
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [service["metadata"]["namespace"]]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"
    assert "namespace" in {r.get("target_label") for r in job["relabel_configs"]}
