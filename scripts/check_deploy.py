"""Check the deployment files against the code, without a cluster or a Docker engine.

    python scripts/check_deploy.py [--root DIR] [--no-external]

- every YAML file under deploy/ and docker-compose.yml parses;
- every Kubernetes object has apiVersion, kind, metadata.name and what its kind needs
  (Deployment selectors match their pod labels, Services select a Deployment's pods and
  name one of its ports, HPAs scale an existing Deployment, envFrom names an existing
  ConfigMap/Secret, ...), and kustomization.yaml lists exactly the files present;
- compose services reference only defined services and volumes;
- every queue of `workers.app.queues_for` (all systems enabled) is consumed by a worker,
  in compose and in Kubernetes, and there is exactly one beat in each;
- each compose sandbox is reachable with the credentials the bridge is given (the
  sandbox's own `adapter_env`), and its webhooks can be verified (signed, or carrying
  the system's path token);
- with `kubeconform` on PATH, it validates the manifests; with a Docker Compose client
  (`docker compose` or `docker-compose`), `config -q` must pass.

Exits 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = "deploy"
COMPOSE_FILE = "docker-compose.yml"
KUSTOMIZATION = "kustomization.yaml"
YAML_SUFFIXES = (".yaml", ".yml")

# The pod-level kinds we ship, and the path to their pod spec.
POD_TEMPLATES = {"Deployment": ("spec", "template"), "Job": ("spec", "template")}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class Doc:
    """One YAML document: where it came from and what it holds."""

    def __init__(self, path: Path, index: int, data: Any) -> None:
        self.path = path
        self.index = index
        self.data = data

    @property
    def where(self) -> str:
        return f"{self.path.name}#{self.index}"

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", "")) if isinstance(self.data, dict) else ""

    @property
    def name(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""


# -- helpers -----------------------------------------------------------------------------------
def dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def load_yaml(path: Path) -> tuple[list[Any], list[str]]:
    """All documents of a file (empty ones dropped), or the parse error."""
    try:
        with path.open(encoding="utf-8") as handle:
            docs = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    except (OSError, yaml.YAMLError) as err:
        return [], [f"{path}: does not parse: {err}"]
    return docs, []


def yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)


def expected_systems() -> list[str]:
    """Every built-in system (the registry's), i.e. POSBRIDGE_SYSTEMS with all enabled."""
    from bridge.adapters import registry

    return sorted(registry.available([]))


def expected_queues(systems: Iterable[str] | None = None) -> list[str]:
    from bridge.config import Settings
    from workers.app import queues_for

    enabled = list(systems) if systems is not None else expected_systems()
    return queues_for(Settings(systems=enabled))


def worker_queues(args: list[str]) -> list[str] | None:
    """The queues of a `posbridge worker ...` argument list (None: all of them)."""
    for i, arg in enumerate(args):
        if arg in ("-Q", "--queues") and i + 1 < len(args):
            return [q.strip() for q in args[i + 1].split(",") if q.strip()]
        for prefix in ("--queues=", "-Q="):
            if arg.startswith(prefix):
                return [q.strip() for q in arg[len(prefix) :].split(",") if q.strip()]
        if arg.startswith("-Q") and len(arg) > 2:
            return [q.strip() for q in arg[2:].split(",") if q.strip()]
    return None


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`: with `env` (default: none
    set, so the file's own defaults), the value compose would use."""
    env = env or {}

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if name in env and (env[name] or op in (None, "-", "?")):
            return env[name]
        return arg if op in (":-", "-") else ""

    return _INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def coverage_errors(where: str, consumers: Mapping[str, list[str] | None], queues: list[str]) -> list[str]:
    """Every queue consumed by some worker; no worker consumes a queue nobody sends to."""
    errors = []
    consumed: set[str] = set()
    for worker, qs in consumers.items():
        consumed.update(queues if qs is None else qs)
        for queue in qs or []:
            if queue not in queues:
                errors.append(f"{where}: worker {worker} consumes {queue!r}, which no task is sent to")
    for queue in queues:
        if queue not in consumed:
            errors.append(f"{where}: queue {queue!r} is consumed by no worker")
    if not consumers:
        errors.append(f"{where}: no worker at all")
    return errors


# -- Kubernetes --------------------------------------------------------------------------------
def load_k8s(deploy: Path) -> tuple[list[Doc], dict[str, Any] | None, list[str]]:
    docs: list[Doc] = []
    kustomization: dict[str, Any] | None = None
    errors: list[str] = []
    if not deploy.is_dir():
        return docs, None, [f"{deploy}: missing"]
    for path in yaml_files(deploy):
        loaded, errs = load_yaml(path)
        errors += errs
        if path.name == KUSTOMIZATION and path.parent == deploy:
            kustomization = loaded[0] if loaded and isinstance(loaded[0], dict) else {}
            continue
        docs += [Doc(path, i, data) for i, data in enumerate(loaded)]
    return docs, kustomization, errors


def check_kustomization(deploy: Path, kustomization: dict[str, Any] | None) -> list[str]:
    if kustomization is None:
        return [f"{deploy / KUSTOMIZATION}: missing"]
    errors = []
    where = KUSTOMIZATION
    if kustomization.get("kind") != "Kustomization":
        errors.append(f"{where}: kind must be Kustomization")
    if not str(kustomization.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
        errors.append(f"{where}: apiVersion must be kustomize.config.k8s.io/...")
    listed = kustomization.get("resources") or []
    if not isinstance(listed, list):
        return [*errors, f"{where}: resources must be a list"]
    present = {p.relative_to(deploy).as_posix() for p in yaml_files(deploy)} - {KUSTOMIZATION}
    for name in sorted({str(x) for x in listed} - present):
        errors.append(f"{where}: lists {name}, which does not exist")
    for name in sorted(present - {str(x) for x in listed}):
        errors.append(f"{where}: does not list {name}")
    dupes = sorted({str(x) for x in listed if listed.count(x) > 1})
    errors += [f"{where}: lists {name} twice" for name in dupes]
    return errors


def _labels_match(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _check_container(where: str, c: Any, names: dict[str, set[str]], *, job: bool) -> list[str]:
    if not isinstance(c, dict):
        return [f"{where}: a container is not a mapping"]
    errors = []
    label = f"{where} container {c.get('name')!r}"
    if not c.get("name"):
        errors.append(f"{where}: a container has no name")
    if not c.get("image"):
        errors.append(f"{label}: no image")
    for key in ("command", "args"):
        if key in c and not (isinstance(c[key], list) and all(isinstance(a, str) for a in c[key])):
            errors.append(f"{label}: {key} must be a list of strings")
    for port in c.get("ports") or []:
        if not isinstance(dig(port, "containerPort"), int):
            errors.append(f"{label}: containerPort must be an integer")
    for source in c.get("envFrom") or []:
        for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            name = dig(source, ref, "name")
            if ref in source and name not in names.get(kind, set()):
                errors.append(f"{label}: envFrom {ref} {name!r} names no {kind} in deploy/")
    resources = c.get("resources") or {}
    for part in ("requests", "limits"):
        for res in ("cpu", "memory") if part == "requests" else ("memory",):
            if dig(resources, part, res) in (None, ""):
                errors.append(f"{label}: resources.{part}.{res} missing")
    if not job:
        for probe in ("readinessProbe", "livenessProbe"):
            spec = c.get(probe)
            if spec is not None and dig(spec, "httpGet") is not None:
                port = dig(spec, "httpGet", "port")
                ports = {p.get("name") for p in c.get("ports") or []} | {
                    p.get("containerPort") for p in c.get("ports") or []
                }
                if port not in ports:
                    errors.append(f"{label}: {probe} port {port!r} is not a container port")
    return errors


def check_k8s_objects(docs: list[Doc]) -> list[str]:
    errors: list[str] = []
    names: dict[str, set[str]] = {}
    namespaces: set[str] = set()
    for doc in docs:
        if not isinstance(doc.data, dict):
            errors.append(f"{doc.where}: not a mapping")
            continue
        for key in ("apiVersion", "kind"):
            if not doc.data.get(key):
                errors.append(f"{doc.where}: {key} missing")
        if not doc.name:
            errors.append(f"{doc.where}: metadata.name missing")
        key = (doc.kind, doc.name)
        if doc.name in names.setdefault(doc.kind, set()):
            errors.append(f"{doc.where}: duplicate {key[0]} {key[1]!r}")
        names[doc.kind].add(doc.name)
        if doc.kind == "Namespace":
            namespaces.add(doc.name)

    deployments = {d.name: d for d in docs if d.kind == "Deployment"}
    for doc in docs:
        if not isinstance(doc.data, dict):
            continue
        where = f"{doc.where} {doc.kind} {doc.name!r}"
        ns = dig(doc.data, "metadata", "namespace")
        if doc.kind != "Namespace" and namespaces and ns not in namespaces:
            errors.append(f"{where}: metadata.namespace {ns!r} is not a Namespace in deploy/")
        spec = doc.data.get("spec")
        if doc.kind in ("ConfigMap", "Secret"):
            for field in ("data", "stringData"):
                values = doc.data.get(field) or {}
                for k, v in values.items():
                    if not isinstance(v, str):
                        errors.append(f"{where}: {field}.{k} must be a string (quote it)")
            continue
        if doc.kind in POD_TEMPLATES:
            if not isinstance(spec, dict):
                errors.append(f"{where}: spec missing")
                continue
            labels = dig(spec, "template", "metadata", "labels") or {}
            pod = dig(spec, "template", "spec") or {}
            if doc.kind == "Deployment":
                selector = dig(spec, "selector", "matchLabels") or {}
                if not selector:
                    errors.append(f"{where}: spec.selector.matchLabels missing")
                elif not _labels_match(selector, labels):
                    errors.append(
                        f"{where}: spec.selector.matchLabels {selector} does not match the pod "
                        f"template labels {labels}"
                    )
                strategy = dig(spec, "strategy", "type")
                if strategy not in (None, "RollingUpdate", "Recreate"):
                    errors.append(f"{where}: unknown strategy {strategy!r}")
            elif pod.get("restartPolicy") not in ("Never", "OnFailure"):
                errors.append(f"{where}: a Job's restartPolicy must be Never or OnFailure")
            containers = pod.get("containers")
            if not isinstance(containers, list) or not containers:
                errors.append(f"{where}: spec.template.spec.containers missing")
                continue
            for c in containers:
                errors += _check_container(where, c, names, job=doc.kind == "Job")
        elif doc.kind == "Service":
            selector = dig(spec, "selector") or {}
            ports = dig(spec, "ports") or []
            if not ports:
                errors.append(f"{where}: spec.ports missing")
            targets = [
                d
                for d in deployments.values()
                if _labels_match(selector, dig(d.data, *POD_TEMPLATES[d.kind], "metadata", "labels") or {})
            ]
            if not targets:
                errors.append(f"{where}: selector {selector} matches no Deployment's pod labels")
            for port in ports:
                target = port.get("targetPort", port.get("port"))
                ok = any(
                    target
                    in {p.get("name") for p in c.get("ports") or []}
                    | {p.get("containerPort") for p in c.get("ports") or []}
                    for d in targets
                    for c in dig(d.data, "spec", "template", "spec", "containers") or []
                )
                if targets and not ok:
                    errors.append(f"{where}: targetPort {target!r} is no port of the selected pods")
        elif doc.kind == "HorizontalPodAutoscaler":
            if doc.data.get("apiVersion") != "autoscaling/v2":
                errors.append(f"{where}: apiVersion must be autoscaling/v2")
            ref = dig(spec, "scaleTargetRef") or {}
            target = deployments.get(str(ref.get("name")))
            if ref.get("kind") != "Deployment" or target is None:
                errors.append(
                    f"{where}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} is no Deployment in deploy/"
                )
            lo, hi = dig(spec, "minReplicas") or 1, dig(spec, "maxReplicas")
            if not isinstance(hi, int) or not isinstance(lo, int) or lo > hi or lo < 1:
                errors.append(f"{where}: need 1 <= minReplicas <= maxReplicas")
            metrics = dig(spec, "metrics") or []
            if not any(dig(m, "resource", "name") == "cpu" for m in metrics):
                errors.append(f"{where}: no CPU metric")
            if target is not None:
                for c in dig(target.data, "spec", "template", "spec", "containers") or []:
                    if dig(c, "resources", "requests", "cpu") is None:
                        errors.append(f"{where}: CPU utilisation needs requests.cpu on {c.get('name')!r}")
    return errors


def _pod_args(doc: Doc) -> list[tuple[list[str], list[str]]]:
    """(command, args) of each container of a Deployment."""
    return [
        ([str(x) for x in c.get("command") or []], [str(x) for x in c.get("args") or []])
        for c in dig(doc.data, "spec", "template", "spec", "containers") or []
    ]


def check_k8s_processes(docs: list[Doc], queues: list[str], systems: list[str]) -> list[str]:
    errors: list[str] = []
    consumers: dict[str, list[str] | None] = {}
    beats: list[Doc] = []
    hpa_targets = {
        dig(d.data, "spec", "scaleTargetRef", "name") for d in docs if d.kind == "HorizontalPodAutoscaler"
    }
    for doc in docs:
        if doc.kind != "Deployment":
            continue
        for command, args in _pod_args(doc):
            if command and command != ["posbridge"]:
                continue
            if args[:1] == ["worker"]:
                consumers[doc.name] = worker_queues(args)
                if "--beat" in args:
                    errors.append(
                        f"k8s: Deployment {doc.name!r} embeds beat (--beat); run the beat Deployment only"
                    )
                if doc.name not in hpa_targets:
                    errors.append(f"k8s: worker Deployment {doc.name!r} has no HorizontalPodAutoscaler")
            elif args[:1] in (["beat"], ["serve"]):
                beats.append(doc)
    errors += coverage_errors("k8s", consumers, queues)
    if len(beats) != 1:
        errors.append(f"k8s: exactly one beat Deployment needed, found {[b.name for b in beats]}")
    for beat in beats:
        if dig(beat.data, "spec", "replicas") != 1:
            errors.append(f"k8s: beat Deployment {beat.name!r} must have replicas: 1")
        if dig(beat.data, "spec", "strategy", "type") != "Recreate":
            errors.append(f"k8s: beat Deployment {beat.name!r} must use strategy Recreate")
        if beat.name in hpa_targets:
            errors.append(f"k8s: beat Deployment {beat.name!r} must not be autoscaled")
    for doc in docs:
        if doc.kind == "ConfigMap" and "POSBRIDGE_SYSTEMS" in (doc.data.get("data") or {}):
            enabled = sorted(s.strip() for s in doc.data["data"]["POSBRIDGE_SYSTEMS"].split(",") if s.strip())
            if enabled != sorted(systems):
                errors.append(f"k8s: ConfigMap POSBRIDGE_SYSTEMS is {enabled}, expected {sorted(systems)}")
    web = [d for d in docs if d.kind == "Deployment" and any(a[:1] == ["web"] for _, a in _pod_args(d))]
    if len(web) != 1:
        errors.append("k8s: expected one web Deployment")
    for doc in web:
        for c in dig(doc.data, "spec", "template", "spec", "containers") or []:
            if dig(c, "readinessProbe", "httpGet", "path") != "/readyz":
                errors.append(f"k8s: web readinessProbe must GET /readyz ({doc.name})")
            if dig(c, "livenessProbe", "httpGet", "path") != "/healthz":
                errors.append(f"k8s: web livenessProbe must GET /healthz ({doc.name})")
    jobs = [d for d in docs if d.kind == "Job" and any(a[:2] == ["db", "upgrade"] for _, a in _pod_args(d))]
    if len(jobs) != 1:
        errors.append("k8s: expected one Job running `posbridge db upgrade`")
    return errors


def check_k8s(deploy: Path, queues: list[str], systems: list[str]) -> list[str]:
    docs, kustomization, errors = load_k8s(deploy)
    errors += check_kustomization(deploy, kustomization)
    errors += check_k8s_objects(docs)
    errors += check_k8s_processes(docs, queues, systems)
    return errors


# -- docker compose ----------------------------------------------------------------------------
def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [str(item).split("=", 1) for item in raw]
        raw = {p[0]: p[1] if len(p) > 1 else "" for p in pairs}
    return {str(k): interpolate("" if v is None else str(v)) for k, v in raw.items()}


def _depends(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {str(name): "service_started" for name in raw}
    return {str(name): str((spec or {}).get("condition", "service_started")) for name, spec in raw.items()}


def _is_posbridge(service: Mapping[str, Any]) -> bool:
    entry = _argv(service.get("entrypoint"))
    return not entry or entry == ["posbridge"]


def compose_sandbox_errors(services: Mapping[str, Any], systems: list[str]) -> list[str]:
    """Each sandbox reachable with the credentials the bridge is given, webhooks verifiable."""
    from bridge.adapters import registry
    from bridge.adapters.base import Capability
    from bridge.config import env_prefix

    classes = registry.available([])
    errors: list[str] = []
    bridge_envs = {
        name: _env(svc)
        for name, svc in services.items()
        if (_is_posbridge(svc) and _argv(svc.get("command"))[:1] in (["web"], ["worker"], ["beat"]))
        or "flower" in _argv(svc.get("command"))
    }
    seen: dict[str, str] = {}
    for name, svc in services.items():
        args = [interpolate(a) for a in _argv(svc.get("command"))]
        if not _is_posbridge(svc) or args[:1] != ["sandbox"]:
            continue
        system = args[1] if len(args) > 1 else ""
        where = f"compose: {name}"
        if system not in classes or not classes[system].sandbox_class:
            errors.append(f"{where}: no sandbox for {system!r}")
            continue
        if system in seen:
            errors.append(f"{where}: a second sandbox for {system} (also {seen[system]})")
        seen[system] = name
        port, host, url = option(args, "--port"), option(args, "--host"), option(args, "--webhook-url")
        if host != "0.0.0.0":
            errors.append(f"{where}: --host 0.0.0.0 needed (it binds 127.0.0.1 by default)")
        if port is None or not port.isdigit():
            errors.append(f"{where}: --port missing")
            continue
        if url is None:
            errors.append(f"{where}: --webhook-url missing")
            continue
        match = re.fullmatch(rf"http://web:(\d+)/webhooks/{re.escape(system)}(?:/([^/]+))?", url)
        if match is None:
            errors.append(
                f"{where}: --webhook-url {url} is not http://web:<port>/webhooks/{system}[/<token>]"
            )
            continue
        token = match.group(2)
        sandbox = registry.load_object(classes[system].sandbox_class or "")(webhook_url=url, tokens=None)
        wanted = {
            env_prefix(system) + key.upper(): str(value)
            for key, value in sandbox.adapter_env(f"http://{name}:{port}").items()
            if value not in (None, "")
        }
        path_token_var = env_prefix(system) + "WEBHOOK_PATH_TOKEN"
        signed = any(k.endswith(("_SECRET", "_SIGNATURE_KEY")) for k in wanted)
        for service_name, env in bridge_envs.items():
            for var, value in wanted.items():
                if env.get(var) != value:
                    errors.append(
                        f"compose: {service_name}: {var}={env.get(var)!r}, but {name} expects {value!r}"
                    )
            if Capability.WEBHOOKS in classes[system].capabilities and not signed:
                if token is None:
                    errors.append(
                        f"{where}: {system} webhooks are unsigned: --webhook-url needs "
                        f"/webhooks/{system}/<token> and {path_token_var} on {service_name}"
                    )
                elif env.get(path_token_var) != token:
                    errors.append(
                        f"compose: {service_name}: {path_token_var} does not match {name}'s URL token"
                    )
    for system in systems:
        if system not in seen:
            errors.append(f"compose: no sandbox service for {system}")
    return errors


def check_compose(path: Path, queues: list[str], systems: list[str]) -> list[str]:
    loaded, errors = load_yaml(path)
    if errors:
        return errors
    if len(loaded) != 1 or not isinstance(loaded[0], dict):
        return [f"{path}: expected one mapping"]
    data = loaded[0]
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        return [f"{path}: no services"]
    volumes = set((data.get("volumes") or {}).keys())
    networks = set((data.get("networks") or {}).keys()) | {"default"}
    consumers: dict[str, list[str] | None] = {}
    beats: list[str] = []
    migrate: list[str] = []
    webs: list[str] = []
    flowers: list[str] = []
    for name, svc in services.items():
        where = f"compose: {name}"
        if not isinstance(svc, dict):
            errors.append(f"{where}: not a mapping")
            continue
        if not svc.get("image") and not svc.get("build"):
            errors.append(f"{where}: neither image nor build")
        for dep, condition in _depends(svc).items():
            if dep not in services:
                errors.append(f"{where}: depends_on {dep!r}, which is not a service")
            elif condition not in DEPENDS_CONDITIONS:
                errors.append(f"{where}: depends_on {dep}: unknown condition {condition!r}")
            elif condition == "service_healthy" and not dig(services[dep], "healthcheck", "test"):
                errors.append(f"{where}: depends_on {dep} being healthy, but {dep} has no healthcheck")
        for volume in svc.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source and not source.startswith((".", "/", "~", "$")) and source not in volumes:
                errors.append(f"{where}: volume {source!r} is not declared under volumes:")
        nets = svc.get("networks") or []
        for net in nets if isinstance(nets, list) else list(nets):
            if net not in networks:
                errors.append(f"{where}: network {net!r} is not declared under networks:")
        args = _argv(svc.get("command"))
        if _is_posbridge(svc) and (svc.get("image") or "").startswith("posbridge"):
            if args[:1] == ["worker"]:
                consumers[name] = worker_queues(args)
                if "--beat" in args:
                    errors.append(f"{where}: embeds beat (--beat); the beat service is the only one")
            elif args[:1] in (["beat"], ["serve"]):
                beats.append(name)
            elif args[:2] == ["db", "upgrade"]:
                migrate.append(name)
            elif args[:1] == ["web"]:
                webs.append(name)
                test = " ".join(_argv(dig(svc, "healthcheck", "test")))
                if "/healthz" not in test:
                    errors.append(f"{where}: healthcheck must probe /healthz")
        if "flower" in args:
            flowers.append(name)
            auth = "FLOWER_BASIC_AUTH" in _env(svc) or any(a.startswith("--basic-auth") for a in args)
            if not auth:
                errors.append(f"{where}: Flower without basic auth (FLOWER_BASIC_AUTH or --basic-auth)")
        scale = dig(svc, "deploy", "replicas")
        if name in beats and scale not in (None, 1):
            errors.append(f"{where}: beat must run once (deploy.replicas: 1)")
    errors += coverage_errors("compose", consumers, queues)
    if len(beats) != 1:
        errors.append(f"compose: exactly one beat service needed, found {beats}")
    if len(migrate) != 1:
        errors.append(f"compose: expected one `db upgrade` service, found {migrate}")
    if len(webs) != 1:
        errors.append(f"compose: expected one web service, found {webs}")
    if len(flowers) != 1:
        errors.append(f"compose: expected one flower service, found {flowers}")
    for name in [*webs, *consumers, *beats]:
        if migrate and _depends(services[name]).get(migrate[0]) != "service_completed_successfully":
            errors.append(f"compose: {name} must wait for {migrate[0]} (service_completed_successfully)")
        enabled = _env(services[name]).get("POSBRIDGE_SYSTEMS", "")
        if sorted(s.strip() for s in enabled.split(",") if s.strip()) != sorted(systems):
            errors.append(f"compose: {name}: POSBRIDGE_SYSTEMS is {enabled!r}, expected all of {systems}")
    errors += compose_sandbox_errors(services, systems)
    return errors


# -- external validators -----------------------------------------------------------------------
def compose_client() -> list[str] | None:
    """`docker compose` if that plugin works, else `docker-compose`, else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def run_compose_config(path: Path) -> tuple[list[str], list[str]]:
    client = compose_client()
    if client is None:
        return [], ["docker compose: no client (docker compose plugin or docker-compose); skipped"]
    proc = subprocess.run(
        [*client, "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=path.parent,
    )
    if proc.returncode != 0:
        return [f"{' '.join(client)} config -q failed: {(proc.stderr or proc.stdout).strip()}"], []
    return [], [f"{' '.join(client)} config -q: ok"]


def run_kubeconform(deploy: Path) -> tuple[list[str], list[str]]:
    exe = shutil.which("kubeconform")
    if exe is None:
        return [], ["kubeconform: not on PATH; skipped"]
    files = [str(p) for p in yaml_files(deploy) if p.name != KUSTOMIZATION]
    proc = subprocess.run([exe, "-strict", "-summary", *files], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return [f"kubeconform failed: {(proc.stdout + proc.stderr).strip()}"], []
    return [], [f"kubeconform: {proc.stdout.strip()}"]


def check_all(root: Path, *, external: bool = True) -> tuple[list[str], list[str]]:
    """(errors, notes) for the repository at `root`."""
    systems = expected_systems()
    queues = expected_queues(systems)
    errors = check_k8s(root / DEPLOY_DIR, queues, systems)
    errors += check_compose(root / COMPOSE_FILE, queues, systems)
    notes: list[str] = []
    if external:
        for errs, msgs in (run_compose_config(root / COMPOSE_FILE), run_kubeconform(root / DEPLOY_DIR)):
            errors += errs
            notes += msgs
    return errors, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    parser.add_argument("--no-external", action="store_true", help="skip docker compose and kubeconform")
    options = parser.parse_args(argv)
    errors, notes = check_all(options.root.resolve(), external=not options.no_external)
    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        print(f"check_deploy: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print("check_deploy: deploy/ and docker-compose.yml are consistent with the code")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
