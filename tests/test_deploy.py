"""The deployment files (Dockerfile, docker-compose.yml, deploy/) agree with the code.

Runs scripts/check_deploy.py's checks on the repository, and shows that they catch
broken copies: a selector that misses its pods, an HPA aimed at nothing, a queue that
no worker consumes, a second beat, a sandbox the bridge cannot authenticate to.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_deploy", ROOT / "scripts" / "check_deploy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check = _load_script()
SYSTEMS = check.expected_systems()
QUEUES = check.expected_queues(SYSTEMS)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the deployment files to break."""
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    return tmp_path


def edit_docs(path: Path, change: Callable[[list[Any]], None]) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    change(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def k8s_errors(root: Path) -> list[str]:
    return check.check_k8s(root / "deploy", QUEUES, SYSTEMS)


def compose_errors(root: Path) -> list[str]:
    return check.check_compose(root / "docker-compose.yml", QUEUES, SYSTEMS)


# -- the repository ---------------------------------------------------------------------------
def test_all_systems_and_queues_known() -> None:
    assert sorted(["square", "loyverse", "fieldpine", "onsite", "lsone"]) == SYSTEMS
    assert {"ingest", "poll", "maintenance", *(f"push.{s}" for s in SYSTEMS)} == set(QUEUES)


def test_repository_deploy_files_pass() -> None:
    errors, notes = check.check_all(ROOT, external=True)
    assert errors == [], "\n".join(errors)
    assert any("kubeconform" in n for n in notes)


def test_main_exit_code(repo: Path) -> None:
    assert check.main(["--root", str(ROOT), "--no-external"]) == 0
    (repo / "deploy" / "stray.yaml").write_text("kind: ConfigMap\n")
    assert check.main(["--root", str(repo), "--no-external"]) == 1


def test_dockerfile_uses_only_the_allowed_base_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert [line.split()[1] for line in text.splitlines() if line.startswith("FROM")] == ["python:3.11-slim"]
    assert 'ENTRYPOINT ["posbridge"]' in text
    assert "\nUSER " in text
    assert "pip install ." in text


def test_compose_commands_are_real_cli_commands() -> None:
    """Every `posbridge` subcommand and option used in compose exists in the CLI."""
    from click.testing import CliRunner

    from bridge.cli import main

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    runner = CliRunner()
    for name, svc in services.items():
        if not str(svc.get("image", "")).startswith("posbridge") or svc.get("entrypoint"):
            continue
        args = [check.interpolate(a) for a in check._argv(svc.get("command"))]
        words = [a for a in args if not a.startswith("-")]
        command = words[:2] if words[:1] == ["db"] else words[:1]
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0, (name, result.output)
        for arg in args:
            if arg.startswith("--"):
                assert arg.split("=", 1)[0] in result.output, (name, arg)


# -- broken copies are rejected ------------------------------------------------------------------
def test_deployment_selector_must_match_pod_labels(repo: Path) -> None:
    def change(docs: list[Any]) -> None:
        docs[0]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "oops"

    edit_docs(repo / "deploy" / "worker-core.yaml", change)
    errors = k8s_errors(repo)
    assert any("posbridge-worker-core" in e and "does not match the pod template labels" in e for e in errors)


def test_service_must_select_a_deployment(repo: Path) -> None:
    def change(docs: list[Any]) -> None:
        docs[1]["spec"]["selector"] = {"app.kubernetes.io/component": "nothing"}

    edit_docs(repo / "deploy" / "web.yaml", change)
    assert any("matches no Deployment" in e for e in k8s_errors(repo))


def test_hpa_must_target_an_existing_deployment(repo: Path) -> None:
    def change(docs: list[Any]) -> None:
        docs[1]["spec"]["scaleTargetRef"]["name"] = "posbridge-worker-gone"

    edit_docs(repo / "deploy" / "worker-square.yaml", change)
    errors = k8s_errors(repo)
    assert any("posbridge-worker-gone is no Deployment" in e for e in errors)
    # ...and the worker it used to scale now has none.
    assert any("'posbridge-worker-square' has no HorizontalPodAutoscaler" in e for e in errors)


def test_queue_nobody_consumes_is_rejected_in_k8s(repo: Path) -> None:
    def change(docs: list[Any]) -> None:
        docs[0]["spec"]["template"]["spec"]["containers"][0]["args"][2] = "push.fieldpine"

    edit_docs(repo / "deploy" / "worker-other.yaml", change)
    assert "k8s: queue 'push.lsone' is consumed by no worker" in k8s_errors(repo)


def test_queue_nobody_consumes_is_rejected_in_compose(repo: Path) -> None:
    path = repo / "docker-compose.yml"
    path.write_text(path.read_text().replace('"push.onsite,push.loyverse"', '"push.loyverse"'))
    assert "compose: queue 'push.onsite' is consumed by no worker" in compose_errors(repo)


def test_a_second_beat_is_rejected(repo: Path) -> None:
    def change(docs: list[Any]) -> None:
        docs[0]["spec"]["replicas"] = 2
        docs[0]["spec"]["strategy"] = {"type": "RollingUpdate"}

    edit_docs(repo / "deploy" / "beat.yaml", change)
    errors = k8s_errors(repo)
    assert any("replicas: 1" in e for e in errors)
    assert any("Recreate" in e for e in errors)

    path = repo / "docker-compose.yml"
    text = path.read_text().replace(
        '    command: ["beat"]\n',
        '    command: ["beat"]\n\n  beat-2:\n    <<: *bridge\n    command: ["beat"]\n',
    )
    path.write_text(text)
    assert any("exactly one beat" in e for e in compose_errors(repo))


def test_kustomization_must_list_exactly_the_files(repo: Path) -> None:
    shutil.copy(repo / "deploy" / "beat.yaml", repo / "deploy" / "extra.yaml")
    (repo / "deploy" / "flower.yaml").unlink()
    errors = k8s_errors(repo)
    assert "kustomization.yaml: does not list extra.yaml" in errors
    assert "kustomization.yaml: lists flower.yaml, which does not exist" in errors


def test_unparsable_yaml_is_reported(repo: Path) -> None:
    (repo / "deploy" / "web.yaml").write_text("kind: [unclosed\n")
    assert any("web.yaml: does not parse" in e for e in k8s_errors(repo))


def test_missing_required_fields(repo: Path) -> None:
    def change(docs: list[Any]) -> None:
        del docs[0]["apiVersion"]
        del docs[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        docs[0]["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"] = "nope"

    edit_docs(repo / "deploy" / "beat.yaml", change)
    errors = k8s_errors(repo)
    assert any("beat.yaml#0: apiVersion missing" in e for e in errors)
    assert any("no image" in e for e in errors)
    assert any("'nope' names no ConfigMap" in e for e in errors)


def test_configmap_values_must_be_strings(repo: Path) -> None:
    def change(docs: list[Any]) -> None:
        docs[0]["data"]["POSBRIDGE_WEB_PORT"] = 8000

    edit_docs(repo / "deploy" / "configmap.yaml", change)
    assert any("POSBRIDGE_WEB_PORT must be a string" in e for e in k8s_errors(repo))


def test_compose_references_must_exist(repo: Path) -> None:
    path = repo / "docker-compose.yml"
    text = path.read_text()
    text = text.replace("      - redisdata:/data\n", "      - cache:/data\n")
    text = text.replace(
        '    depends_on:\n      postgres:\n        condition: service_healthy\n    restart: "no"',
        '    depends_on:\n      postgress:\n        condition: service_healthy\n    restart: "no"',
    )
    path.write_text(text)
    errors = compose_errors(repo)
    assert "compose: redis: volume 'cache' is not declared under volumes:" in errors
    assert "compose: migrate: depends_on 'postgress', which is not a service" in errors


def test_square_notification_url_must_be_what_the_sandbox_signs(repo: Path) -> None:
    path = repo / "docker-compose.yml"
    text = path.read_text().replace(
        "POSBRIDGE_SQUARE_NOTIFICATION_URL: http://web:8000/webhooks/square",
        "POSBRIDGE_SQUARE_NOTIFICATION_URL: http://localhost:8000/webhooks/square",
    )
    path.write_text(text)
    errors = compose_errors(repo)
    assert any("POSBRIDGE_SQUARE_NOTIFICATION_URL" in e and "sandbox-square expects" in e for e in errors)


def test_credentials_must_match_the_sandbox(repo: Path) -> None:
    path = repo / "docker-compose.yml"
    path.write_text(
        path.read_text().replace("POSBRIDGE_ONSITE_PASSWORD: admin", "POSBRIDGE_ONSITE_PASSWORD: x")
    )
    assert any("POSBRIDGE_ONSITE_PASSWORD='x'" in e for e in compose_errors(repo))


def test_unsigned_webhooks_need_the_path_token(repo: Path) -> None:
    path = repo / "docker-compose.yml"
    path.write_text(
        path.read_text().replace(
            "--webhook-url=http://web:8000/webhooks/loyverse/${LOYVERSE_HOOK_TOKEN:-local-loyverse-hook-token}",
            "--webhook-url=http://web:8000/webhooks/loyverse",
        )
    )
    assert any("loyverse webhooks are unsigned" in e for e in compose_errors(repo))


def test_interpolation_defaults() -> None:
    assert check.interpolate("a/${X:-dflt}/b") == "a/dflt/b"
    assert check.interpolate("a/${X:-dflt}/b", {"X": "set"}) == "a/set/b"
    assert check.interpolate("${X}") == ""
    assert check.interpolate("$${X}") == "${X}"
