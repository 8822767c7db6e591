from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostkit.cli import app

runner = CliRunner()


def test_certs_makes_and_shows_a_certificate_under_a_root(tmp_path: Path) -> None:
    made = runner.invoke(
        app, ["certs", "--root", str(tmp_path), "--hostname", "hub.example.org", "--name", "hub"]
    )
    assert made.exit_code == 0, made.output
    assert "hub.example.org, hub, localhost" in made.output
    key = tmp_path / "opt/hostkit/certs/hostkit.key"
    assert key.stat().st_mode & 0o777 == 0o600
    shown = runner.invoke(app, ["certs", "--root", str(tmp_path), "--show"])
    assert shown.exit_code == 0
    assert "self-signed" in shown.output
    assert "hub.example.org" in shown.output


def test_certs_show_without_a_certificate_is_one_error_line_and_a_hint(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certs", "--root", str(tmp_path), "--show"])
    assert result.exit_code == 1
    assert "no certificate yet" in result.output
    assert "hint: run `hostkit certs` first" in result.output
    assert "Traceback" not in result.output


def test_stack_commands_on_an_empty_directory_say_there_is_no_stack(tmp_path: Path) -> None:
    for args in (["stack", "status"], ["stack", "down"], ["stack", "logs"]):
        result = runner.invoke(app, [*args, "--root", str(tmp_path), "--deploy-dir", "/srv/none"])
        assert result.exit_code == 1, args
        assert "no stack in /srv/none" in result.output


def test_stack_up_rejects_a_malformed_setting(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stack", "up", "--root", str(tmp_path), "--no-build", "--set", "not a pair"])
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.output


def test_stack_build_rejects_an_unknown_package_set(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["stack", "build", "--root", str(tmp_path), "--ca-bundle", "none", "--package-set", "huge"]
    )
    assert result.exit_code == 2
    # a real choice: the parser names the ones that exist
    text = " ".join(result.output.replace("│", " ").split())
    assert "'huge' is not one of 'full', 'slim'" in text


def test_stack_build_rejects_a_malformed_profile_name(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["stack", "build", "--root", str(tmp_path), "--ca-bundle", "none", "--profiles", "sage,../x"]
    )
    assert result.exit_code == 2
    assert "not a profile name" in result.output


def test_stack_build_builds_the_environments_the_deployed_env_enables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hostkit import cli_stack
    from hostkit.images import BuildReport

    asked: list[tuple[str, ...]] = []

    class FakeBuilder:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def build_all(self, profiles: tuple[str, ...]) -> BuildReport:
            asked.append(profiles)
            return BuildReport(images={"sage": "hostkit/sage:x"})

    monkeypatch.setattr(cli_stack, "ImageBuilder", FakeBuilder)
    deploy = tmp_path / "opt/hostkit"
    deploy.mkdir(parents=True)
    (deploy / ".env").write_text("HOSTKIT_PROFILES=datascience,sage\n")
    base = ["stack", "build", "--root", str(tmp_path), "--ca-bundle", "none"]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--profiles", "gpu"]).exit_code == 0
    assert runner.invoke(app, [*base, "--deploy-dir", "/elsewhere"]).exit_code == 0
    assert asked == [("datascience", "sage"), ("gpu",), ("datascience",)]
