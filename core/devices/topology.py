"""How the GPUs of one machine reach each other: PCIe and NVLink bandwidth per direction.

Read through the NVML gateway (core.devices.nvml_gateway) for discovery
(core.devices.inventory): each pair of GPUs gets a GpuLink, and each GPU the
best of its links, which is what the planner uses between neighbour stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.devices import nvml_gateway as nv
from core.devices.catalog import load_catalog

DEFAULT_PCIE_GBPS = 16.0  # PCIe 3 x16, assumed where NVML cannot say
# Per link, per direction, GB/s, by NVML_NVLINK_VERSION_* (1.0, 2.0, 2.2, 3.0, 3.1, 4.0, 5.0).
NVLINK_GBPS_PER_LINK = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 25.0, 6: 25.0, 7: 50.0}
# Share of PCIe bandwidth two GPUs get for peer copies, by the path between them.
PATH_FACTORS = {"same-switch": 1.0, "host-bridge": 0.8, "system": 0.5}
_LEVELS = {nv.TOPOLOGY_INTERNAL: "same-switch", nv.TOPOLOGY_SINGLE: "same-switch",
           nv.TOPOLOGY_MULTIPLE: "same-switch", nv.TOPOLOGY_HOSTBRIDGE: "host-bridge",
           nv.TOPOLOGY_NODE: "host-bridge", nv.TOPOLOGY_SYSTEM: "system"}


@dataclass(frozen=True)
class GpuLink:
    """How two GPUs reach each other and the bandwidth estimate per direction."""

    first: int  # NVML indices
    second: int
    kind: str  # nvlink | same-switch | host-bridge | system | unknown
    bandwidth_gbps: float


def pcie_gbps(gateway: nv.NvmlGateway, index: int) -> float:
    """PCIe bandwidth per direction from generation and width (x16 gen4: 32 GB/s)."""
    gen = gateway.static(index, "nvmlDeviceGetMaxPcieLinkGeneration")
    width = gateway.static(index, "nvmlDeviceGetMaxPcieLinkWidth")
    if not gen or not width:
        spec = load_catalog().find(gateway.static(index, "nvmlDeviceGetName") or "")
        return spec.pcie_gbps if spec else DEFAULT_PCIE_GBPS
    return 0.25 * 2 ** (int(gen) - 1) * int(width)  # 0.25 GB/s a lane at gen 1, doubling each gen


def bus_id(gateway: nv.NvmlGateway, index: int) -> str | None:
    info = gateway.static(index, "nvmlDeviceGetPciInfo")
    bus = getattr(info, "busId", None)
    return nv.text(bus).lower() if bus else None


def best_link_gbps(index: int, links: dict[tuple[int, int], GpuLink], pcie: float) -> float:
    """The best peer link: what the planner gets between neighbour stages."""
    mine = [link.bandwidth_gbps for (a, b), link in links.items() if index in (a, b)]
    return max(mine) if mine else pcie


def nvlink_remotes(gateway: nv.NvmlGateway, index: int) -> list[str]:
    """PCI bus id at the far end of each active NVLink link ("" if unknown)."""
    remotes = []
    for link in range(nv.NVLINK_MAX_LINKS):
        state = gateway.device(index, "nvmlDeviceGetNvLinkState", link, quiet=True)
        if state is None:  # no NVLink, or past this GPU's last link
            break
        if state:
            info = gateway.device(index, "nvmlDeviceGetNvLinkRemotePciInfo", link, quiet=True)
            bus = getattr(info, "busId", None)
            remotes.append(nv.text(bus).lower() if bus else "")
    return remotes


def pair_links(gateway: nv.NvmlGateway, indices: list[int],
                nvlink: dict[int, list[str]]) -> dict[tuple[int, int], GpuLink]:
    buses = {bus_id(gateway, i): i for i in indices}
    pcie = {i: pcie_gbps(gateway, i) for i in indices}
    per_link = {i: _nvlink_gbps(gateway, i) for i in indices if nvlink[i]}
    # Links whose far end is no GPU go to an NVSwitch, which joins all such GPUs.
    switched = {i: sum(1 for bus in nvlink[i] if buses.get(bus) is None) for i in indices}
    links = {}
    for pos, a in enumerate(indices):
        for b in indices[pos + 1:]:
            direct = sum(1 for bus in nvlink[a] if buses.get(bus) == b)
            count = direct + min(switched[a], switched[b])
            if count:  # .get: a GPU may list a link its peer failed to report
                speed = count * min(per_link.get(a, 25.0), per_link.get(b, 25.0))
                links[(a, b)] = GpuLink(a, b, "nvlink", speed)
                continue
            level = gateway.pair(a, b, "nvmlDeviceGetTopologyCommonAncestor")
            kind = _LEVELS.get(level, "unknown") if level is not None else "unknown"
            factor = PATH_FACTORS.get(kind, PATH_FACTORS["system"])
            links[(a, b)] = GpuLink(a, b, kind, min(pcie[a], pcie[b]) * factor)
    return links


def _nvlink_gbps(gateway: nv.NvmlGateway, index: int) -> float:
    version = gateway.static(index, "nvmlDeviceGetNvLinkVersion", 0)
    return NVLINK_GBPS_PER_LINK.get(version or 0, 25.0)
