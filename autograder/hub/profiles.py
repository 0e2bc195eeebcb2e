"""The hub's server profiles, defined once and mapped onto each spawner's own settings.

A profile says what a student's server gets (cores, memory, GPUs, where it may run); each function
below turns the same ``PROFILES`` into one backend's vocabulary: KubeSpawner's ``profile_list``,
DockerSpawner's CPU/memory limits and device requests, BatchSpawner's SLURM ``req_*`` traits.
Where a backend has no menu of its own (Docker, SLURM), wrapspawner's ProfilesSpawner offers one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3


@dataclass(frozen=True)
class Profile:
    """One choice on the spawn menu."""

    slug: str
    display_name: str
    description: str
    cpu: int
    mem_gib: int
    gpus: int = 0
    # Kubernetes scheduling: GPU nodes are labelled and tainted so CPU servers never land there.
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str], ...] = ()
    default: bool = False

    @property
    def mem_bytes(self) -> int:
        return self.mem_gib * GIB


CPU = Profile(
    slug="cpu",
    display_name="CPU (2 cores, 4 GiB)",
    description="Every assignment runs here: the shipped models are tiny.",
    cpu=2,
    mem_gib=4,
    default=True,
)

GPU = Profile(
    slug="gpu",
    display_name="GPU (1 GPU, 8 cores, 32 GiB)",
    description="For the optional sections on real models (gpt2-small, pretrained SAEs).",
    cpu=8,
    mem_gib=32,
    gpus=1,
    node_selector={"interplab.org/accelerator": "nvidia-gpu"},
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
)

PROFILES: tuple[Profile, ...] = (CPU, GPU)

# The single-user images built from deploy/ (the CUDA one carries the GPU torch pin).
CPU_IMAGE = "ghcr.io/interplab/singleuser:0.1.0"
GPU_IMAGE = "ghcr.io/interplab/singleuser-cuda:0.1.0"


def image_for(profile: Profile, cpu_image: str = CPU_IMAGE, gpu_image: str = GPU_IMAGE) -> str:
    return gpu_image if profile.gpus else cpu_image


def kubespawner_profile_list(
    profiles: tuple[Profile, ...] = PROFILES, cpu_image: str = CPU_IMAGE, gpu_image: str = GPU_IMAGE
) -> list[dict[str, Any]]:
    """KubeSpawner ``profile_list``: guarantees equal limits (a student gets what the menu says)."""
    out = []
    for p in profiles:
        overrides: dict[str, Any] = {
            "image": image_for(p, cpu_image, gpu_image),
            "cpu_guarantee": float(p.cpu),
            "cpu_limit": float(p.cpu),
            "mem_guarantee": f"{p.mem_gib}G",
            "mem_limit": f"{p.mem_gib}G",
        }
        if p.gpus:
            overrides["extra_resource_guarantees"] = {"nvidia.com/gpu": str(p.gpus)}
            overrides["extra_resource_limits"] = {"nvidia.com/gpu": str(p.gpus)}
        if p.node_selector:
            overrides["node_selector"] = dict(p.node_selector)
        if p.tolerations:
            overrides["tolerations"] = [dict(t) for t in p.tolerations]
        out.append(
            {
                "display_name": p.display_name,
                "slug": p.slug,
                "description": p.description,
                "default": p.default,
                "kubespawner_override": overrides,
            }
        )
    return out


def docker_settings(profile: Profile, cpu_image: str = CPU_IMAGE, gpu_image: str = GPU_IMAGE) -> dict[str, Any]:
    """DockerSpawner traits for one profile; GPUs through the Engine API's device requests."""
    settings: dict[str, Any] = {
        "image": image_for(profile, cpu_image, gpu_image),
        "cpu_limit": float(profile.cpu),
        "mem_limit": profile.mem_bytes,
    }
    if profile.gpus:
        from docker.types import DeviceRequest

        settings["extra_host_config"] = {
            "device_requests": [DeviceRequest(driver="nvidia", count=profile.gpus, capabilities=[["gpu"]])]
        }
    return settings


def slurm_settings(profile: Profile, partition: str = "", gpu_partition: str = "") -> dict[str, Any]:
    """BatchSpawner SlurmSpawner ``req_*`` traits for one profile (``--gres=gpu:N`` for GPUs)."""
    settings: dict[str, Any] = {
        "req_nprocs": str(profile.cpu),
        "req_memory": f"{profile.mem_gib}G",
        "req_runtime": "8:00:00",
    }
    if profile.gpus:
        settings["req_gres"] = f"gpu:{profile.gpus}"
        if gpu_partition:
            settings["req_partition"] = gpu_partition
    elif partition:
        settings["req_partition"] = partition
    return settings


def wrapped_profiles(spawner_class: type, per_profile: dict[str, dict[str, Any]]) -> list[tuple]:
    """wrapspawner ProfilesSpawner ``profiles``: (display name, key, spawner class, its settings)."""
    return [(p.display_name, p.slug, spawner_class, per_profile[p.slug]) for p in PROFILES]


class NoGpuFree(RuntimeError):
    """Every GPU of the inventory is leased; the message is what the student reads."""


@dataclass(frozen=True)
class Gpu:
    """A leasable device: its UUID (``GPU-...`` or ``MIG-...``, what CUDA_VISIBLE_DEVICES names) and
    the device files that reach it alone (``/dev/nvidiaN`` for a whole GPU), hidden from every
    server that does not hold it. A MIG device has none of its own here: its parent's file serves
    every MIG device of that GPU, so MIG devices are kept apart by CUDA_VISIBLE_DEVICES only."""

    uuid: str
    files: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entry: str) -> "Gpu":
        """``UUID`` or ``UUID=/dev/nvidia0`` (several files joined by ``+``), as INTERPLAB_GPUS lists them."""
        uuid, _, files = entry.partition("=")
        return cls(uuid.strip(), tuple(f.strip() for f in files.split("+") if f.strip()))


def gpu_inventory(configured: tuple[str, ...] = ()) -> tuple[Gpu, ...]:
    """The devices a GPU profile may lease on this machine: what ``nvidia-smi`` lists (a GPU split
    into MIG devices offers those instead of itself; a whole GPU comes with ``/dev/nvidia<minor>``),
    else the configured ones."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return tuple(Gpu.parse(entry) for entry in configured)
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    minors = gpu_minor_numbers(subprocess.run([smi, "-q", "-x"], capture_output=True, text=True, timeout=30).stdout)
    devices: list[Gpu] = []
    for line in listing.splitlines():
        uuid = line.rsplit("UUID: ", 1)[-1].rstrip(")").strip() if "UUID: " in line else ""
        if not uuid:
            continue
        if uuid.startswith("MIG-") and devices and devices[-1].uuid.startswith("GPU-"):
            devices.pop()  # the parent GPU is handed out as its MIG devices
        files = (f"/dev/nvidia{minors[uuid]}",) if uuid in minors else ()
        devices.append(Gpu(uuid, files))
    return tuple(devices) or tuple(Gpu.parse(entry) for entry in configured)


def gpu_minor_numbers(xml: str) -> dict[str, str]:
    """UUID -> minor number of each whole GPU in ``nvidia-smi -q -x``'s report."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    return {gpu.findtext("uuid", "").strip(): gpu.findtext("minor_number", "").strip()
            for gpu in root.iter("gpu") if gpu.findtext("minor_number", "").strip().isdigit()}


class GpuLeases:
    """Whole GPUs (or MIG devices) leased to one server at a time; the hub holds one of these."""

    def __init__(self, devices: tuple[Gpu, ...]):
        self.devices = devices
        self.holders: dict[Gpu, str] = {}  # device -> the server holding it

    def lease(self, server: str, count: int) -> list[Gpu]:
        """``count`` free devices for ``server`` (its earlier lease first), or :class:`NoGpuFree` at once."""
        self.release(server)
        free = [d for d in self.devices if d not in self.holders]
        if len(free) < count:
            raise NoGpuFree(
                f"no GPU is free: {len(self.holders)} of {len(self.devices)} are in use by other servers. "
                "Start the CPU profile now, or try the GPU profile again later."
            )
        for device in free[:count]:
            self.holders[device] = server
        return free[:count]

    def release(self, server: str) -> None:
        for device in [d for d, holder in self.holders.items() if holder == server]:
            del self.holders[device]

    def hidden_files(self, leased: list[Gpu]) -> list[str]:
        """The device files of every GPU of the inventory but ``leased``: what a server must not open."""
        mine = {f for gpu in leased for f in gpu.files}
        return sorted({f for gpu in self.devices for f in gpu.files} - mine)
