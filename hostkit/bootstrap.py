"""`hostkit bootstrap`'s plan: which subsystems it converges, in which order, with what options.

Each step lives with its subsystem (`hostkit/subsystems/`); this module only chooses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hostkit.daemon_config import DaemonOptions
from hostkit.settings import DEFAULTS
from hostkit.steps import Step
from hostkit.subsystems.daemon_json import DaemonJsonStep
from hostkit.subsystems.data_root import ProgressFactory, RelocateStep, no_progress
from hostkit.subsystems.docker_install import DistroStep, DockerInstallStep
from hostkit.subsystems.firewall import FirewalldStep
from hostkit.subsystems.gpu import GpuToolkitStep
from hostkit.subsystems.site_settings import SiteSettingsStep


@dataclass(frozen=True)
class BootstrapOptions:
    """Everything the user chose on the command line."""

    data_root: Optional[str] = None
    adopt: bool = False  # run Docker on the existing root at data_root, copying nothing
    gpu: bool = False  # install the NVIDIA container toolkit where an NVIDIA driver runs
    # None: keep what daemon.json says (a first run writes a default proven to answer)
    dns: Optional[tuple[str, ...]] = None
    log_max_size: Optional[str] = None
    log_max_file: Optional[str] = None
    log_driver: Optional[str] = None
    port: int = DEFAULTS.public_port
    force: bool = False
    docker_source: str = "distro"  # "distro" packages or Docker's own "docker" repo
    probe_image: Optional[str] = None
    probe_host: str = "deb.debian.org"

    def daemon_options(self, data_root: Optional[str] = None) -> DaemonOptions:
        return DaemonOptions(log_max_size=self.log_max_size, log_max_file=self.log_max_file,
                             dns=self.dns, data_root=data_root, log_driver=self.log_driver)


def bootstrap_steps(options: BootstrapOptions, recorded: dict[str, Any],
                    progress: ProgressFactory = no_progress,
                    public_port: bool = True) -> tuple[list[Step], RelocateStep]:
    """The host steps in order, and the relocation step (its notes are reported at the end).

    public_port=False for a cluster's worker: it runs users' servers, never nginx.
    """
    relocate = RelocateStep(options.data_root, options.daemon_options(), progress=progress,
                            adopt=options.adopt)
    firewall = FirewalldStep(options.port if public_port else None)
    steps: list[Step] = [DistroStep(options.force), DockerInstallStep(options.docker_source),
                         GpuToolkitStep(options.gpu), firewall, relocate,
                         DaemonJsonStep(options.daemon_options(), recorded), SiteSettingsStep(recorded)]
    return steps, relocate
