"""Which images an enabled environment needs, and how `stack up` records the choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeHost

from hostkit import environments, images
from hostkit.errors import UsageError
from hostkit.results import CheckResult, Status

STACK = Path(__file__).resolve().parents[2] / "stack"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _builder(tmp_path: Path, **options: object) -> images.ImageBuilder:
    host = FakeHost(tmp_path).files({"/ca.pem": CA})
    return images.ImageBuilder(host, images.BuildOptions(ca_bundle="/ca.pem", **options))  # type: ignore[arg-type]


def _recording(builder: images.ImageBuilder, pullable: bool = False) -> list[str]:
    built: list[str] = []
    builder.try_pull = lambda image: pullable  # type: ignore[method-assign]
    builder.debian_base = lambda report, suite=None: f"hostkit/debian:{suite or 'trixie'}"  # type: ignore[method-assign]

    def fake_build(role: str, spec: images.ImageSpec, report: images.BuildReport) -> str:
        built.append(f"{role}<-{spec.build_args['BASE_IMAGE']}")
        report.images[role] = spec.name
        return spec.name

    builder.build = fake_build  # type: ignore[method-assign]
    return built


def test_profiles_setting_is_parsed_in_order_once_and_defaults_to_data_science() -> None:
    assert environments.parse_profiles("") == ("datascience",)
    assert environments.parse_profiles(" Sage, datascience ,sage,") == ("sage", "datascience")
    with pytest.raises(UsageError, match="not a profile name"):
        environments.parse_profiles("datascience,../x")


def test_the_default_builds_no_sage_image(tmp_path: Path) -> None:
    builder = _builder(tmp_path, base="local")
    built = _recording(builder)
    report = builder.build_all()
    assert "sage" not in report.images
    assert not any(b.startswith(("sage", "notebook-base-bookworm")) for b in built)


def test_enabling_sage_builds_it_on_a_bookworm_notebook_base(tmp_path: Path) -> None:
    builder = _builder(tmp_path, base="local")
    built = _recording(builder)
    report = builder.build_all(("datascience", "sage"))
    assert "notebook-base-bookworm<-hostkit/debian:bookworm" in built
    assert "sage<-hostkit/notebook-base:bookworm" in built
    versions = images.parse_versions((STACK / "versions.env").read_text())
    assert report.images["sage"] == f"hostkit/sage:{versions['PASSAGEMATH_VERSION']}"
    assert environments.environment_images(report.images) == {"HOSTKIT_SAGE_IMAGE": report.images["sage"]}


def test_sage_uses_the_upstream_debian_image_when_it_can_be_pulled(tmp_path: Path) -> None:
    builder = _builder(tmp_path)
    built = _recording(builder, pullable=True)
    builder.build_all(("sage",))
    assert "notebook-base-bookworm<-debian:bookworm-slim" in built


def test_the_sage_dockerfile_gets_every_arg_it_declares_and_registers_a_kernel(tmp_path: Path) -> None:
    spec = _builder(tmp_path).sage_spec("n")
    text = (STACK / "sage" / "Dockerfile").read_text()
    import re

    declared = {m.group(1) for m in re.finditer(r"^ARG\s+([A-Z0-9_]+)\s*$", text, re.MULTILINE)}
    assert declared - set(spec.build_args) == set()
    assert "passagemath-standard==${PASSAGEMATH_VERSION}" in text
    assert "sage.repl.ipython_kernel" in text
    seed = ("jupyter-resource-usage", "ipympl", "jupyter_bokeh", "jupyterlab-execute-time", "jupyterlab-lsp")
    for extension in seed:
        assert extension in text, extension
    assert _builder(tmp_path, with_octave=False).sage_spec("n").name.endswith("-nooctave")


def _gpu_results(statuses: list[Status]) -> list[CheckResult]:
    return [
        CheckResult(f"gpu.{i}", "t", "gpu", s, "why", "", "", "", "", 0.0) for i, s in enumerate(statuses)
    ]


def test_the_gpu_profile_is_offered_only_when_every_gpu_check_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[str] = []
    monkeypatch.setattr(
        environments,
        "gpu_readiness",
        lambda host: environments.GpuReadiness(False, (), "gpu.driver: skip (no NVIDIA driver)"),
    )
    assert environments.environment_readiness(object(), ("datascience", "gpu"), logged.append) == {  # type: ignore[arg-type]
        "HOSTKIT_GPU_READY": "0",
        "HOSTKIT_GPU_DEVICES": "",
    }
    assert "no NVIDIA driver" in logged[0]
    assert environments.environment_readiness(object(), ("datascience",), logged.append) == {}  # type: ignore[arg-type]


def test_gpu_readiness_runs_the_doctors_gpu_checks_on_a_host_without_gpus(tmp_path: Path) -> None:
    readiness = environments.gpu_readiness(FakeHost(tmp_path))
    assert readiness.ready is False
    assert "gpu.driver: skip" in readiness.reason


def test_the_doctor_passes_when_every_enabled_environment_has_its_image() -> None:
    from hostkit.probes.environments import judge_environments

    env = {
        "HOSTKIT_PROFILES": "datascience,sage",
        "HOSTKIT_NOTEBOOK_IMAGE": "hostkit/singleuser:full",
        "HOSTKIT_SAGE_IMAGE": "hostkit/sage:10.8.13",
    }
    ok = judge_environments(env, lambda image: True)
    assert ok.status is Status.PASS
    assert "sage (hostkit/sage:10.8.13)" in ok.summary
    missing = judge_environments(env, lambda image: image != "hostkit/sage:10.8.13")
    assert missing.status is Status.FAIL
    assert "sage (hostkit/sage:10.8.13)" in missing.summary
    assert "--profiles datascience,sage" in missing.hint


def test_the_doctor_flags_unnamed_images_and_a_hidden_gpu_profile() -> None:
    from hostkit.probes.environments import judge_environments

    unnamed = judge_environments({"HOSTKIT_PROFILES": "stats"}, lambda image: True)
    assert unnamed.status is Status.FAIL
    assert "stats (no image named)" in unnamed.summary
    named = {"HOSTKIT_PROFILES": "stats", "HOSTKIT_PROFILE_STATS_IMAGE": "site/stats:1"}
    assert judge_environments(named, lambda image: image == "site/stats:1").status is Status.PASS
    gpu = {"HOSTKIT_PROFILES": "datascience,gpu", "HOSTKIT_NOTEBOOK_IMAGE": "x", "HOSTKIT_GPU_READY": "0"}
    assert judge_environments(gpu, lambda image: True).status is Status.WARN
    assert judge_environments({**gpu, "HOSTKIT_GPU_READY": "1"}, lambda image: True).status is Status.PASS


def test_the_doctor_skips_the_environments_check_before_deploy(tmp_path: Path) -> None:
    from hostkit.doctor import ProbeContext
    from hostkit.facts import Facts
    from hostkit.probes.environments import stack_environments
    from hostkit.settings import DEFAULTS

    host = FakeHost(tmp_path)
    outcome = stack_environments(ProbeContext(host, Facts(host), DEFAULTS))
    assert outcome.status is Status.SKIP
    assert "not deployed" in outcome.summary
