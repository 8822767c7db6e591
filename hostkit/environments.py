"""The environments a site can offer its users, and the images each one needs.

An environment (a "profile" on the spawn page) is an image plus its limits. The site lists
the ones it offers in `.env` (`HOSTKIT_PROFILES=datascience,sage`); `hostkit stack build`
and `up` build only the images those need, so a site that wants only the default pays
nothing for the others. What the hub does with the list is in `stack/hostkit_profiles.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from hostkit.errors import UsageError
from hostkit.host import LocalHost

if TYPE_CHECKING:  # pragma: no cover - types only: images imports this module
    from hostkit.images import BuildReport, ImageBuilder

PROFILES_KEY = "HOSTKIT_PROFILES"
DEFAULT_PROFILES = ("datascience",)


@dataclass(frozen=True)
class Environment:
    """One environment hostkit knows how to build."""

    key: str
    title: str
    image_role: str  # the BuildReport role whose image it runs
    image_setting: str  # the .env key that names its image


ENVIRONMENTS: dict[str, Environment] = {
    env.key: env
    for env in (
        Environment("datascience", "Data science", "singleuser", "HOSTKIT_NOTEBOOK_IMAGE"),
        Environment("sage", "SageMath", "sage", "HOSTKIT_SAGE_IMAGE"),
        # the data-science image with GPUs handed in: no image of its own
        Environment("gpu", "Data science with a GPU", "singleuser", "HOSTKIT_NOTEBOOK_IMAGE"),
    )
}


def parse_profiles(value: str) -> tuple[str, ...]:
    """The profile keys in a HOSTKIT_PROFILES value, in order, each once.

    Keys hostkit has no recipe for are allowed when the site names their image itself
    (`HOSTKIT_PROFILE_<KEY>_IMAGE`), which the hub checks; here they only need a sane name.
    """
    keys: list[str] = []
    for raw in value.split(","):
        key = raw.strip().lower()
        if not key:
            continue
        if not key.replace("-", "").replace("_", "").isalnum():
            raise UsageError(
                f"{PROFILES_KEY}: {raw.strip()!r} is not a profile name",
                f"letters, digits, - and _; known: {', '.join(ENVIRONMENTS)}",
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys) or DEFAULT_PROFILES


def build_environment_images(builder: ImageBuilder, report: BuildReport, profiles: tuple[str, ...]) -> None:
    """Build the images of the enabled environments beyond the default ones."""
    if "sage" in profiles:
        build_sage(builder, report)


def build_sage(builder: ImageBuilder, report: BuildReport) -> str:
    """The SageMath image: passagemath on a notebook base made on SAGE_DEBIAN_SUITE.

    The notebook base is always built here (the upstream datascience-notebook carries a
    Python that passagemath's binary wheels do not cover); its Debian base is pulled when
    allowed and reachable, else made with debootstrap.
    """
    v = builder.versions
    suite = v["SAGE_DEBIAN_SUITE"]
    debian = ""
    if builder.options.base in ("auto", "upstream") and builder.try_pull(v["UPSTREAM_SAGE_DEBIAN_IMAGE"]):
        debian = v["UPSTREAM_SAGE_DEBIAN_IMAGE"]
    if not debian:
        debian = builder.debian_base(report, suite)
    notebook = builder.build(f"notebook-base-{suite}", builder.notebook_base_spec(debian, suite), report)
    return builder.build("sage", builder.sage_spec(notebook), report)


@dataclass(frozen=True)
class GpuReadiness:
    """Whether the doctor's GPU checks pass here, which GPUs there are, and why not."""

    ready: bool
    devices: tuple[str, ...]
    reason: str


def gpu_readiness(host: LocalHost) -> GpuReadiness:
    """Run the doctor's `gpu.*` checks: the `gpu` profile is offered only when all pass."""
    from hostkit.catalogue import load_catalogue
    from hostkit.doctor import ProbeContext, run_checks
    from hostkit.facts import Facts
    from hostkit.probes.gpu import host_gpus
    from hostkit.results import Status
    from hostkit.settings import DEFAULTS

    ctx = ProbeContext(host, Facts(host), DEFAULTS)
    specs = [spec for spec in load_catalogue() if spec.id.startswith("gpu.")]
    failed = [r for r in run_checks(specs, ctx) if r.status is not Status.PASS]
    if failed:
        return GpuReadiness(False, (), "; ".join(f"{r.id}: {r.status.value} ({r.summary})" for r in failed))
    return GpuReadiness(True, tuple(str(g.index) for g in host_gpus(ctx)), "")


def environment_images(images: dict[str, str]) -> dict[str, str]:
    """The .env image settings of the environments a build made (beyond the default one)."""
    return {
        env.image_setting: images[env.image_role]
        for env in ENVIRONMENTS.values()
        if env.image_role in images and env.image_role != "singleuser"
    }


def environment_readiness(
    host: LocalHost, profiles: tuple[str, ...], log: Callable[[str], None]
) -> dict[str, str]:
    """The .env values that offer or hide the `gpu` profile (the doctor's GPU checks decide)."""
    if "gpu" not in profiles:
        return {}
    readiness = gpu_readiness(host)
    if not readiness.ready:
        log(f"the gpu environment is not offered: {readiness.reason} (see `hostkit doctor --only gpu`)")
    return {
        "HOSTKIT_GPU_READY": "1" if readiness.ready else "0",
        "HOSTKIT_GPU_DEVICES": ",".join(readiness.devices),
    }
