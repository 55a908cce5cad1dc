"""The Docker and Kubernetes work-pool variants of the deployments, checked without a
container engine or a cluster: Prefect's own loaders and the workers' own job templates
(prefect-docker, prefect-kubernetes) accept them, and a real Prefect server registers them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.utilities.callables import parameter_schema_from_entrypoint
from prefect.utilities.schema_tools import validate
from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

REPO = Path(__file__).resolve().parents[2]
POOLS = {"docker": "cxr-docker", "kubernetes": "cxr-kubernetes"}
ENTRYPOINTS = {
    "scheduled-retraining": "flows/training.py:training_flow",
    "drift-monitoring": "flows/monitoring.py:monitoring_flow",
}
K8S_TEMPLATE = REPO / "deploy" / "kubernetes" / "base-job-template.json"


def _prefect_file(kind: str) -> Path:
    return REPO / "deploy" / kind / "prefect.yaml"


def _deployments(kind: str) -> dict[str, dict[str, Any]]:
    """The deployments of a prefect.yaml as Prefect's deploy command reads them."""
    raw = yaml.safe_load(_prefect_file(kind).read_text())
    model = PrefectYamlModel.model_validate(raw)  # raises on what `prefect deploy` skips
    return {d.name: d.model_dump(exclude_unset=True, mode="json") for d in model.deployments}


def _template(kind: str) -> dict[str, Any]:
    """The pool's base job template: the worker's own (Docker) or ours (Kubernetes)."""
    if kind == "docker":
        return DockerWorker.get_default_base_job_template()
    return json.loads(K8S_TEMPLATE.read_text())


@pytest.mark.parametrize("kind", POOLS)
def test_each_pool_has_both_deployments_on_existing_flows_and_their_parameters(
    kind: str,
) -> None:
    deployments = _deployments(kind)
    assert set(deployments) == set(ENTRYPOINTS)  # the process pool's two, same names
    for name, deployment in deployments.items():
        assert deployment["entrypoint"] == ENTRYPOINTS[name]
        assert (REPO / deployment["entrypoint"].split(":")[0]).is_file()
        schema = parameter_schema_from_entrypoint(str(REPO / deployment["entrypoint"]))
        parameters = deployment["parameters"]
        assert set(parameters) <= set(schema.properties), name  # every one is the flow's
        assert set(schema.required) <= set(parameters), name
        validate(parameters, schema.model_dump_for_openapi(), raise_on_error=True)
        assert deployment["work_pool"]["name"] == POOLS[kind]


@pytest.mark.parametrize("kind", POOLS)
def test_job_variables_are_variables_of_the_pool_template_with_valid_values(kind: str) -> None:
    variables = _template(kind)["variables"]
    for name, deployment in _deployments(kind).items():
        job_variables = deployment["work_pool"]["job_variables"]
        assert job_variables["image"]  # the pipeline image (deploy/Dockerfile)
        unknown = set(job_variables) - set(variables["properties"])
        assert unknown == set(), f"{name}: {unknown} are not variables of the {kind} pool"
        validate(job_variables, variables, raise_on_error=True, ignore_required=True)


def test_the_kubernetes_template_is_the_worker_template_plus_volumes_and_a_gpu_limit() -> None:
    ours, worker = _template("kubernetes"), KubernetesWorker.get_default_base_job_template()
    added = set(ours["variables"]["properties"]) - set(worker["variables"]["properties"])
    assert added == {"data_claim", "state_claim", "gpu_limit"}
    assert set(ours["job_configuration"]) == set(worker["job_configuration"])


@pytest.mark.slow  # the workers resolve job variables through a Prefect API
def test_the_workers_render_the_job_each_deployment_asks_for(prefect_server: str) -> None:
    """What the workers would start: a container with the release and the state volume,
    and a Kubernetes Job with both claims mounted, the image and its resources."""

    async def render() -> None:
        for deployment in _deployments("docker").values():
            values = deployment["work_pool"]["job_variables"]
            job = await DockerWorkerJobConfiguration.from_template_and_values(
                _template("docker"), values
            )
            assert job.image == "cxr-pipeline:latest" and job.image_pull_policy == "IfNotPresent"
            assert any(volume.endswith(":/var/lib/cxr") for volume in job.volumes)
            assert "CXR_SERVE__PREDICTION_LOG_URL" in job.env
        training = _deployments("kubernetes")["scheduled-retraining"]["work_pool"]
        job = await KubernetesWorkerJobConfiguration.from_template_and_values(
            _template("kubernetes"), {**training["job_variables"], "gpu_limit": 2}
        )
        spec = job.job_manifest["spec"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        assert claims == {"data": "cxr-data", "state": "cxr-state"}
        (container,) = spec["containers"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data", "/var/lib/cxr"}
        assert container["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": 2}
        assert job.job_manifest["metadata"]["namespace"] == "cxr"

    asyncio.run(render())


@pytest.mark.slow
def test_a_prefect_server_creates_the_pools_and_registers_the_deployments(
    prefect_server: str,
) -> None:
    """Each variant registers on the server (the server checks the job variables against
    the pool's template); registering the next one moves the same two deployments."""
    from prefect.client.orchestration import get_client

    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    prefect = [sys.executable, "-m", "prefect"]

    def run(*args: str) -> None:
        done = subprocess.run([*prefect, *args], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    async def registered() -> tuple[dict[str, Any], dict[str, Any]]:
        async with get_client() as client:
            pools = {p.name: p for p in await client.read_work_pools()}
            return pools, {d.name: d for d in await client.read_deployments()}

    run("work-pool", "create", "--type", "docker", POOLS["docker"], "--overwrite")
    run("work-pool", "create", "--type", "kubernetes", POOLS["kubernetes"], "--overwrite",
        "--base-job-template", str(K8S_TEMPLATE))  # fmt: skip
    for kind, pool in POOLS.items():
        run("--no-prompt", "deploy", "--all", "--prefect-file",
            str(_prefect_file(kind).relative_to(REPO)))  # fmt: skip
        pools, deployments = asyncio.run(registered())
        assert pools[pool].type == kind
        for name, deployment in _deployments(kind).items():
            stored = deployments[name]
            assert stored.work_pool_name == pool
            assert stored.job_variables == deployment["work_pool"]["job_variables"]
            assert stored.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/cxr-mlops"}}
            ]  # the code in the image
    assert pools[POOLS["kubernetes"]].base_job_template == _template("kubernetes")


def test_the_pipeline_image_installs_the_project_at_the_lock_versions() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert "pip install -c requirements-lock.txt" in dockerfile
    lock = {}
    for line in (REPO / "requirements-lock.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        lock[re.sub(r"[-_.]+", "-", name.lower())] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, _, version = re.sub(r"\[.*\]", "", requirement).partition("==")
        assert lock.get(re.sub(r"[-_.]+", "-", name.lower())) == version, requirement
    for source in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), f"deploy/Dockerfile copies {path}, which is missing"
