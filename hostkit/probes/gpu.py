"""NVIDIA GPUs: the driver and what it sees, the container toolkit, and a container that sees one.

On a host without an NVIDIA driver every GPU check is a SKIP that says so: most hubs have
no GPU, and that is not a fault.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from hostkit.doctor import ProbeContext
from hostkit.errors import CheckNotApplicable, HostkitError
from hostkit.probes import probe
from hostkit.results import Outcome

# Docker's `--gpus` (device_requests) calls GPU_HOOK, installed by nvidia-container-toolkit
from hostkit.subsystems.gpu import GPU_HOOK, has_nvidia_driver

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total",
                    "--format=csv,noheader,nounits"]
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
TOOLKIT_HINT = ("hostkit bootstrap --gpu installs NVIDIA's nvidia-container-toolkit (or install "
                "it from NVIDIA's repository by hand)")


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str
    driver: str
    memory_mib: int


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """The CSV of NVIDIA_SMI_QUERY (pure); malformed lines are left out."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        memory = parts[3].split()[0] if parts[3] else "0"
        gpus.append(Gpu(int(parts[0]), parts[1], parts[2],
                        int(memory) if memory.isdigit() else 0))
    return gpus


def _no_driver(ctx: ProbeContext) -> bool:
    return not has_nvidia_driver(ctx.host)


def host_gpus(ctx: ProbeContext) -> list[Gpu]:
    """The GPUs the driver sees; CheckNotApplicable where there is no NVIDIA driver."""
    if _no_driver(ctx):
        raise CheckNotApplicable("no NVIDIA driver on this host (no nvidia-smi): no GPUs to offer")
    res = ctx.host.run(NVIDIA_SMI_QUERY, timeout=20)
    if not res.ok:
        why = (res.stderr or res.stdout).strip().splitlines()
        raise HostkitError(f"nvidia-smi fails: {why[0] if why else f'exit {res.returncode}'}",
                           "the NVIDIA kernel module is not loaded: reboot after a driver "
                           "install or upgrade (Secure Boot needs the module signed)")
    return parse_nvidia_smi(res.stdout)


@probe("gpu_driver")
def gpu_driver(ctx: ProbeContext) -> Outcome:
    try:
        gpus = host_gpus(ctx)
    except CheckNotApplicable as exc:
        return Outcome.skip(exc.message)
    except HostkitError as exc:
        return Outcome.fail(exc.message, hint=exc.hint)
    if not gpus:
        return Outcome.fail("the NVIDIA driver is installed but sees no GPU",
                            hint="check `nvidia-smi` and `lspci | grep -i nvidia`")
    names = ", ".join(f"{g.index}: {g.name} ({g.memory_mib} MiB)" for g in gpus)
    return Outcome.ok(f"{len(gpus)} GPU(s), driver {gpus[0].driver}: {names}",
                      actual=str(len(gpus)))


def docker_gpu_support(ctx: ProbeContext, info: dict[str, Any]) -> list[str]:
    """How Docker can hand GPUs to containers here: 'device-requests', 'runtime', 'cdi'."""
    ways = []
    if ctx.host.which(GPU_HOOK):
        ways.append("device-requests")
    if "nvidia" in (info.get("Runtimes") or {}):
        ways.append("runtime")
    if info.get("CDISpecDirs") is not None and _nvidia_cdi_spec(ctx):
        ways.append("cdi")
    return ways


def _nvidia_cdi_spec(ctx: ProbeContext) -> bool:
    for directory in CDI_DIRS:
        for name in ctx.host.listdir(directory):
            if name.endswith((".yaml", ".yml", ".json")):
                with contextlib.suppress(HostkitError):
                    if "nvidia.com/gpu" in ctx.host.read_text(f"{directory}/{name}"):
                        return True
    return False


@probe("gpu_container_toolkit")
def gpu_container_toolkit(ctx: ProbeContext) -> Outcome:
    if _no_driver(ctx):
        return Outcome.skip("no NVIDIA driver on this host: nothing for Docker to pass on")
    ways = docker_gpu_support(ctx, ctx.facts.docker_info())
    if not ways:
        return Outcome.fail("Docker cannot hand GPUs to containers: no NVIDIA container "
                            "toolkit (hook, runtime or CDI spec)", hint=TOOLKIT_HINT)
    return Outcome.ok("Docker hands GPUs to containers via " + ", ".join(ways),
                      actual=",".join(ways))


@probe("gpu_container")
def gpu_container(ctx: ProbeContext) -> Outcome:
    """A throwaway container asks for one GPU and lists what it sees."""
    from docker.types import DeviceRequest

    from hostkit.probes.containers import pick_probe_image

    if _no_driver(ctx):
        return Outcome.skip("no NVIDIA driver on this host")
    if not docker_gpu_support(ctx, ctx.facts.docker_info()):
        return Outcome.skip("needs gpu.container-toolkit")
    client = ctx.facts.docker_client()
    image = pick_probe_image(ctx)
    try:
        # the toolkit mounts nvidia-smi into the container for the `utility` capability
        output = client.containers.run(
            image, ["nvidia-smi", "-L"], remove=True, labels={"hostkit.probe": "1"},
            device_requests=[DeviceRequest(count=1, capabilities=[["gpu", "utility"]])],
            entrypoint=[])
    except Exception as exc:  # the API's error says why: no such device, hook failed, …
        return Outcome.fail(f"a container asking for a GPU failed: {_first_line(exc)}",
                            hint=TOOLKIT_HINT)
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    seen = [ln for ln in text.splitlines() if ln.startswith("GPU ")]
    if not seen:
        return Outcome.fail("a container asking for a GPU saw none", actual=text.strip()[:200],
                            hint=TOOLKIT_HINT)
    return Outcome.ok(f"a container sees {seen[0]}", actual=json.dumps(seen))


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
