"""The Kubernetes manifests of docs/dapr-component.md (deploy/kubernetes/): the Deployments pass the
Kubernetes schemas (kubernetes-validate, strict: no unknown fields), and both follow the recipe's
rules (the image, its user, fsGroup, the injector's annotations, scopes, the start order).
Dapr's Component is a custom resource with no schema there; its fields are checked here by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

yaml = pytest.importorskip("yaml")  # PyYAML: a dependency of kubernetes-validate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
UID = 65532  # the image's user (Dockerfile) and daprd's


def documents(name: str) -> List[Dict[str, Any]]:
    with open(DEPLOY / name, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def of_kind(kind: str) -> List[Dict[str, Any]]:
    return [d for p in sorted(DEPLOY.glob("*.yaml")) for d in documents(p.name) if d["kind"] == kind]


def test_the_deployments_pass_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import latest_version

    deployments = of_kind("Deployment")
    assert len(deployments) == 2
    for deployment in deployments:
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_a_broken_deployment_is_refused() -> None:
    """The validator is not a no-op: a misspelt field fails."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import latest_version

    bad = json.loads(json.dumps(of_kind("Deployment")[0]))
    bad["spec"]["template"]["spec"]["securityContext"]["fsGroupp"] = UID
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, latest_version(), strict=True)


def _pod(deployment: Dict[str, Any]) -> Dict[str, Any]:
    return deployment["spec"]["template"]


def test_sidecar_variant() -> None:
    (deployment,) = documents("deployment.yaml")
    pod = _pod(deployment)
    annotations = pod["metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true"
    assert "dapr.io/enable-native-sidecar" not in annotations  # daprd would start before the component
    containers = pod["spec"]["containers"]
    component = containers[0]  # first: the pod's containers start in order, daprd after them
    assert annotations["dapr.io/pluggable-components"] == component["name"]
    assert component["image"].startswith("ghcr.io/") and ":" in component["image"].rsplit("/", 1)[1]
    assert "kitex.sock" in " ".join(component["lifecycle"]["postStart"]["exec"]["command"])
    security = component["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], security["runAsNonRoot"]) == (UID, UID, True)
    assert pod["spec"]["securityContext"]["fsGroup"] == UID
    (binding,) = documents("component.yaml")
    assert binding["spec"]["type"] == "bindings.kitex"
    assert binding["scopes"] == [annotations["dapr.io/app-id"]]


def test_injected_variant() -> None:
    binding, deployment = documents("injected.yaml")
    assert binding["kind"] == "Component" and binding["spec"]["type"] == "bindings.kitex"
    container = json.loads(binding["metadata"]["annotations"]["dapr.io/component-container"])
    assert container["image"].startswith("ghcr.io/")
    assert (container["securityContext"]["runAsUser"], container["securityContext"]["runAsGroup"]) == (UID, UID)
    pod = _pod(deployment)
    assert pod["metadata"]["annotations"]["dapr.io/inject-pluggable-components"] == "true"
    assert binding["scopes"] == [pod["metadata"]["annotations"]["dapr.io/app-id"]]
    assert pod["spec"]["securityContext"]["fsGroup"] == UID


def test_the_docs_show_the_same_image() -> None:
    images = {c["image"] for d in of_kind("Deployment") for c in _pod(d)["spec"]["containers"]
              if c["name"] == "kitex-component"}
    (image,) = images
    page = (ROOT / "docs" / "dapr-component.md").read_text(encoding="utf-8")
    assert page.count(image) >= 2
