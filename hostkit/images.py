"""Build the stack's images, with or without a container registry.

The hub and nginx images start from a Debian image, the single-user image from the
Jupyter Docker Stacks datascience-notebook. When those upstream images cannot be pulled
(campus networks, CI), hostkit says so and makes them itself: a Debian base with
debootstrap from the distro mirror (`docker import`), and a local stand-in for the
datascience-notebook base built on it. The same Dockerfiles build on either base.

Every image carries a label with the hash of its inputs (Dockerfile and context files,
build args, base image id, extra CA bundle); an image whose label matches is not rebuilt.
Heavy steps hold /tmp/hostkit-build.lock (flock) so two builds never run at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from hostkit.assets import stack_dir
from hostkit.environments import DEFAULT_PROFILES, build_environment_images
from hostkit.errors import HostkitError, UsageError
from hostkit.host import LocalHost

HASH_LABEL = "org.hostkit.input-hash"
BUILD_LOCK = "/tmp/hostkit-build.lock"  # noqa: S108 - shared with the project's other builders
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where distributions keep the system trust store (Debian/Ubuntu, RHEL family, SUSE).
SYSTEM_CA_BUNDLES = (SYSTEM_CA_BUNDLE, "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem")
DEBOOTSTRAP_INCLUDE = ("python3", "python3-venv", "ca-certificates")
PACKAGE_SETS = ("full", "slim")
BASE_MODES = ("auto", "upstream", "local")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def stack_assets_dir() -> Path:
    """Where the stack's files are: the wheel's copy, else the source tree's `stack/`."""
    return stack_dir()


def resolve_ca_bundle(host: LocalHost, choice: str) -> Optional[str]:
    """ "system": the host's trust store (so builds trust what the host trusts); "none"; or a path."""
    if choice.lower() == "none":
        return None
    if choice.lower() == "system":
        return next((p for p in SYSTEM_CA_BUNDLES if host.exists(p)), None)
    return choice


def parse_versions(text: str) -> dict[str, str]:
    """KEY=VALUE lines of stack/versions.env (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise HostkitError(f"versions.env line {lineno}: expected KEY=VALUE, got {raw!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class BuildOptions:
    """What `hostkit stack build` was asked for."""

    base: str = "auto"  # auto: try the upstream images, fall back to local; or upstream/local
    ca_bundle: Optional[str] = SYSTEM_CA_BUNDLE  # host path of extra CA certs, None for none
    mirror: str = DEFAULT_MIRROR
    package_set: str = "full"
    with_octave: bool = True
    with_r: bool = True
    repository: str = "hostkit"
    force: bool = False

    def __post_init__(self) -> None:
        if self.base not in BASE_MODES:
            raise UsageError(f"unknown base mode {self.base!r}", f"use one of {', '.join(BASE_MODES)}")
        if self.package_set not in PACKAGE_SETS:
            raise UsageError(
                f"unknown package set {self.package_set!r}", f"use one of {', '.join(PACKAGE_SETS)}"
            )


@dataclass(frozen=True)
class ImageSpec:
    """One image to build from a directory of the stack."""

    name: str  # full reference, repository:tag
    context: str  # directory under stack/
    build_args: dict[str, str]
    extra_files: tuple[str, ...] = ()  # stack-relative files copied into the context root


@dataclass
class BuildReport:
    """What a build run did, image by image."""

    images: dict[str, str] = field(default_factory=dict)  # role -> image reference
    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def input_hash(files: dict[str, bytes], build_args: dict[str, str], base_id: str, ca: bytes) -> str:
    """A stable hash of everything that determines an image."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    digest.update(json.dumps(build_args, sort_keys=True).encode())
    digest.update(base_id.encode())
    digest.update(hashlib.sha256(ca).digest())
    return digest.hexdigest()


class ImageBuilder:
    """Builds the stack's images on a host's Docker daemon."""

    def __init__(
        self,
        host: LocalHost,
        options: BuildOptions,
        *,
        work_dir: str = "/var/lib/hostkit/build",
        stack_dir: Optional[Path] = None,
        log: Log = _quiet,
    ) -> None:
        self.host = host
        self.options = options
        self.work_dir = work_dir
        self.stack_dir = stack_dir or stack_assets_dir()
        self.versions = parse_versions((self.stack_dir / "versions.env").read_text())
        self.log = log
        self._ca = self._read_ca_bundle()

    # ---- docker helpers ------------------------------------------------------------
    def image_label(self, image: str, label: str = HASH_LABEL) -> Optional[str]:
        """The label's value on a local image, "" when unlabelled, None when absent."""
        result = self.host.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image])
        if not result.ok:
            return None
        labels = json.loads(result.stdout.strip() or "null") or {}
        return str(labels.get(label, ""))

    def image_id(self, image: str) -> Optional[str]:
        result = self.host.run(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        return result.stdout.strip() if result.ok else None

    def try_pull(self, image: str) -> bool:
        """Pull an upstream image; False (and a note) when the registry cannot be reached."""
        if self.image_id(image):
            return True
        result = self.host.run(["docker", "pull", image], timeout=1800)
        if result.ok:
            return True
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        self.log(f"cannot pull {image}: {reason}")
        return False

    def _locked(self, argv: list[str]) -> list[str]:
        return ["flock", BUILD_LOCK, *argv]

    # ---- inputs --------------------------------------------------------------------
    def _read_ca_bundle(self) -> bytes:
        path = self.options.ca_bundle
        if not path:
            return b""
        if not self.host.exists(path):
            raise UsageError(f"CA bundle {path}: no such file", "give --ca-bundle PATH or --ca-bundle none")
        data = self.host.read_bytes(path)
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise UsageError(f"CA bundle {path} holds no PEM certificate")
        return data

    def specs(self, debian_base: str, notebook_base: str) -> dict[str, ImageSpec]:
        """The hub, nginx and single-user images, given their base images."""
        v = self.versions
        repo = self.options.repository
        hub_args = {
            "BASE_IMAGE": debian_base,
            **{
                k: v[k]
                for k in (
                    "JUPYTERHUB_VERSION",
                    "DOCKERSPAWNER_VERSION",
                    "NATIVEAUTHENTICATOR_VERSION",
                    "IDLE_CULLER_VERSION",
                    "CONFIGURABLE_HTTP_PROXY_VERSION",
                )
            },
        }
        singleuser_keys = (
            "PSYCOPG2_VERSION",
            "PYSPARK_VERSION",
            "PANDAS_VERSION",
            "BOKEH_VERSION",
            "PLOTLY_VERSION",
            "JUPYTER_RESOURCE_USAGE_VERSION",
            "IPYMPL_VERSION",
            "JUPYTERLAB_LSP_VERSION",
            "PYTHON_LSP_SERVER_VERSION",
            "JUPYTER_BOKEH_VERSION",
            "JUPYTERLAB_EXECUTE_TIME_VERSION",
            "OCTAVE_KERNEL_VERSION",
            "RFC3987_VERSION",
        )
        singleuser_args = {
            "BASE_IMAGE": notebook_base,
            "PACKAGE_SET": self.options.package_set,
            "WITH_OCTAVE": "1" if self.options.with_octave else "0",
            **{k: v[k] for k in singleuser_keys},
        }
        variant = self.options.package_set + ("" if self.options.with_octave else "-nooctave")
        return {
            "hub": ImageSpec(
                f"{repo}/jupyterhub:{v['JUPYTERHUB_VERSION']}",
                "hub",
                hub_args,
                extra_files=("hostkit_hubctl.py", "hostkit_dockerproxy.py"),
            ),
            "nginx": ImageSpec(f"{repo}/nginx:{v['DEBIAN_SUITE']}", "nginx", {"BASE_IMAGE": debian_base}),
            "singleuser": ImageSpec(f"{repo}/singleuser:{variant}", "singleuser", singleuser_args),
        }

    def sage_spec(self, notebook_base: str) -> ImageSpec:
        """The `sage` environment's image on a notebook base."""
        v = self.versions
        keys = (
            "PASSAGEMATH_VERSION",
            "OCTAVE_KERNEL_VERSION",
            "BOKEH_VERSION",
            "PLOTLY_VERSION",
            "JUPYTER_RESOURCE_USAGE_VERSION",
            "IPYMPL_VERSION",
            "JUPYTER_BOKEH_VERSION",
            "JUPYTERLAB_EXECUTE_TIME_VERSION",
            "PSYCOPG2_VERSION",
            "JUPYTERLAB_LSP_VERSION",
            "PYTHON_LSP_SERVER_VERSION",
        )
        args = {
            "BASE_IMAGE": notebook_base,
            "WITH_OCTAVE": "1" if self.options.with_octave else "0",
            **{k: v[k] for k in keys},
        }
        tag = v["PASSAGEMATH_VERSION"] + ("" if self.options.with_octave else "-nooctave")
        return ImageSpec(f"{self.options.repository}/sage:{tag}", "sage", args)

    def notebook_base_spec(self, debian_base: str, suite: Optional[str] = None) -> ImageSpec:
        """The local stand-in for datascience-notebook, on the Debian base of `suite`."""
        v = self.versions
        args = {
            "BASE_IMAGE": debian_base,
            "JUPYTERHUB_VERSION": v["JUPYTERHUB_VERSION"],
            "JUPYTERLAB_VERSION": v["JUPYTERLAB_VERSION"],
            "NOTEBOOK_VERSION": v["NOTEBOOK_VERSION"],
            "SCIENTIFIC_PACKAGES": v["SCIENTIFIC_PACKAGES"],
            "PANDAS_VERSION": v["PANDAS_VERSION"],
            "WITH_R": "1" if self.options.with_r else "0",
        }
        tag = (suite or v["DEBIAN_SUITE"]) + ("" if self.options.with_r else "-nor")
        return ImageSpec(f"{self.options.repository}/notebook-base:{tag}", "notebook-base", args)

    def _context_files(self, spec: ImageSpec) -> dict[str, tuple[bytes, int]]:
        """Relative path -> (content, mode) of the build context, CA bundle included."""
        files: dict[str, tuple[bytes, int]] = {}
        base = self.stack_dir / spec.context
        for path in sorted(base.rglob("*")):
            if path.is_file():
                mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                files[str(path.relative_to(base))] = (path.read_bytes(), mode)
        for extra in spec.extra_files:
            files[Path(extra).name] = ((self.stack_dir / extra).read_bytes(), 0o644)
        if self._ca:
            files["ca/hostkit-extra.crt"] = (self._ca, 0o644)
        return files

    def wanted_hash(self, spec: ImageSpec) -> Optional[str]:
        """The input hash an image built from `spec` carries; None while its base is missing."""
        base_id = self.image_id(spec.build_args["BASE_IMAGE"])
        if base_id is None:
            return None
        files = self._context_files(spec)
        return input_hash({k: c for k, (c, _) in files.items()}, spec.build_args, base_id, self._ca)

    def planned_specs(self) -> dict[str, ImageSpec]:
        """The hub, nginx and single-user specs on the base images already here (nothing is
        pulled or built): what `build_all` would make, for comparing with what runs."""
        v = self.versions
        debian = v["UPSTREAM_DEBIAN_IMAGE"] if self.options.base != "local" else ""
        if not debian or not self.image_id(debian):
            debian = f"{self.options.repository}/debian:{v['DEBIAN_SUITE']}"
        notebook = v["UPSTREAM_NOTEBOOK_IMAGE"] if self.options.base != "local" else ""
        if not notebook or not self.image_id(notebook):
            notebook = self.notebook_base_spec(debian).name
        return self.specs(debian, notebook)

    # ---- builds --------------------------------------------------------------------
    def build(self, role: str, spec: ImageSpec, report: BuildReport) -> str:
        """Build one image unless an image with the same input hash exists."""
        wanted = self.wanted_hash(spec)
        if wanted is None:
            raise HostkitError(f"base image {spec.build_args['BASE_IMAGE']} is missing")
        files = self._context_files(spec)
        report.images[role] = spec.name
        if not self.options.force and self.image_label(spec.name) == wanted:
            self.log(f"{spec.name}: up to date")
            report.cached.append(spec.name)
            return spec.name
        # a context of this process's own: two builds at once (another checkout, a second
        # admin) must not write into each other's context before docker build reads it
        context = f"{self.work_dir}/{spec.context}.{os.getpid()}"
        self.host.run(["rm", "-rf", str(self.host.path(context))], check=True)
        self.host.makedirs(f"{context}/ca")
        for rel, (content, mode) in files.items():
            self.host.write_text(f"{context}/{rel}", content.decode(), mode=mode, backup=False)
        argv = ["docker", "build", "--pull=false", "--label", f"{HASH_LABEL}={wanted}", "-t", spec.name]
        for key, value in spec.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(str(self.host.path(context)))
        log_path = f"{self.work_dir}/{spec.context}.log"
        self.log(f"{spec.name}: building, log in {log_path} (waits for {BUILD_LOCK} if another build runs)")
        started = time.monotonic()
        # the build's output goes to the log as it comes, so `tail -f` shows the progress
        to_log = ["sh", "-c", 'exec "$@" > "$0" 2>&1', str(self.host.path(log_path))]
        try:
            result = self.host.run([*to_log, *self._locked(argv)], timeout=3 * 3600,
                                   env={"DOCKER_BUILDKIT": "0"})
        finally:
            self.host.run(["rm", "-rf", str(self.host.path(context))], timeout=300)
        if not result.ok:
            output = self.host.read_text(log_path) if self.host.exists(log_path) else result.stderr
            tail = "\n".join(output.strip().splitlines()[-25:])
            raise HostkitError(
                f"building {spec.name} failed (full log: {log_path}):\n{tail}",
                "a network or mirror problem shows above; behind a TLS-intercepting proxy give --ca-bundle",
            )
        report.seconds[spec.name] = round(time.monotonic() - started, 1)
        report.built.append(spec.name)
        self.log(f"{spec.name}: built in {report.seconds[spec.name]:.0f}s")
        return spec.name

    def debian_base(self, report: BuildReport, suite: Optional[str] = None) -> str:
        """The local Debian base image made with debootstrap (reused when up to date)."""
        suite = suite or self.versions["DEBIAN_SUITE"]
        name = f"{self.options.repository}/debian:{suite}"
        wanted = hashlib.sha256(
            json.dumps([suite, self.options.mirror, DEBOOTSTRAP_INCLUDE]).encode()
        ).hexdigest()
        report.images["debian" if suite == self.versions["DEBIAN_SUITE"] else f"debian-{suite}"] = name
        if not self.options.force and self.image_label(name) == wanted:
            report.cached.append(name)
            return name
        if not self.host.which("debootstrap"):
            raise HostkitError(
                "debootstrap is needed to build the Debian base image without a registry",
                "apt-get install debootstrap",
            )
        rootfs = f"{self.work_dir}/rootfs-{suite}"
        real = str(self.host.path(rootfs))
        self.log(f"{name}: debootstrap {suite} from {self.options.mirror}")
        started = time.monotonic()
        self.host.run(["rm", "-rf", real], check=True)
        self.host.makedirs(self.work_dir)
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
            suite,
            real,
            self.options.mirror,
        ]
        self.host.run(self._locked(argv), timeout=1800, check=True, hint="check the Debian mirror (--mirror)")
        # apt's package cache and lists are dead weight in an image
        self.host.run(["sh", "-c", f"rm -rf {real}/var/cache/apt/archives/*.deb {real}/var/lib/apt/lists/*"])
        self.host.run(
            [
                "sh",
                "-c",
                f"tar -C {real} -c . | docker import --change 'CMD [\"/bin/bash\"]' "
                f"--change 'LABEL {HASH_LABEL}={wanted}' - {name}",
            ],
            timeout=900,
            check=True,
        )
        self.host.run(["rm", "-rf", real], check=True)
        report.seconds[name] = round(time.monotonic() - started, 1)
        report.built.append(name)
        return name

    def build_all(self, profiles: tuple[str, ...] = DEFAULT_PROFILES) -> BuildReport:
        """Hub, nginx and single-user images (and their local bases when needed), then the
        images of the other enabled environments (`profiles`)."""
        report = BuildReport()
        v = self.versions
        mode = self.options.base
        debian = notebook = ""
        if mode in ("auto", "upstream"):
            debian_ok = self.try_pull(v["UPSTREAM_DEBIAN_IMAGE"])
            notebook_ok = self.try_pull(v["UPSTREAM_NOTEBOOK_IMAGE"])
            if debian_ok:
                debian = v["UPSTREAM_DEBIAN_IMAGE"]
            if notebook_ok:
                notebook = v["UPSTREAM_NOTEBOOK_IMAGE"]
            if mode == "upstream" and not (debian_ok and notebook_ok):
                raise HostkitError(
                    "the upstream base images cannot be pulled",
                    "use --base local (or auto) to build them here from the Debian mirror",
                )
        if not debian:
            if mode == "auto":
                report.notes.append(
                    f"{v['UPSTREAM_DEBIAN_IMAGE']} cannot be pulled: "
                    "using a Debian base made here with debootstrap"
                )
                self.log(report.notes[-1])
            debian = self.debian_base(report)
        if not notebook:
            if mode == "auto":
                report.notes.append(
                    f"{v['UPSTREAM_NOTEBOOK_IMAGE']} cannot be pulled: using a local stand-in built here"
                )
                self.log(report.notes[-1])
            notebook = self.build("notebook-base", self.notebook_base_spec(debian), report)
        for role, spec in self.specs(debian, notebook).items():
            self.build(role, spec, report)
        build_environment_images(self, report, profiles)
        return report
