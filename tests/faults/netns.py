"""Hosts for tests with several machines: network namespaces on a bridge of this machine,
which plays the third host (the database and the broker listen on the bridge's address).

Each host is a namespace with one interface (`eth0`), its own loopback and ports, and a
route to the bridge; a process runs on a host when started through `host.command(argv)`.
A partition detaches the host's cable from the bridge: its packets vanish, as behind a
failed switch, while its interface stays up, so its open TCP connections live on and
resume when the cable is plugged back in (`heal`).
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.dev.procs import executable


class Unavailable(Exception):
    """This machine cannot make network namespaces (not root, no `ip`, a container)."""


def ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(("netns", "exec", netns, "ip") if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    cable: str  # the bridge's end of its veth pair

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace (`ip netns exec` keeps the pid)."""
        return ["ip", "netns", "exec", self.netns, executable(argv[0]), *argv[1:]]


class Network:
    """A bridge with an address of its own (`gateway`) and hosts plugged into it."""

    def __init__(self, names: Sequence[str]) -> None:
        tag = secrets.token_hex(3)
        self.bridge = f"pbr{tag}"
        self.subnet = _free_subnet()
        addresses = self.subnet.hosts()
        self.gateway = str(next(addresses))
        self.hosts: dict[str, Host] = {}
        try:
            ip("link", "add", self.bridge, "type", "bridge")
        except RuntimeError as exc:
            raise Unavailable(str(exc)) from None
        try:
            ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for index, name in enumerate(names):
                self._plug(
                    Host(name, f"pipeline-{tag}-{name}", str(next(addresses)), f"pv{tag}{index}")
                )
        except BaseException:
            self.close()
            raise

    def _plug(self, host: Host) -> None:
        ip("netns", "add", host.netns)
        self.hosts[host.name] = host
        ip("link", "add", host.cable, "type", "veth", "peer", "name", f"{host.cable}n")
        ip("link", "set", f"{host.cable}n", "netns", host.netns)
        ip("link", "set", host.cable, "master", self.bridge, "up")
        inside = host.netns
        ip("link", "set", f"{host.cable}n", "name", "eth0", netns=inside)
        ip("addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0", netns=inside)
        ip("link", "set", "eth0", "up", netns=inside)
        ip("link", "set", "lo", "up", netns=inside)
        ip("route", "add", "default", "via", self.gateway, netns=inside)

    def partition(self, name: str) -> None:
        """Cut `name` off: nothing it sends arrives, nothing sent to it arrives."""
        ip("link", "set", self.hosts[name].cable, "nomaster")

    def heal(self, name: str) -> None:
        ip("link", "set", self.hosts[name].cable, "master", self.bridge)

    def close(self) -> None:
        """Remove the hosts and the bridge (their processes must be stopped first)."""
        for host in self.hosts.values():
            subprocess.run(["ip", "link", "del", host.cable], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.250.0.0/16 that no interface of this machine is on."""
    done = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False)
    taken = done.stdout
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.250.{random.randrange(256)}.0/24")
        if f" {subnet.network_address}".rsplit(".", 1)[0] + "." not in taken:
            return subnet
    raise Unavailable("no free /24 in 10.250.0.0/16")
