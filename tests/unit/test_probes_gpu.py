"""The doctor's GPU checks against recorded nvidia-smi output and `docker info`: this
machine has no GPU, so what a real one prints is replayed here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from fakes import FakeDocker, FakeHost, recorded_docker_info

from hostkit.host import CommandResult
from hostkit.probes.gpu import NVIDIA_SMI_QUERY, parse_nvidia_smi
from hostkit.results import CheckResult, Status

RunCheck = Callable[..., CheckResult]
NVIDIA = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia"
QUERY = tuple(NVIDIA_SMI_QUERY)


def _info_with_nvidia_runtime() -> dict[str, Any]:
    """`docker info` after `nvidia-ctk runtime configure`: the runtime from daemon.json."""
    info = recorded_docker_info()
    daemon = json.loads((NVIDIA / "daemon-nvidia-runtime.json").read_text())
    info["Runtimes"] = {**info["Runtimes"], **daemon["runtimes"]}
    return info


def test_nvidia_smi_csv_is_parsed_per_gpu() -> None:
    gpus = parse_nvidia_smi((NVIDIA / "nvidia-smi-query-a100x2.csv").read_text())
    assert [(g.index, g.name, g.driver, g.memory_mib) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-40GB", "550.54.15", 40960),
        (1, "NVIDIA A100-SXM4-40GB", "550.54.15", 40960)]
    assert parse_nvidia_smi("garbage\n\n") == []


def test_a_host_without_a_driver_skips_every_gpu_check_and_says_why(
        tmp_path: Path, run_check: RunCheck) -> None:
    host = FakeHost(tmp_path)
    for check_id in ("gpu.driver", "gpu.container-toolkit", "gpu.container"):
        result = run_check(check_id, host)
        assert result.status is Status.SKIP, check_id
        assert "no NVIDIA driver" in result.summary


def test_the_driver_and_its_gpus_pass(tmp_path: Path, run_check: RunCheck) -> None:
    host = FakeHost(tmp_path, binaries=("docker", "nvidia-smi"), commands={
        QUERY: (NVIDIA / "nvidia-smi-query-a100x2.csv").read_text()})
    result = run_check("gpu.driver", host)
    assert result.status is Status.PASS
    assert result.summary.startswith("2 GPU(s), driver 550.54.15: 0: NVIDIA A100-SXM4-40GB")


def test_a_driver_whose_module_is_not_loaded_fails_with_the_fix(
        tmp_path: Path, run_check: RunCheck) -> None:
    stdout = (NVIDIA / "nvidia-smi-no-module.txt").read_text()
    host = FakeHost(tmp_path, binaries=("docker", "nvidia-smi"), commands={
        QUERY: CommandResult(QUERY, 9, stdout, "")})
    result = run_check("gpu.driver", host)
    assert result.status is Status.FAIL
    assert "couldn't communicate with the NVIDIA driver" in result.summary
    assert "reboot" in result.hint


def test_docker_without_the_toolkit_fails_and_names_the_toolkit(
        tmp_path: Path, run_check: RunCheck) -> None:
    host = FakeHost(tmp_path, binaries=("docker", "nvidia-smi"))
    result = run_check("gpu.container-toolkit", host)
    assert result.status is Status.FAIL
    assert "hostkit bootstrap --gpu" in result.hint
    assert result.fix_step == "gpu-toolkit"
    # and the throwaway container is not even tried
    assert run_check("gpu.container", host).status is Status.SKIP


def test_each_way_docker_hands_out_gpus_is_recognised(tmp_path: Path, run_check: RunCheck) -> None:
    runtime = FakeHost(tmp_path / "a", binaries=("docker", "nvidia-smi"),
                       docker=FakeDocker(_info_with_nvidia_runtime()))
    assert run_check("gpu.container-toolkit", runtime).actual == "runtime"
    hook = FakeHost(tmp_path / "b", binaries=("docker", "nvidia-smi",
                                              "nvidia-container-runtime-hook"))
    assert run_check("gpu.container-toolkit", hook).actual == "device-requests"
    info = recorded_docker_info()
    info["CDISpecDirs"] = ["/etc/cdi", "/var/run/cdi"]
    cdi = FakeHost(tmp_path / "c", binaries=("docker", "nvidia-smi"), docker=FakeDocker(info))
    cdi.files({"/etc/cdi/nvidia.yaml": "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n"})
    assert run_check("gpu.container-toolkit", cdi).actual == "cdi"


class _GpuContainers:
    """containers.run as Docker answers it on a GPU host, recording what was asked."""

    def __init__(self, output: bytes) -> None:
        self.output = output
        self.asked: dict[str, Any] = {}

    def run(self, image: str, command: list[str], **kwargs: Any) -> bytes:
        self.asked = {"image": image, "command": command, **kwargs}
        return self.output


class _Image:
    tags = ("hostkit/jupyterhub:5.5.4",)


def test_a_container_asks_for_one_gpu_and_lists_it(tmp_path: Path, run_check: RunCheck) -> None:
    docker = FakeDocker(_info_with_nvidia_runtime())
    docker.images.items = [_Image()]
    containers = _GpuContainers(b"GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5f1c)\n")
    docker.containers = containers  # type: ignore[assignment]
    host = FakeHost(tmp_path, binaries=("docker", "nvidia-smi"), docker=docker)
    result = run_check("gpu.container", host)
    assert result.status is Status.PASS
    assert result.summary == "a container sees GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5f1c)"
    request = containers.asked["device_requests"][0]
    assert (request["Count"], request["Capabilities"]) == (1, [["gpu", "utility"]])
    assert containers.asked["remove"] is True
