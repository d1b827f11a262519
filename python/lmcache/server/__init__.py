"""The node server: one cache per node, shared by every engine on it.

`lmcache server` (daemon.py) owns the host pool in shared memory, the disk
tier and the remote tier; engines attach over a Unix socket (client.py) by
setting `server_socket`, map the pool, and copy hits straight between it and
their KV caches (lmcache._core.SharedMover). The wire format is protocol.py.
"""
