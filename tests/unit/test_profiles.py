"""The hub's menu of environments (stack/hostkit_profiles.py): what each user is offered,
what a crafted `user_options` gets, and the spawner settings each profile produces."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

STACK = Path(__file__).resolve().parents[2] / "stack"


def _load() -> Any:
    path = STACK / "hostkit_profiles.py"
    spec = importlib.util.spec_from_file_location("hostkit_profiles_under_test", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hp = _load()

SITE = {
    "HOSTKIT_PROFILES": "datascience,sage,gpu",
    "HOSTKIT_NOTEBOOK_IMAGE": "hostkit/singleuser:full",
    "HOSTKIT_SAGE_IMAGE": "hostkit/sage:10.8.13",
    "HOSTKIT_MEM_LIMIT": "4G",
    "HOSTKIT_CPU_LIMIT": "2",
    "HOSTKIT_PROFILE_SAGE_MEM_LIMIT": "6G",
    "HOSTKIT_PROFILE_SAGE_CPU_LIMIT": "1.5",
    "HOSTKIT_PROFILE_SAGE_GROUPS": "math101, math202",
    "HOSTKIT_GPU_READY": "1",
    "HOSTKIT_GPU_DEVICES": "0,1",
}


class _Config(dict):  # type: ignore[type-arg]
    def __getattr__(self, name: str) -> Any:
        return self.setdefault(name, types.SimpleNamespace())


class _Spawner:
    """The attributes the hooks read and write on a DockerSpawner."""

    def __init__(self, user: str, groups: tuple[str, ...] = ()) -> None:
        self.user = types.SimpleNamespace(name=user, groups=[types.SimpleNamespace(name=g) for g in groups])
        self.name = ""
        self.image = "unset"
        self.mem_limit: Any = None
        self.cpu_limit: Any = None
        self.extra_host_config: dict[str, Any] = {}
        self.environment = {"HOSTKIT_HOST": "hostkit-host"}
        self.log = types.SimpleNamespace(info=lambda *a: None)


def _hooks(env: dict[str, str]) -> _Config:
    c = _Config()
    c.DockerSpawner.extra_host_config = {"extra_hosts": {"hostkit-host": "10.0.0.1"}}
    hp.configure(c, env)
    return c


def test_default_is_one_profile_the_data_science_image_and_no_form() -> None:
    c = _hooks({"HOSTKIT_NOTEBOOK_IMAGE": "hostkit/singleuser:full"})
    assert c.Spawner.options_form(_Spawner("ann")) == ""
    spawner = _Spawner("ann")
    c.Spawner.apply_user_options(spawner, {})
    assert spawner.image == "hostkit/singleuser:full"
    assert (spawner.mem_limit, spawner.cpu_limit) == ("4G", 2.0)
    assert spawner.extra_host_config == {"extra_hosts": {"hostkit-host": "10.0.0.1"}}
    assert c.DockerSpawner.allowed_images == []  # DockerSpawner's own image option stays closed


def test_each_profile_has_its_own_image_and_limits() -> None:
    profiles = {p.key: p for p in hp.load_profiles(SITE)}
    assert list(profiles) == ["datascience", "sage", "gpu"]
    assert profiles["sage"].image == "hostkit/sage:10.8.13"
    assert (profiles["sage"].mem_limit, profiles["sage"].cpu_limit) == ("6G", 1.5)
    assert profiles["sage"].groups == ("math101", "math202")
    assert (profiles["datascience"].mem_limit, profiles["datascience"].cpu_limit) == ("4G", 2.0)
    assert profiles["gpu"].image == "hostkit/singleuser:full"
    assert profiles["gpu"].gpu


def test_the_form_offers_only_what_the_user_may_start() -> None:
    c = _hooks(SITE)
    outsider = c.Spawner.options_form(_Spawner("bob"))
    assert 'value="datascience"' in outsider
    assert 'value="gpu"' in outsider
    assert 'value="sage"' not in outsider
    student = c.Spawner.options_form(_Spawner("ann", ("math101",)))
    assert 'value="sage"' in student
    assert "SageMath" in student
    assert "6G memory" in student


def test_a_single_profile_left_for_a_user_shows_no_form() -> None:
    c = _hooks({**SITE, "HOSTKIT_PROFILES": "datascience,sage"})
    assert c.Spawner.options_form(_Spawner("bob")) == ""
    assert "<input" in c.Spawner.options_form(_Spawner("ann", ("math202",)))


def test_form_data_becomes_a_profile_choice() -> None:
    c = _hooks(SITE)
    assert c.Spawner.options_from_form({"profile": ["sage"]}) == {"profile": "sage"}
    assert c.Spawner.options_from_form({}) == {"profile": ""}


def test_a_group_member_gets_the_restricted_profile() -> None:
    c = _hooks(SITE)
    spawner = _Spawner("ann", ("math101",))
    c.Spawner.apply_user_options(spawner, {"profile": "sage"})
    assert spawner.image == "hostkit/sage:10.8.13"
    assert (spawner.mem_limit, spawner.cpu_limit) == ("6G", 1.5)
    assert spawner.environment["HOSTKIT_PROFILE"] == "sage"
    assert spawner.environment["HOSTKIT_HOST"] == "hostkit-host"


@pytest.mark.parametrize(
    ("options", "status"),
    [
        ({"profile": "sage"}, 403),  # restricted to groups bob is not in
        ({"image": "busybox"}, 400),  # DockerSpawner's own option: never honoured
        ({"profile": "datascience", "image": "busybox"}, 400),
        ({"profile": "busybox"}, 400),  # not on the menu
        ({"profile": ["a", "b"]}, 400),
        ({"profile": 3}, 400),
    ],
)
def test_crafted_user_options_are_refused_before_any_container(options: dict[str, Any], status: int) -> None:
    c = _hooks(SITE)
    spawner = _Spawner("bob")
    with pytest.raises(hp.HTTPError) as caught:
        c.Spawner.apply_user_options(spawner, options)
    assert caught.value.status_code == status
    assert spawner.image == "unset"


def test_a_refused_choice_is_not_kept_as_the_next_starts_default() -> None:
    c = _hooks(SITE)
    spawner = _Spawner("bob")
    commits: list[bool] = []
    spawner.orm_spawner = types.SimpleNamespace(user_options={"profile": "sage"})  # type: ignore[attr-defined]
    spawner.user.db = types.SimpleNamespace(commit=lambda: commits.append(True))
    with pytest.raises(hp.HTTPError):
        c.Spawner.apply_user_options(spawner, {"profile": "sage"})
    assert spawner.orm_spawner.user_options == {}  # type: ignore[attr-defined]
    assert commits == [True]
    c.Spawner.apply_user_options(spawner, {})
    assert spawner.image == "hostkit/singleuser:full"


def test_a_user_with_no_open_profile_is_refused() -> None:
    c = _hooks({**SITE, "HOSTKIT_PROFILES": "sage"})
    with pytest.raises(hp.HTTPError) as caught:
        c.Spawner.apply_user_options(_Spawner("bob"), {})
    assert caught.value.status_code == 403


def test_the_gpu_profile_needs_the_doctors_gpu_checks() -> None:
    keys = [p.key for p in hp.load_profiles({**SITE, "HOSTKIT_GPU_READY": "0"})]
    assert keys == ["datascience", "sage"]
    assert "gpu" not in [p.key for p in hp.load_profiles({k: v for k, v in SITE.items() if "GPU" not in k})]


def test_per_user_gpus_go_to_the_least_used_device_and_come_back_on_stop() -> None:
    c = _hooks(SITE)
    first, second, third = _Spawner("ann"), _Spawner("bob"), _Spawner("cy")
    for spawner in (first, second, third):
        c.Spawner.apply_user_options(spawner, {"profile": "gpu"})
    ids = [s.extra_host_config["device_requests"][0]["device_ids"] for s in (first, second, third)]
    assert ids == [["0"], ["1"], ["0"]]
    request = first.extra_host_config["device_requests"][0]
    assert request["driver"] == "nvidia"
    assert ["gpu", "utility", "compute"] in request["capabilities"]
    assert first.extra_host_config["extra_hosts"] == {"hostkit-host": "10.0.0.1"}
    c.Spawner.post_stop_hook(second)
    fourth = _Spawner("dee")
    c.Spawner.apply_user_options(fourth, {"profile": "gpu"})
    assert fourth.extra_host_config["device_requests"][0]["device_ids"] == ["1"]


def test_switching_away_from_the_gpu_profile_drops_the_request() -> None:
    c = _hooks(SITE)
    spawner = _Spawner("ann")
    c.Spawner.apply_user_options(spawner, {"profile": "gpu"})
    c.Spawner.apply_user_options(spawner, {"profile": "datascience"})
    assert "device_requests" not in spawner.extra_host_config


def test_shared_gpus_hand_every_gpu_to_every_server() -> None:
    c = _hooks({**SITE, "HOSTKIT_GPU_MODE": "shared"})
    spawner = _Spawner("ann")
    c.Spawner.apply_user_options(spawner, {"profile": "gpu"})
    (request,) = spawner.extra_host_config["device_requests"]
    assert request["count"] == -1
    assert "device_ids" not in request


def test_without_known_devices_one_gpu_is_requested() -> None:
    assert hp.device_requests("per-user", None)[0]["count"] == 1


def test_device_requests_are_what_docker_py_accepts() -> None:
    docker_types = pytest.importorskip("docker.types")
    for mode, device in (("per-user", "1"), ("shared", None), ("per-user", None)):
        for request in hp.device_requests(mode, device):
            built = docker_types.DeviceRequest(**request)
            assert built["Driver"] == "nvidia"
            assert built["Capabilities"] == [["gpu", "utility", "compute"]]


def test_a_site_profile_needs_an_image_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="no image"):
        hp.load_profiles({"HOSTKIT_PROFILES": "stats"})
    (stats,) = hp.load_profiles({"HOSTKIT_PROFILES": "stats", "HOSTKIT_PROFILE_STATS_IMAGE": "site/stats:1"})
    assert stats.image == "site/stats:1"
    assert stats.display_name == "stats"
    with pytest.raises(ValueError, match="HOSTKIT_GPU_MODE"):
        hp.configure(_Config(), {**SITE, "HOSTKIT_GPU_MODE": "half"})


def test_form_text_is_escaped() -> None:
    env = {**SITE, "HOSTKIT_PROFILE_SAGE_GROUPS": ""}
    env["HOSTKIT_PROFILE_SAGE_DESCRIPTION"] = "<script>x</script>"
    form = hp.render_form(hp.load_profiles(env))
    assert "<script>" not in form
    assert "&lt;script&gt;" in form
