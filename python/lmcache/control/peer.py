"""Who is on the other end of a loopback TCP connection.

127.0.0.1 is reachable by every user of the machine, and the control API
would tell any of them which prompts are cached (and let them evict or clear
them). Without a bearer token, the server therefore answers only
connections whose client socket belongs to its own user: the kernel lists
every TCP socket with its owner's uid in /proc/net/tcp and /proc/net/tcp6.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ESTABLISHED = "01"


def _parse(endpoint: str) -> tuple[ipaddress._BaseAddress, int]:
    addr, port = endpoint.split(":")
    raw = bytes.fromhex(addr)
    # The kernel prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(port, 16)


def loopback_peer_uid(client_port: int, server_port: int) -> Optional[int]:
    """The uid owning the loopback client socket (client_port -> server_port),
    or None when there is no such connection."""
    for table in _TABLES:
        try:
            with open(table, encoding="ascii") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != _ESTABLISHED:
                continue
            try:
                (lip, lport), (rip, rport) = _parse(fields[1]), _parse(fields[2])
            except ValueError:
                continue
            if lport == client_port and rport == server_port and lip.is_loopback and rip.is_loopback:
                return int(fields[7])
    return None
