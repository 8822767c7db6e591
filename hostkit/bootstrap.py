"""`hostkit bootstrap`'s plan: which subsystems it converges, in which order, with what options.

Each step lives with its subsystem (`hostkit/subsystems/`); this module only chooses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hostkit.daemon_config import DaemonOptions
from hostkit.steps import Step
from hostkit.subsystems.daemon_json import DaemonJsonStep
from hostkit.subsystems.data_root import ProgressFactory, RelocateStep, no_progress
from hostkit.subsystems.docker_install import DistroStep, DockerInstallStep
from hostkit.subsystems.firewall import FirewalldStep
from hostkit.subsystems.site_settings import SiteSettingsStep


@dataclass(frozen=True)
class BootstrapOptions:
    """Everything the user chose on the command line."""

    data_root: Optional[str] = None
    adopt: bool = False  # run Docker on the existing root at data_root, copying nothing
    dns: tuple[str, ...] = ("8.8.8.8",)
    log_max_size: str = "10m"
    log_max_file: str = "5"
    port: int = 9090
    force: bool = False
    docker_source: str = "distro"  # "distro" packages or Docker's own "docker" repo
    probe_image: Optional[str] = None
    probe_host: str = "deb.debian.org"

    def daemon_options(self, data_root: Optional[str] = None) -> DaemonOptions:
        return DaemonOptions(self.log_max_size, self.log_max_file, self.dns, data_root)


def bootstrap_steps(options: BootstrapOptions, recorded: dict[str, Any],
                    progress: ProgressFactory = no_progress) -> tuple[list[Step], RelocateStep]:
    """The host steps in order, and the relocation step (its notes are reported at the end)."""
    relocate = RelocateStep(options.data_root, options.daemon_options(), progress=progress,
                            adopt=options.adopt)
    steps: list[Step] = [DistroStep(options.force), DockerInstallStep(options.docker_source),
                         FirewalldStep(options.port), relocate,
                         DaemonJsonStep(options.daemon_options()), SiteSettingsStep(recorded)]
    return steps, relocate
