from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from fakes import FakeHost

from hostkit import images
from hostkit.errors import HostkitError, UsageError
from hostkit.host import CommandResult

STACK = Path(__file__).resolve().parents[2] / "stack"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _declared_args(dockerfile: Path) -> set[str]:
    """ARGs a Dockerfile declares without a default (those must come from versions.env)."""
    return {m.group(1) for m in re.finditer(r"^ARG\s+([A-Z0-9_]+)\s*$", dockerfile.read_text(), re.MULTILINE)}


def _builder(tmp_path: Path, **options: object) -> images.ImageBuilder:
    host = FakeHost(tmp_path).files({"/ca.pem": CA})
    return images.ImageBuilder(host, images.BuildOptions(ca_bundle="/ca.pem", **options))  # type: ignore[arg-type]


def test_parse_versions_reads_key_value_lines_and_rejects_garbage() -> None:
    assert images.parse_versions("# c\n\nA=1\nB = x y\n") == {"A": "1", "B": "x y"}
    with pytest.raises(HostkitError, match="line 1"):
        images.parse_versions("not a pair\n")


def test_every_version_is_pinned_in_versions_env() -> None:
    versions = images.parse_versions((STACK / "versions.env").read_text())
    for key, value in versions.items():
        assert value, key
        assert "latest" not in value, key
    for spec in versions["SCIENTIFIC_PACKAGES"].split():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", spec), spec
    # upstream images are pinned to a date tag, never latest
    assert re.search(r":\d{4}-\d{2}-\d{2}$", versions["UPSTREAM_NOTEBOOK_IMAGE"])


def test_each_dockerfile_gets_every_arg_it_declares(tmp_path: Path) -> None:
    builder = _builder(tmp_path)
    specs = builder.specs("base:debian", "base:notebook")
    specs["notebook-base"] = builder.notebook_base_spec("base:debian")
    for spec in specs.values():
        declared = _declared_args(STACK / spec.context / "Dockerfile")
        assert declared, spec.context
        missing = declared - set(spec.build_args)
        assert not missing, f"{spec.context}: {missing}"


def test_image_names_follow_pins_and_variants(tmp_path: Path) -> None:
    specs = _builder(tmp_path, package_set="slim", with_octave=False).specs("d", "n")
    versions = images.parse_versions((STACK / "versions.env").read_text())
    assert specs["hub"].name == f"hostkit/jupyterhub:{versions['JUPYTERHUB_VERSION']}"
    assert specs["singleuser"].name == "hostkit/singleuser:slim-nooctave"
    assert specs["singleuser"].build_args["PACKAGE_SET"] == "slim"
    assert specs["singleuser"].build_args["WITH_OCTAVE"] == "0"
    assert specs["singleuser"].build_args["BASE_IMAGE"] == "n"
    assert specs["hub"].build_args["BASE_IMAGE"] == "d"


def test_input_hash_changes_with_any_input() -> None:
    base = images.input_hash({"Dockerfile": b"FROM x"}, {"A": "1"}, "sha256:1", b"ca")
    assert base == images.input_hash({"Dockerfile": b"FROM x"}, {"A": "1"}, "sha256:1", b"ca")
    assert base != images.input_hash({"Dockerfile": b"FROM y"}, {"A": "1"}, "sha256:1", b"ca")
    assert base != images.input_hash({"Dockerfile": b"FROM x"}, {"A": "2"}, "sha256:1", b"ca")
    assert base != images.input_hash({"Dockerfile": b"FROM x"}, {"A": "1"}, "sha256:2", b"ca")
    assert base != images.input_hash({"Dockerfile": b"FROM x"}, {"A": "1"}, "sha256:1", b"")


def test_build_options_reject_unknown_modes() -> None:
    with pytest.raises(UsageError):
        images.BuildOptions(base="sometimes")
    with pytest.raises(UsageError):
        images.BuildOptions(package_set="huge")


def test_ca_bundle_must_exist_and_hold_a_certificate(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).files({"/empty.pem": "nothing here\n"})
    with pytest.raises(UsageError, match="no such file"):
        images.ImageBuilder(host, images.BuildOptions(ca_bundle="/missing.pem"))
    with pytest.raises(UsageError, match="no PEM"):
        images.ImageBuilder(host, images.BuildOptions(ca_bundle="/empty.pem"))
    assert images.ImageBuilder(host, images.BuildOptions(ca_bundle=None))._ca == b""


def test_an_image_with_the_same_input_hash_is_not_rebuilt(tmp_path: Path) -> None:
    builder = _builder(tmp_path)
    host = builder.host
    assert isinstance(host, FakeHost)
    spec = builder.specs("base:debian", "base:notebook")["nginx"]
    host.commands[("docker", "image", "inspect", "--format", "{{.Id}}", "base:debian")] = "sha256:b\n"
    files = {k: c for k, (c, _) in builder._context_files(spec).items()}
    wanted = images.input_hash(files, spec.build_args, "sha256:b", CA.encode())
    key = ("docker", "image", "inspect", "--format", "{{json .Config.Labels}}", spec.name)
    host.commands[key] = json.dumps({images.HASH_LABEL: wanted})
    report = images.BuildReport()
    builder.build("nginx", spec, report)
    assert report.cached == [spec.name]
    assert not any(c[:1] == ("flock",) for c in host.calls)

    # a different label means the inputs changed: the build runs under the shared lock
    host.commands[key] = json.dumps({images.HASH_LABEL: "old"})
    host.binaries |= {"flock", "rm"}
    # a context of the build's own (pid), so two builds at once never share one
    context = str(host.path(f"{builder.work_dir}/nginx.{os.getpid()}"))
    host.commands[("rm", "-rf", context)] = ""
    calls: list[tuple[str, ...]] = []
    original_run = host.run

    def run(argv: object, **kwargs: object) -> CommandResult:
        key = tuple(str(a) for a in argv)  # type: ignore[attr-defined]
        if key[:2] == ("sh", "-c") and "flock" in key:
            calls.append(key[key.index("flock") :])
            assert key[3] == str(host.path(f"{builder.work_dir}/nginx.log"))
            return CommandResult(key, 0, "", "")
        return original_run(argv, **kwargs)  # type: ignore[arg-type]

    host.run = run  # type: ignore[method-assign]
    report = images.BuildReport()
    builder.build("nginx", spec, report)
    assert report.built == [spec.name]
    (argv,) = calls
    assert argv[:3] == ("flock", images.BUILD_LOCK, "docker")
    assert f"{images.HASH_LABEL}={wanted}" in argv
    assert host.path(f"{builder.work_dir}/nginx.{os.getpid()}/ca/hostkit-extra.crt").read_text() == CA
    assert host.calls[-1] == ("rm", "-rf", context)  # and it is removed after the build
    assert argv[-1] == context


def test_auto_mode_falls_back_to_local_bases_and_says_so(tmp_path: Path) -> None:
    builder = _builder(tmp_path)
    messages: list[str] = []
    builder.log = messages.append
    built: list[str] = []
    builder.try_pull = lambda image: (messages.append(f"cannot pull {image}"), False)[1]  # type: ignore[method-assign]
    builder.debian_base = lambda report: "hostkit/debian:trixie"  # type: ignore[method-assign]

    def fake_build(role: str, spec: images.ImageSpec, report: images.BuildReport) -> str:
        built.append(f"{role}<-{spec.build_args['BASE_IMAGE']}")
        report.images[role] = spec.name
        return spec.name

    builder.build = fake_build  # type: ignore[method-assign]
    report = builder.build_all()
    assert built[0] == "notebook-base<-hostkit/debian:trixie"
    assert "singleuser<-hostkit/notebook-base:trixie" in built
    assert "hub<-hostkit/debian:trixie" in built
    assert any("cannot be pulled" in n for n in report.notes)
    assert any(m.startswith("cannot pull") for m in messages)


def test_upstream_mode_fails_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    builder = _builder(tmp_path, base="upstream")
    builder.try_pull = lambda image: False  # type: ignore[method-assign]
    with pytest.raises(HostkitError, match="cannot be pulled"):
        builder.build_all()


def test_ca_bundle_choice_system_finds_the_hosts_store(tmp_path: Path) -> None:
    rhel = FakeHost(tmp_path).files({"/etc/pki/tls/certs/ca-bundle.crt": CA})
    assert images.resolve_ca_bundle(rhel, "system") == "/etc/pki/tls/certs/ca-bundle.crt"
    assert images.resolve_ca_bundle(FakeHost(tmp_path / "bare"), "system") is None
    assert images.resolve_ca_bundle(rhel, "none") is None
    assert images.resolve_ca_bundle(rhel, "/srv/proxy-ca.pem") == "/srv/proxy-ca.pem"


def test_a_failed_build_shows_the_end_of_its_log(tmp_path: Path) -> None:
    builder = _builder(tmp_path)
    host = builder.host
    assert isinstance(host, FakeHost)
    spec = builder.specs("base:debian", "base:notebook")["nginx"]
    host.binaries |= {"rm", "sh"}
    host.commands[("docker", "image", "inspect", "--format", "{{.Id}}", "base:debian")] = "sha256:b\n"
    host.commands[("rm", "-rf", str(host.path(f"{builder.work_dir}/nginx")))] = ""
    log = host.path(f"{builder.work_dir}/nginx.log")
    original_run = host.run

    def run(argv: object, **kwargs: object) -> CommandResult:
        key = tuple(str(a) for a in argv)  # type: ignore[attr-defined]
        if key[:2] == ("sh", "-c"):
            log.write_text("Step 3/5 : RUN apt-get install nginx\nE: Unable to locate package nginx\n")
            return CommandResult(key, 100, "", "")
        return original_run(argv, **kwargs)  # type: ignore[arg-type]

    host.run = run  # type: ignore[method-assign]
    with pytest.raises(HostkitError, match="Unable to locate package nginx") as caught:
        builder.build("nginx", spec, images.BuildReport())
    assert f"{builder.work_dir}/nginx.log" in str(caught.value)
