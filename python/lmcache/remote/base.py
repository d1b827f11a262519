"""The remote-tier interface: a shared key-value store that many engine
instances (and machines) read and write.

Implementations raise :class:`RemoteUnavailable` for every failure of the
store itself (refused, reset, timed out, cluster moved); the caller
(RemoteStore) turns that into a miss and a counter. Keys are hex chunk keys;
values are wire-encoded records (lmcache.remote.wire).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple, Optional, Sequence


class RemoteUnavailable(Exception):
    """The remote store could not answer (in time). Never carries a secret."""


class RemoteTls(NamedTuple):
    """Files for a TLS connection (PEM); empty strings for the defaults. The
    server's certificate is always verified, host name included."""

    ca_file: str = ""  # CA bundle the server's certificate must chain to ("": the system's)
    cert_file: str = ""  # client certificate, for servers that require one
    key_file: str = ""  # its private key

    def any(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.key_file)


class RemoteTier(ABC):
    #: name for logs and stats, with any password removed
    display_name: str = ""

    @abstractmethod
    def exists(self, keys: Sequence[str]) -> list[bool]:
        """One round trip (pipelined) for the whole batch."""

    @abstractmethod
    def get(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        """Values in order; None for a key the store does not have."""

    @abstractmethod
    def put(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Stores every (key, value); raises RemoteUnavailable if any failed."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...
