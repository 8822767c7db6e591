"""Environments users choose on the spawn page: hostkit's profiles for DockerSpawner.

Loaded by jupyterhub_config.py. The site lists what it offers in `.env`:

    HOSTKIT_PROFILES=datascience,sage,gpu       menu order; the first is the default
    HOSTKIT_PROFILE_<KEY>_IMAGE / _MEM_LIMIT / _CPU_LIMIT / _GROUPS / _NAME / _DESCRIPTION
    HOSTKIT_GPU_MODE=per-user | shared          one GPU each (default), or every GPU to all
    HOSTKIT_GPU_READY=1, HOSTKIT_GPU_DEVICES=0,1  written by `hostkit stack up` from the doctor

A user only ever gets a profile from this list that they may use (`_GROUPS`: JupyterHub
groups, empty for everyone): the spawn form offers nothing else, and `user_options` from the
REST API that name anything else — another image, an unknown key, a profile of a group they
are not in — are refused before a container is created. With one profile, no form is shown.

Pure Python apart from tornado's HTTPError, so it is unit-tested without a hub.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

try:
    from tornado.web import HTTPError
except ImportError:  # pragma: no cover - unit tests run without tornado

    class HTTPError(Exception):  # type: ignore[no-redef]
        """Stand-in for tornado's HTTPError (status code and message)."""

        def __init__(self, status_code: int, log_message: str = "", *args: object) -> None:
            super().__init__(status_code, log_message)
            self.status_code = status_code
            self.log_message = log_message


OPTION_KEY = "profile"
GPU_MODES = ("per-user", "shared")


@dataclass(frozen=True)
class Profile:
    """One environment on the menu."""

    key: str
    display_name: str
    description: str
    image: str
    mem_limit: str
    cpu_limit: float
    groups: tuple[str, ...] = ()  # empty: everyone
    gpu: bool = False


# key -> (name, description, setting naming its image, default image)
BUILTIN: dict[str, tuple[str, str, str, str]] = {
    "datascience": (
        "Data science",
        "Python, R and Octave: pandas, scikit-learn, PySpark, plotly, bokeh.",
        "HOSTKIT_NOTEBOOK_IMAGE",
        "hostkit/singleuser:full",
    ),
    "sage": (
        "SageMath",
        "SageMath (passagemath) with its own kernel, beside Python, R and Octave.",
        "HOSTKIT_SAGE_IMAGE",
        "hostkit/sage:latest",
    ),
    "gpu": (
        "Data science with a GPU",
        "The data-science environment with an NVIDIA GPU.",
        "HOSTKIT_NOTEBOOK_IMAGE",
        "hostkit/singleuser:full",
    ),
}


def _get(environ: Mapping[str, str], name: str, default: str = "") -> str:
    return (environ.get(name) or "").strip() or default


def _prefix(key: str) -> str:
    return "HOSTKIT_PROFILE_" + key.upper().replace("-", "_") + "_"


def load_profiles(environ: Mapping[str, str]) -> list[Profile]:
    """The profiles this site offers, in menu order.

    A key hostkit has no recipe for needs its own `_IMAGE`; the `gpu` profile is left out
    unless the host can hand GPUs to containers (HOSTKIT_GPU_READY=1).
    """
    keys = [k.strip().lower() for k in _get(environ, "HOSTKIT_PROFILES", "datascience").split(",")]
    profiles: list[Profile] = []
    for key in dict.fromkeys(k for k in keys if k):
        if key == "gpu" and _get(environ, "HOSTKIT_GPU_READY") != "1":
            continue
        prefix = _prefix(key)
        name, description, image_setting, image_default = BUILTIN.get(key, (key, "", "", ""))
        image = _get(environ, prefix + "IMAGE", _get(environ, image_setting, image_default))
        if not image:
            raise ValueError(f"profile {key!r}: no image (set {prefix}IMAGE)")
        groups = tuple(g.strip() for g in _get(environ, prefix + "GROUPS").split(",") if g.strip())
        profiles.append(
            Profile(
                key=key,
                display_name=_get(environ, prefix + "NAME", name),
                description=_get(environ, prefix + "DESCRIPTION", description),
                image=image,
                mem_limit=_get(environ, prefix + "MEM_LIMIT", _get(environ, "HOSTKIT_MEM_LIMIT", "4G")),
                cpu_limit=float(_get(environ, prefix + "CPU_LIMIT", _get(environ, "HOSTKIT_CPU_LIMIT", "2"))),
                groups=groups,
                gpu=key == "gpu",
            )
        )
    if not profiles:
        raise ValueError("HOSTKIT_PROFILES leaves no profile to offer")
    return profiles


def allowed_for(profiles: list[Profile], user_groups: set[str]) -> list[Profile]:
    """The profiles a user in these groups may start."""
    return [p for p in profiles if not p.groups or user_groups & set(p.groups)]


def user_groups(spawner: Any) -> set[str]:
    """Names of the JupyterHub groups of the spawner's user."""
    return {str(getattr(g, "name", g)) for g in (getattr(spawner.user, "groups", None) or [])}


def render_form(profiles: list[Profile]) -> str:
    """The spawn page's choice (radio buttons, first checked); "" for one profile or none."""
    if len(profiles) <= 1:
        return ""
    rows = []
    for i, p in enumerate(profiles):
        checked = " checked" if i == 0 else ""
        limits = f"{p.mem_limit} memory, {p.cpu_limit:g} CPU" + (", GPU" if p.gpu else "")
        rows.append(
            '<div class="form-check mb-2">'
            f'<input class="form-check-input" type="radio" name="{OPTION_KEY}" '
            f'id="profile-{html.escape(p.key)}" value="{html.escape(p.key)}"{checked}>'
            f'<label class="form-check-label" for="profile-{html.escape(p.key)}">'
            f"<strong>{html.escape(p.display_name)}</strong> "
            f"<small class=\"text-muted\">({html.escape(limits)})</small><br>"
            f"{html.escape(p.description)}</label></div>"
        )
    return "<p>Choose an environment:</p>\n" + "\n".join(rows)


def choose(profiles: list[Profile], groups: set[str], user_options: Mapping[str, Any]) -> Profile:
    """The profile `user_options` asks for, if this user may have it; else HTTPError."""
    unknown = sorted(set(user_options) - {OPTION_KEY})
    if unknown:
        raise HTTPError(400, f"unsupported server options: {', '.join(unknown)} (choose a profile)")
    allowed = allowed_for(profiles, groups)
    if not allowed:
        raise HTTPError(403, "no environment is open to you here: ask the hub's admin")
    wanted = user_options.get(OPTION_KEY)
    if isinstance(wanted, list) and len(wanted) == 1:  # raw form data
        wanted = wanted[0]
    if wanted in (None, ""):
        return allowed[0]
    if not isinstance(wanted, str):
        raise HTTPError(400, "the profile must be a name")
    for p in allowed:
        if p.key == wanted:
            return p
    if any(p.key == wanted for p in profiles):
        raise HTTPError(403, f"the {wanted!r} environment is restricted to other groups")
    raise HTTPError(400, f"no environment {wanted!r}: choose one of {', '.join(p.key for p in allowed)}")


class GpuAssigner:
    """Which GPU each user's server gets in per-user mode: the least used one.

    Docker does not share out GPUs itself (`count=1` hands every container GPU 0), so the
    hub picks a device id per server and forgets it when the server stops.
    """

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices
        self.holders: dict[str, str] = {}  # server (user/name) -> device id

    def take(self, server: str) -> Optional[str]:
        if not self.devices:
            return None
        if server not in self.holders:
            load = dict.fromkeys(self.devices, 0)
            for device in self.holders.values():
                if device in load:
                    load[device] += 1
            self.holders[server] = min(self.devices, key=lambda d: (load[d], self.devices.index(d)))
        return self.holders[server]

    def release(self, server: str) -> None:
        self.holders.pop(server, None)


def device_requests(mode: str, device: Optional[str]) -> list[dict[str, Any]]:
    """docker-py DeviceRequest arguments: every GPU (shared), one given device, or one GPU."""
    capabilities = [["gpu", "utility", "compute"]]
    if mode == "shared":
        return [{"driver": "nvidia", "count": -1, "capabilities": capabilities}]
    if device is not None:
        return [{"driver": "nvidia", "device_ids": [device], "capabilities": capabilities}]
    return [{"driver": "nvidia", "count": 1, "capabilities": capabilities}]


def forget_options(spawner: Any) -> None:
    """Drop refused options from the hub's database.

    JupyterHub keeps the last `user_options` and reuses them when a start names none (the
    home page's button with a single profile, the REST API without a body): a refused
    choice, or one a user lost by leaving a group, would otherwise refuse every start after.
    """
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is not None and orm_spawner.user_options:
        orm_spawner.user_options = {}
        db = getattr(spawner.user, "db", None)
        if db is not None:
            db.commit()


def configure(c: Any, environ: Optional[Mapping[str, str]] = None) -> list[Profile]:
    """Point JupyterHub's Spawner hooks at the site's profiles; returns them."""
    env = os.environ if environ is None else environ
    profiles = load_profiles(env)
    mode = _get(env, "HOSTKIT_GPU_MODE", "per-user")
    if mode not in GPU_MODES:
        raise ValueError(f"HOSTKIT_GPU_MODE={mode!r}: use one of {', '.join(GPU_MODES)}")
    assigner = GpuAssigner([d.strip() for d in _get(env, "HOSTKIT_GPU_DEVICES").split(",") if d.strip()])
    base_host_config = dict(c.DockerSpawner.extra_host_config or {})

    def options_form(spawner: Any) -> str:
        return render_form(allowed_for(profiles, user_groups(spawner)))

    def options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, str]:
        return {OPTION_KEY: (formdata.get(OPTION_KEY) or [""])[0]}

    def apply_user_options(spawner: Any, user_options: Mapping[str, Any]) -> None:
        try:
            profile = choose(profiles, user_groups(spawner), user_options or {})
        except HTTPError:
            forget_options(spawner)
            raise
        spawner.image = profile.image
        spawner.mem_limit = profile.mem_limit
        spawner.cpu_limit = profile.cpu_limit
        host_config = dict(base_host_config)
        server = f"{spawner.user.name}/{getattr(spawner, 'name', '')}"
        if profile.gpu:
            device = assigner.take(server) if mode == "per-user" else None
            host_config["device_requests"] = device_requests(mode, device)
        else:
            assigner.release(server)
        spawner.extra_host_config = host_config
        spawner.environment = {**dict(spawner.environment or {}), "HOSTKIT_PROFILE": profile.key}
        spawner.log.info("%s starts the %s environment (%s)", spawner.user.name, profile.key, profile.image)

    def post_stop_hook(spawner: Any) -> None:
        assigner.release(f"{spawner.user.name}/{getattr(spawner, 'name', '')}")

    c.Spawner.options_form = options_form
    c.Spawner.options_from_form = options_from_form
    c.Spawner.apply_user_options = apply_user_options
    c.Spawner.post_stop_hook = post_stop_hook
    # DockerSpawner's own image choice stays closed: an `image` option is refused there too.
    c.DockerSpawner.allowed_images = []
    c.DockerSpawner.image = profiles[0].image
    return profiles


