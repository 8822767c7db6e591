"""Probes of the environments the deployed stack offers (HOSTKIT_PROFILES in its .env)."""

from __future__ import annotations

from typing import Callable

from hostkit.doctor import ProbeContext
from hostkit.environments import ENVIRONMENTS, PROFILES_KEY, parse_profiles
from hostkit.errors import HostkitError, UsageError
from hostkit.probes import probe
from hostkit.results import Outcome


def profile_images(env: dict[str, str]) -> dict[str, str]:
    """Profile -> image, as the hub will resolve it from the deployed .env ("" when unnamed)."""
    out = {}
    for key in parse_profiles(env.get(PROFILES_KEY, "")):
        own = env.get(f"HOSTKIT_PROFILE_{key.upper().replace('-', '_')}_IMAGE", "")
        known = ENVIRONMENTS.get(key)
        out[key] = own or (env.get(known.image_setting, "") if known else "")
    return out


def judge_environments(env: dict[str, str], present: Callable[[str], bool]) -> Outcome:
    """Every enabled profile's image is on the host; a `gpu` profile the hub hides is a WARN."""
    try:
        images = profile_images(env)
    except UsageError as exc:
        return Outcome.fail(exc.message, hint=exc.hint)
    missing = [f"{key} ({image or 'no image named'})" for key, image in images.items()
               if not image or not present(image)]
    if missing:
        return Outcome.fail(
            "enabled environments without their image: " + ", ".join(missing),
            hint=f"hostkit stack build --profiles {','.join(images)}, or name the image "
                 "(HOSTKIT_PROFILE_<KEY>_IMAGE)")
    if "gpu" in images and env.get("HOSTKIT_GPU_READY") != "1":
        return Outcome.warn("the gpu environment is enabled but not offered: the GPU checks "
                            "did not pass at the last `hostkit stack up`",
                            hint="fix the gpu.* checks, then `hostkit stack up` again")
    return Outcome.ok("offered: " + ", ".join(f"{k} ({v})" for k, v in images.items()),
                      actual=",".join(images))


@probe("stack_environments")
def stack_environments(ctx: ProbeContext) -> Outcome:
    path = f"{ctx.settings.deploy_dir}/.env"
    if not ctx.host.exists(path):
        return Outcome.skip(f"stack not deployed (no {path})")
    try:
        text = ctx.host.read_text(path)
    except HostkitError as exc:
        return Outcome.skip(f"cannot read {path}: {exc.message}", hint="run the doctor as root")
    env = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    client = ctx.facts.docker_client()

    def present(image: str) -> bool:
        try:
            client.images.get(image)
        except Exception:  # docker's NotFound or ImageNotFound: either way, not usable
            return False
        return True

    return judge_environments(env, present)
