"""Who is on the other end of a Unix socket: the kernel's SO_PEERCRED, read
the same way by every server lmcache runs (the vLLM lookup socket, the node
server) and every client that must not talk to another user's process."""

from __future__ import annotations

import socket
import struct

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_creds(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer; raises OSError when the kernel cannot say."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def peer_uid(sock: socket.socket) -> int:
    return peer_creds(sock)[1]
