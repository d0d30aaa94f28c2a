"""examples/: the Kubernetes Indexed Job and the GitHub Actions matrix, parsed, and their own fleetrun commands run
against the lab with the scheduler's variables set as the scheduler would; then their merge step, which must cover
every host once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet import clean_env

from fleetrun.lab import Lab

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def env_for(home: Path, **values: str) -> dict[str, str]:
    """The test's clean environment with this venv's `fleetrun` first on PATH."""
    env = clean_env(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(values)
    return env


def junit_hosts(path: Path) -> list[str]:
    return [case.get("name", "") for case in ET.parse(path).getroot().iter("testcase")]


# -- Kubernetes ------------------------------------------------------------------------------------------------------


def k8s_jobs() -> dict[str, dict[str, Any]]:
    documents = list(yaml.safe_load_all((EXAMPLES / "k8s-indexed-job.yaml").read_text()))
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Job"}


def container_script(job: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: str(item["value"]) for item in container.get("env", [])}
    return [*container["command"], *container["args"]], env


def test_the_k8s_manifest_is_an_indexed_job_of_n_shards_and_a_merge():
    jobs = k8s_jobs()
    shards = jobs["fleetrun-shards"]["spec"]
    assert shards["completionMode"] == "Indexed" and shards["completions"] == shards["parallelism"] == 4
    argv, env = container_script(jobs["fleetrun-shards"])
    assert env["SHARDS"] == str(shards["completions"])  # --shard-total must be spec.completions
    assert "fleetrun exec --shard auto --shard-total \"$SHARDS\"" in argv[-1] and "--format json" in argv[-1]
    merge_argv, _ = container_script(jobs["fleetrun-merge"])
    assert "fleetrun runs merge" in merge_argv[-1]


def test_the_k8s_pods_commands_run_against_the_lab_and_merge_to_every_host_once(lab: Lab, ssh_env, tmp_path):
    jobs = k8s_jobs()
    argv, manifest_env = container_script(jobs["fleetrun-shards"])
    completions = jobs["fleetrun-shards"]["spec"]["completions"]
    results = tmp_path / "results"
    results.mkdir()
    paths = {"RESULTS": str(results), "FLEETRUN_INVENTORY": str(lab.inventory)}  # the volumes, here
    pods = [subprocess.Popen(argv, env=env_for(ssh_env, **{**manifest_env, **paths, "JOB_COMPLETION_INDEX": str(i)}),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(completions)]
    for pod in pods:
        _, err = pod.communicate(timeout=300)
        assert pod.returncode == 0, err
    assert sorted(path.name for path in results.iterdir()) == [f"shard-{i}.json" for i in range(completions)]

    merge_argv, merge_env = container_script(jobs["fleetrun-merge"])
    merged = subprocess.run(merge_argv, env=env_for(ssh_env, **{**merge_env, "RESULTS": str(results)}),
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.splitlines()[-1].startswith(f"{len(lab.hosts)} ok in ")
    assert sorted(junit_hosts(results / "junit.xml")) == sorted(host.name for host in lab.hosts)

    # a pod that never wrote its result: the merge waits (here not at all), then names the missing shard
    (results / "shard-3.json").unlink()
    missing = subprocess.run(merge_argv, env=env_for(ssh_env, **{**merge_env, "RESULTS": str(results),
                                                                 "WAIT_SECONDS": "0"}),
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert missing.returncode == 2 and "shard 4/4 is missing" in missing.stderr


# -- GitHub Actions --------------------------------------------------------------------------------------------------


def expand(text: str, values: dict[str, str]) -> str:
    """GitHub's ${{ … }} expressions, as the runner substitutes them before the shell sees the script."""
    def one(match: re.Match[str]) -> str:
        name = match[1].strip()
        assert name in values, f"expression {name} has no value in this test"
        return values[name]

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def run_steps(steps: list[dict[str, Any]], workdir: Path, env: dict[str, str],
              values: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """The `run:` steps that call fleetrun, each as GitHub runs it (bash -eo pipefail), in the job's workspace."""
    done = []
    for step in steps:
        script = step.get("run", "")
        if "fleetrun" not in script or script.strip().startswith("pip "):
            continue
        done.append(subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", expand(script, values)],
                                   cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
                                   stdin=subprocess.DEVNULL))
    return done


def test_the_github_matrix_runs_each_shard_and_the_merge_covers_every_host_once(lab: Lab, ssh_env, tmp_path):
    workflow = yaml.safe_load((EXAMPLES / "github-actions-shards.yml").read_text())
    shard_job, merge_job = workflow["jobs"]["shard"], workflow["jobs"]["merge"]
    assert shard_job["strategy"]["fail-fast"] is False
    assert merge_job["needs"] == "shard" and merge_job["if"] == "always()"
    total = len(shard_job["strategy"]["matrix"]["shard"])
    env = env_for(ssh_env, **{**workflow.get("env", {}), "FLEETRUN_INVENTORY": str(lab.inventory)})
    downloads = tmp_path / "merge"
    (download,) = [step for step in merge_job["steps"] if "download-artifact" in step.get("uses", "")]
    artifacts = downloads / download["with"]["path"]
    artifacts.mkdir(parents=True)
    (upload,) = [step for step in shard_job["steps"] if "upload-artifact" in step.get("uses", "")]
    assert upload["if"] == "always()"
    for index in range(total):
        workspace = tmp_path / f"job-{index}"
        workspace.mkdir()
        values = {"strategy.job-index": str(index), "strategy.job-total": str(total), "matrix.shard": str(index + 1),
                  "secrets.FLEET_SSH_KEY": "", "secrets.FLEET_KNOWN_HOSTS": ""}
        (step,) = run_steps(shard_job["steps"], workspace, env, values)
        assert step.returncode == 0, step.stderr
        produced = workspace / expand(upload["with"]["path"], values)
        assert produced.stat().st_size > 0
        (artifacts / produced.name).write_bytes(produced.read_bytes())  # upload, then download with merge-multiple
    (merged,) = run_steps(merge_job["steps"], downloads, env, {})
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.splitlines()[-1].startswith(f"{len(lab.hosts)} ok in ")
    assert sorted(junit_hosts(downloads / "junit.xml")) == sorted(host.name for host in lab.hosts)
