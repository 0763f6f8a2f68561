"""deploy/k8s: every kustomization rendered by `kubectl kustomize`, every manifest validated
offline against the Kubernetes schemas, and the properties docs/deploy.md promises asserted.

Tests that take `target` run once per kustomization (base and each overlay; see conftest).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest

from shelfmark.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# The oldest Kubernetes release Shelfmark supports and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
ROLES = {"serve", "worker", "beat", "migrate", "sip2"}
SECRET_NAME = "shelfmark-secrets"
# Settings that are secrets: they come from the Secret, never from a manifest.
SECRET_SETTINGS = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BROKER_URL", "SMTP_URL"}

Docs = tuple[dict[str, Any], ...]


def by_kind(docs: Docs, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def workloads(docs: Docs) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, its pod spec) for every Deployment and Job."""
    return [
        (doc, doc["spec"]["template"]["spec"])
        for doc in docs
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    ]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def deployment(docs: Docs, component: str) -> dict[str, Any]:
    (found,) = [
        doc
        for doc in by_kind(docs, "Deployment").values()
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def environment(
    container: dict[str, Any], config_maps: dict[str, dict[str, Any]], image_env: dict[str, str]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it over the image's ENV: its envFrom
    ConfigMaps in order, then its own `env` (a Secret's values are not known here)."""
    env = dict(image_env)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= config_maps[source["configMapRef"]["name"]].get("data", {})
    env |= {variable["name"]: variable["value"] for variable in container.get("env", [])
            if "value" in variable}  # fmt: skip
    return env


def volume_at(
    pod: dict[str, Any], container: dict[str, Any], path: PurePosixPath
) -> tuple[dict[str, Any], PurePosixPath]:
    """The volume that holds `path` in `container` (that of the deepest mount above it), and
    where in that volume."""
    name = container["name"]
    mounts = [m for m in container.get("volumeMounts", []) if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{name}: {path} would be on the read-only root file system"
    mount = max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))
    assert "subPathExpr" not in mount, f"{name}: {path} is in a folder of each pod's own"
    assert not mount.get("readOnly"), f"{name}: {path} is read-only"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    inside = PurePosixPath(mount.get("subPath", "")) / path.relative_to(mount["mountPath"])
    return volume, inside


QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?")
UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}  # fmt: skip


def quantity_bytes(quantity: str) -> float:
    """A Kubernetes quantity of storage (`10Gi`), in bytes."""
    match = QUANTITY.fullmatch(quantity)
    assert match, f"not a storage quantity: {quantity}"
    return float(match.group(1)) * UNITS[match.group(2)]


def test_every_kustomization_is_covered(all_kustomizations: list[str]) -> None:
    assert {"base", "overlays/dev", "overlays/prod"} <= set(all_kustomizations)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(rendered: Docs, version: str) -> None:
    errors = []
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_parts_are_there(rendered: Docs) -> None:
    kinds = {doc["kind"] for doc in rendered}
    assert {
        "Deployment", "Job", "Service", "Ingress", "ConfigMap",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim",
    } <= kinds  # fmt: skip
    for component in ("api", "worker", "beat"):
        deployment(rendered, component)


def test_api_probes(rendered: Docs) -> None:
    api = deployment(rendered, "api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    ports = {port["name"] for port in container["ports"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    startup = container["startupProbe"]
    # Liveness only starts once the app has started; give a cold start a minute.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_rollouts_never_drop_capacity_and_beat_stays_single(rendered: Docs) -> None:
    for name, doc in by_kind(rendered, "Deployment").items():
        strategy = doc["spec"]["strategy"]
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] == "beat":
            # Two schedulers would send every scheduled job twice.
            assert strategy == {"type": "Recreate"}
            assert doc["spec"]["replicas"] == 1
            continue
        assert strategy["type"] == "RollingUpdate", name
        assert strategy["rollingUpdate"]["maxUnavailable"] in (0, "0%"), name


def test_autoscalers_target_deployments_that_leave_them_the_count(rendered: Docs) -> None:
    deployments = by_kind(rendered, "Deployment")
    scaled = set()
    for name, hpa in by_kind(rendered, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment", name
        assert target["name"] in deployments, f"{name} scales a missing {target['name']}"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # Otherwise every `kubectl apply` would reset the count the autoscaler chose.
        assert "replicas" not in deployments[target["name"]]["spec"]
        scaled.add(deployments[target["name"]]["metadata"]["labels"]["app.kubernetes.io/component"])
    assert {"api", "worker"} <= scaled
    assert "beat" not in scaled


def test_budgets_and_services_select_real_pods(rendered: Docs) -> None:
    pods = {name: doc["spec"]["template"] for name, doc in by_kind(rendered, "Deployment").items()}
    budgeted = set()
    for name, pdb in by_kind(rendered, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [d for d, t in pods.items() if selects(selector, t["metadata"]["labels"])]
        assert len(matched) == 1, f"PDB {name} selects {matched}"
        budgeted.add(matched[0])
    assert {deployment(rendered, c)["metadata"]["name"] for c in ("api", "worker")} <= budgeted
    for name, service in by_kind(rendered, "Service").items():
        selector = service["spec"]["selector"]
        matched = [d for d, t in pods.items() if selects(selector, t["metadata"]["labels"])]
        assert len(matched) == 1, f"Service {name} selects {matched}"
        ports = {p["name"] for c in pods[matched[0]]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no port {port['targetPort']}"


def test_ingress_routes_to_the_api_service(rendered: Docs) -> None:
    services = by_kind(rendered, "Service")
    api_service = services["shelfmark-api"]
    for ingress in by_kind(rendered, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == "shelfmark-api"
                assert backend["port"]["name"] in {p["name"] for p in api_service["spec"]["ports"]}


def test_every_container_is_bounded_and_unprivileged(rendered: Docs) -> None:
    for workload, pod in workloads(rendered):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] != 0, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        # Service links would inject e.g. SIP2_PORT=tcp://..., which the settings would read.
        assert pod["enableServiceLinks"] is False, name
        for container in containers(pod):
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{name} {bound}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert context.get("runAsUser", security["runAsUser"]) != 0, name


def test_graceful_shutdown(rendered: Docs) -> None:
    for workload, pod in workloads(rendered):
        if workload["kind"] == "Job":
            continue
        for container in pod["containers"]:
            if container.get("ports"):
                # Traffic stops arriving before SIGTERM, then the server drains in the rest.
                command = container["lifecycle"]["preStop"]["exec"]["command"]
                assert command[0] == "sleep"
                assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + 20
    worker = deployment(rendered, "worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


def test_settings_come_from_a_configmap_and_a_secret_reference(rendered: Docs) -> None:
    config_maps = by_kind(rendered, "ConfigMap")
    assert not by_kind(rendered, "Secret"), "the Secret is referenced, never committed"
    for workload, pod in workloads(rendered):
        for container in containers(pod):
            sources = container["envFrom"]
            config = [s["configMapRef"]["name"] for s in sources if "configMapRef" in s]
            secrets = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
            assert config, workload["metadata"]["name"]
            assert all(name in config_maps for name in config)
            assert secrets == [SECRET_NAME]
            inline = {variable["name"] for variable in container.get("env", [])}
            assert not inline & SECRET_SETTINGS
    for config_map in config_maps.values():
        assert not set(config_map["data"]) & SECRET_SETTINGS


def test_roles_run_the_image_commands(rendered: Docs, image_command: list[str]) -> None:
    images = set()
    for _workload, pod in workloads(rendered):
        for container in containers(pod):
            assert "command" not in container, "the image's ENTRYPOINT (shelfmark) is kept"
            assert container["args"][0] in ROLES
            images.add(container["image"])
    assert len(images) == 1, f"one image for every role, not {images}"
    (api,) = deployment(rendered, "api")["spec"]["template"]["spec"]["containers"]
    # The image's default command, less the embedded worker and beat: each api replica would
    # otherwise run a scheduler of its own.
    assert api["args"] == [*image_command[1:], "--no-worker"]
    # An explicit concurrency: Celery's default counts the node's CPUs, not the pod's limit.
    for component, args in (("worker", ["worker", "--concurrency", "2"]), ("beat", ["beat"])):
        (container,) = deployment(rendered, component)["spec"]["template"]["spec"]["containers"]
        assert container["args"] == args


def test_api_and_workers_share_one_read_write_many_claim_for_uploads_and_reports(
    rendered: Docs,
    runtime_env: dict[str, str],
    folders_shared_by_roles: Callable[[str], dict[str, PurePosixPath]],
    sharing_roles: tuple[str, ...],
) -> None:
    """An upload saved by any api pod is found by any worker, and a report written by any
    worker is downloaded through any api pod: in every pod of those roles, on every node, the
    folders the code uses resolve to the same place in one ReadWriteMany claim."""
    config_maps = by_kind(rendered, "ConfigMap")
    claims = by_kind(rendered, "PersistentVolumeClaim")
    places: dict[str, set[tuple[str, PurePosixPath]]] = {}
    roles = set()
    for workload, pod in workloads(rendered):
        for container in pod["containers"]:
            if container["args"][0] not in sharing_roles:
                continue
            roles.add(container["args"][0])
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            home = environment(container, config_maps, runtime_env)["SHELFMARK_HOME"]
            assert PurePosixPath(home).is_absolute(), f"{where}: SHELFMARK_HOME={home}"
            for folder, path in folders_shared_by_roles(home).items():
                volume, inside = volume_at(pod, container, path)
                claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                assert claim, f"{where}: {folder} ({path}) is on a volume of the pod's own"
                assert claim in claims, f"{where}: no PersistentVolumeClaim {claim}"
                places.setdefault(folder, set()).add((claim, inside))
    assert roles == set(sharing_roles)
    assert set(places) == set(folders_shared_by_roles("/"))
    for folder, found in places.items():
        assert len(found) == 1, f"{folder} is in different places: {found}"
        ((claim, _),) = found
        spec = claims[claim]["spec"]
        # Pods on several nodes mount it at once: the autoscaled api and workers, and a
        # rollout's new pod beside the old one.
        assert "ReadWriteMany" in spec["accessModes"], claim
        assert spec.get("volumeMode", "Filesystem") == "Filesystem", claim


def test_the_shared_claim_has_room_for_uploads(rendered: Docs) -> None:
    settings = {k: v for c in by_kind(rendered, "ConfigMap").values() for k, v in c["data"].items()}
    largest = int(
        settings.get("UPLOAD_MAX_BYTES", Settings.model_fields["upload_max_bytes"].default)
    )
    for name, claim in by_kind(rendered, "PersistentVolumeClaim").items():
        requested = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
        # Uploads are kept (an import can be run again); reports are small.
        assert requested >= 10 * largest, f"{name}: room for fewer than ten of the largest uploads"


def test_the_migration_job_runs_once(rendered: Docs) -> None:
    (job,) = by_kind(rendered, "Job").values()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    assert pod["restartPolicy"] == "Never"
    assert 1 <= job["spec"]["backoffLimit"] <= 5
    assert job["spec"]["activeDeadlineSeconds"] > 0


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_overlays_name_a_namespace_and_a_released_image(
    overlay: str, render_kustomization: Callable[[str], Docs]
) -> None:
    docs = render_kustomization(overlay)
    (namespace,) = by_kind(docs, "Namespace").values()
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["kind"]
    for _workload, pod in workloads(docs):
        for container in containers(pod):
            repository, _, tag = container["image"].rpartition(":")
            assert "/" in repository, "a registry, not a local name"
            assert tag not in {"", "latest"}


def test_prod_is_highly_available(render_kustomization: Callable[[str], Docs]) -> None:
    docs = render_kustomization("overlays/prod")
    assert by_kind(docs, "HorizontalPodAutoscaler")["shelfmark-api"]["spec"]["minReplicas"] >= 2
    assert by_kind(docs, "Ingress")["shelfmark"]["spec"]["tls"]
    deployment(docs, "sip2")


# The selector docs/deploy.md's upgrade procedure applies first, before everything else.
MIGRATE_FIRST = "app.kubernetes.io/component in (config,migrate)"


def test_the_migration_applies_alone_with_what_it_reads(rendered: Docs) -> None:
    components = {"config", "migrate"}
    assert f"-l '{MIGRATE_FIRST}'" in (ROOT / "docs" / "deploy.md").read_text()
    first = [
        doc
        for doc in rendered
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") in components
    ]
    assert {doc["kind"] for doc in first} == {"ConfigMap", "Job"}
    names = {doc["metadata"]["name"] for doc in first if doc["kind"] == "ConfigMap"}
    (job,) = by_kind(rendered, "Job").values()
    for container in containers(job["spec"]["template"]["spec"]):
        for source in container["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in names
