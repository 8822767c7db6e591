"""The closed set of probes a catalogue entry may name.

A probe reads the host (through the context's Host and Facts) and returns an Outcome;
it never changes anything.
"""

from __future__ import annotations

from typing import Any, Callable

from hostkit.results import Outcome

Probe = Callable[..., Outcome]
PROBES: dict[str, Probe] = {}


def probe(name: str) -> Callable[[Probe], Probe]:
    """Register a probe under the name catalogues use."""

    def register(func: Probe) -> Probe:
        if name in PROBES:
            raise RuntimeError(f"probe {name!r} registered twice")
        PROBES[name] = func
        return func

    return register


def _load() -> None:
    # importing the modules registers their probes
    from hostkit.probes import (  # noqa: F401
        backup,
        cluster,
        containers,
        daemon,
        docker_engine,
        environments,
        firewall,
        gpu,
        network,
        stack,
        storage,
        system,
        tls,
    )


def probe_names() -> list[str]:
    return sorted(PROBES)


__all__: list[Any] = ["PROBES", "Probe", "probe", "probe_names"]
_load()
