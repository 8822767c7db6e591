"""The doctor's machinery: concurrency, time limits, broken probes, selection, catalogues."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fakes import FakeHost

from hostkit.catalogue import load_catalogue, select
from hostkit.doctor import ProbeContext, resolve_params, run_checks
from hostkit.errors import HostkitError, UsageError
from hostkit.facts import Facts
from hostkit.probes import PROBES
from hostkit.results import CheckSpec, Outcome, Status, exit_code
from hostkit.settings import Settings


def ctx(tmp_path: Path) -> ProbeContext:
    host = FakeHost(tmp_path)
    return ProbeContext(host, Facts(host), Settings())


@pytest.fixture
def test_probes(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    release = threading.Event()

    def hangs(_ctx: ProbeContext) -> Outcome:
        release.wait(10)
        return Outcome.ok("late")

    def crashes(_ctx: ProbeContext) -> Outcome:
        raise KeyError("boom")

    def refuses(_ctx: ProbeContext) -> Outcome:
        raise HostkitError("/etc/x: permission denied", "run as root")

    def fine(_ctx: ProbeContext, word: str = "ok") -> Outcome:
        return Outcome.ok(word)

    for name, func in (("t_hangs", hangs), ("t_crashes", crashes), ("t_refuses", refuses), ("t_fine", fine)):
        monkeypatch.setitem(PROBES, name, func)
    yield release
    release.set()


def spec(check_id: str, probe: str, **kw) -> CheckSpec:
    return CheckSpec(id=check_id, title=check_id, probe=probe, group="t", **kw)


def test_hanging_probe_becomes_error_after_its_timeout_and_others_finish(tmp_path, test_probes) -> None:
    specs = [spec("a", "t_hangs", timeout=0.3), spec("b", "t_fine")]
    results = run_checks(specs, ctx(tmp_path))
    assert [r.id for r in results] == ["a", "b"]
    assert results[0].status is Status.ERROR
    assert results[0].summary == "no answer within 0.3s (probe t_hangs)"
    assert results[1].status is Status.PASS


def test_queued_checks_do_not_time_out_while_waiting_for_a_worker(tmp_path, test_probes) -> None:
    # one worker: the second check waits behind the first, longer than its own time limit
    specs = [spec("slow", "t_hangs", timeout=0.4), spec("quick", "t_fine", timeout=0.2)]
    # once the slow check is given up on, let its thread finish so the worker frees up
    results = run_checks(specs, ctx(tmp_path), workers=1, on_result=lambda r: test_probes.set())
    assert results[0].status is Status.ERROR
    assert results[1].status is Status.PASS


def test_crashing_probe_is_an_error_result_not_a_crash(tmp_path, test_probes) -> None:
    (r,) = run_checks([spec("c", "t_crashes")], ctx(tmp_path))
    assert r.status is Status.ERROR
    assert r.summary == "probe t_crashes crashed: KeyError: 'boom'"


def test_hostkit_error_in_probe_keeps_its_hint(tmp_path, test_probes) -> None:
    (r,) = run_checks([spec("r", "t_refuses")], ctx(tmp_path))
    assert (r.status, r.hint) == (Status.ERROR, "run as root")


def test_checks_run_concurrently(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def sleepy(_ctx: ProbeContext) -> Outcome:
        time.sleep(0.3)
        return Outcome.ok("slept")

    monkeypatch.setitem(PROBES, "t_sleepy", sleepy)
    start = time.monotonic()
    results = run_checks([spec(f"s{i}", "t_sleepy") for i in range(8)], ctx(tmp_path), workers=8)
    assert all(r.status is Status.PASS for r in results)
    # eight 0.3 s probes one after another would take 2.4 s
    assert time.monotonic() - start < 2.0


def test_warn_severity_downgrades_a_failure(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROBES, "t_fails", lambda _c: Outcome.fail("bad"))
    (r,) = run_checks(
        [spec("w", "t_fails", severity="warn", hint="do x", fix_step="daemon-json")], ctx(tmp_path)
    )
    assert (r.status, r.hint, r.fix_step) == (Status.WARN, "do x", "daemon-json")
    assert exit_code([r]) == 0
    assert exit_code([r], strict=True) == 1


def test_settings_are_substituted_into_params() -> None:
    assert resolve_params({"port": "$public_port", "x": "plain"}, Settings(public_port=9443)) == {
        "port": 9443,
        "x": "plain",
    }
    with pytest.raises(HostkitError, match=r"unknown setting 'nope'"):
        resolve_params({"p": "$nope"}, Settings())


def test_bundled_catalogue_loads_and_names_only_known_probes() -> None:
    specs = load_catalogue()
    ids = [s.id for s in specs]
    assert len(ids) == len(set(ids))
    assert {"docker.daemon", "firewall.docker0-zone", "tls.san", "dns.container"} <= set(ids)
    assert all(s.probe in PROBES for s in specs)
    assert all(resolve_params(s.params, Settings()) is not None for s in specs)


def test_user_catalogue_adds_and_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text(
        '[[check]]\nid = "docker.version"\ntitle = "Docker new enough here"\n'
        'probe = "docker_version"\nparams = { minimum = "27.0" }\n\n'
        '[[check]]\nid = "site.port"\ntitle = "Port 8443 free"\nprobe = "public_port"\n'
        "params = { port = 8443 }\n"
    )
    specs = {s.id: s for s in load_catalogue([extra])}
    assert specs["docker.version"].params == {"minimum": "27.0"}
    assert specs["site.port"].group == "site"


def test_user_catalogue_with_unknown_probe_is_a_usage_error(tmp_path: Path) -> None:
    extra = tmp_path / "bad.toml"
    extra.write_text('[[check]]\nid = "x.y"\ntitle = "t"\nprobe = "no_such_probe"\n')
    with pytest.raises(UsageError, match="unknown probe 'no_such_probe'"):
        load_catalogue([extra])


def test_user_catalogue_with_bad_toml_names_the_file(tmp_path: Path) -> None:
    extra = tmp_path / "bad.toml"
    extra.write_text("[[check]\n")
    with pytest.raises(UsageError, match=r"bad\.toml"):
        load_catalogue([extra])


def test_select_by_id_prefix_and_tag() -> None:
    specs = load_catalogue()
    assert {s.group for s in select(specs, ["tls"], None)} == {"tls"}
    assert [s.id for s in select(specs, ["docker.daemon"], None)] == ["docker.daemon"]
    assert not any(s.group == "stack" for s in select(specs, None, ["stack"]))
    with pytest.raises(UsageError, match="nothing matches 'nope'"):
        select(specs, ["nope"], None)


def test_probe_that_cannot_be_made_here_is_a_skip_not_an_error(tmp_path, monkeypatch) -> None:
    from hostkit.probes.containers import NoProbeImage

    def no_image(_ctx: ProbeContext) -> Outcome:
        raise NoProbeImage("no local image to run a test container from", "hostkit stack build")

    monkeypatch.setitem(PROBES, "t_no_image", no_image)
    (r,) = run_checks([spec("n", "t_no_image")], ctx(tmp_path))
    assert (r.status, r.hint) == (Status.SKIP, "hostkit stack build")
    assert exit_code([r]) == 0


def test_a_probe_given_up_on_frees_its_worker_for_the_queue(tmp_path, test_probes) -> None:
    # one worker and a probe that never answers: the queued check still runs after the timeout
    specs = [spec("stuck", "t_hangs", timeout=0.3), spec("next", "t_fine", timeout=0.5)]
    start = time.monotonic()
    results = run_checks(specs, ctx(tmp_path), workers=1)
    assert [r.status for r in results] == [Status.ERROR, Status.PASS]
    assert time.monotonic() - start < 2.0


# ---- needs: one root cause, its dependents step aside ---------------------------------------
def test_dependents_of_a_failed_check_skip_naming_it_and_their_probe_never_runs(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    monkeypatch.setitem(PROBES, "t_down", lambda _c: Outcome.fail("the daemon does not answer"))
    monkeypatch.setitem(PROBES, "t_uses", lambda _c: ran.append("uses") or Outcome.ok("fine"))
    specs = [spec("t.uses", "t_uses", needs=("t.root",)), spec("t.root", "t_down")]
    by_id = {r.id: r for r in run_checks(specs, ctx(tmp_path))}
    assert by_id["t.root"].status is Status.FAIL
    assert (by_id["t.uses"].status, by_id["t.uses"].summary) == (Status.SKIP, "needs t.root")
    assert by_id["t.uses"].hint == ""
    assert ran == []


@pytest.mark.parametrize("outcome", [Outcome.ok("up"), Outcome.warn("up, but")])
def test_dependents_of_a_passing_or_warning_check_run(tmp_path, monkeypatch, outcome) -> None:
    monkeypatch.setitem(PROBES, "t_root", lambda _c: outcome)
    monkeypatch.setitem(PROBES, "t_fine", lambda _c: Outcome.ok("ran"))
    specs = [spec("t.root", "t_root"), spec("t.uses", "t_fine", needs=("t.root",))]
    assert run_checks(specs, ctx(tmp_path))[1].summary == "ran"


def test_dependents_of_a_check_that_errored_or_skipped_skip_too(tmp_path, test_probes) -> None:
    specs = [
        spec("t.broken", "t_crashes"),
        spec("t.a", "t_fine", needs=("t.broken",)),
        spec("t.b", "t_fine", needs=("t.a",)),  # a chain: b needs a needs broken
    ]
    results = run_checks(specs, ctx(tmp_path))
    assert [(r.status, r.summary) for r in results[1:]] == [
        (Status.SKIP, "needs t.broken"),
        (Status.SKIP, "needs t.a"),
    ]


def test_every_unmet_need_is_named(tmp_path, test_probes) -> None:
    specs = [spec("t.a", "t_crashes"), spec("t.b", "t_fine"), spec("t.c", "t_refuses"),
             spec("t.d", "t_fine", needs=("t.a", "t.b", "t.c"))]
    assert run_checks(specs, ctx(tmp_path))[3].summary == "needs t.a, t.c"


def test_a_needed_check_that_is_not_selected_does_not_hold_its_dependents(tmp_path, test_probes) -> None:
    (r,) = run_checks([spec("t.a", "t_fine", needs=("t.elsewhere",))], ctx(tmp_path))
    assert r.status is Status.PASS


def test_a_dependent_waiting_for_its_need_does_not_use_up_its_own_time_limit(tmp_path, monkeypatch) -> None:
    def slow(_ctx: ProbeContext) -> Outcome:
        time.sleep(0.4)
        return Outcome.ok("up")

    monkeypatch.setitem(PROBES, "t_slow", slow)
    monkeypatch.setitem(PROBES, "t_fine", lambda _c: Outcome.ok("ran"))
    specs = [spec("t.uses", "t_fine", needs=("t.root",), timeout=0.2), spec("t.root", "t_slow")]
    assert [r.status for r in run_checks(specs, ctx(tmp_path))] == [Status.PASS, Status.PASS]


def write_catalogue(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_catalogue_needs_must_name_known_checks(tmp_path: Path) -> None:
    extra = write_catalogue(
        tmp_path, '[[check]]\nid = "x.y"\ntitle = "t"\nprobe = "root"\nneeds = ["docker.deamon"]\n'
    )
    with pytest.raises(UsageError, match=r"x\.y.*needs unknown check 'docker\.deamon'"):
        load_catalogue([extra])


def test_catalogue_needs_may_not_form_a_cycle(tmp_path: Path) -> None:
    extra = write_catalogue(
        tmp_path,
        '[[check]]\nid = "x.a"\ntitle = "t"\nprobe = "root"\nneeds = ["x.b"]\n\n'
        '[[check]]\nid = "x.b"\ntitle = "t"\nprobe = "root"\nneeds = ["x.a"]\n',
    )
    with pytest.raises(UsageError, match=r"cycle: x\.a -> x\.b -> x\.a"):
        load_catalogue([extra])


def test_user_check_can_need_a_bundled_one(tmp_path: Path) -> None:
    extra = write_catalogue(
        tmp_path, '[[check]]\nid = "x.y"\ntitle = "t"\nprobe = "root"\nneeds = ["docker.daemon"]\n'
    )
    assert {s.id: s for s in load_catalogue([extra])}["x.y"].needs == ("docker.daemon",)


DOCKER_DEPENDENTS = {
    "docker.version", "docker.info-warnings", "storage.driver", "storage.volume-sources",
    "dns.container", "dns.container-service", "net.container-egress", "stack.services",
    "stack.https", "stack.singleuser-image", "stack.hub-from-network", "firewall.node-guard",
}


def test_checks_that_ask_the_daemon_need_it_in_the_bundled_catalogue() -> None:
    specs = {s.id: s for s in load_catalogue()}
    assert {i for i, s in specs.items() if "docker.daemon" in s.needs} >= DOCKER_DEPENDENTS


def test_daemon_down_gives_one_failure_in_words_and_dependents_skip(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, docker_error=HostkitError(
        "the Docker daemon does not answer on /var/run/docker.sock (no such file)",
        "start it: systemctl start docker"))
    host.files({"/proc/sys/net/ipv4/ip_forward": "1\n"})
    results = run_checks(load_catalogue(), ProbeContext(host, Facts(host), Settings()))
    by_id = {r.id: r for r in results}
    assert by_id["docker.daemon"].status is Status.FAIL
    assert by_id["docker.daemon"].summary == (
        "the Docker daemon does not answer on /var/run/docker.sock (no such file)")
    for check_id in DOCKER_DEPENDENTS:
        assert (by_id[check_id].status, by_id[check_id].summary) == (Status.SKIP, "needs docker.daemon")
    assert [r.id for r in results if r.status is Status.ERROR] == []
    # the cause is told once; nothing else repeats it
    assert [r.id for r in results if "does not answer" in r.summary] == ["docker.daemon"]
