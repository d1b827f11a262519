"""Remote URLs and TLS: passwords never shown (whatever characters they hold),
TLS options reach the client with the certificate and host name always
checked, and a real TLS redis-server round trip."""

import pytest
from redis_servers import RedisServer, free_port
from tls_pki import write_pki
from remote_helpers import cache, engine, load_into_fresh, same_blocks, store_and_flush, toks

import lmcache
from lmcache.remote import RemoteTls, make_remote_tier
from lmcache.remote.redis_tier import redact

pytest.importorskip("redis")

PASSWORD = "pa@ss:w/x?y#z"


@pytest.mark.parametrize("url, shown", [
    ("redis://u:pa@ss:w@h:1/0", "redis://u:***@h:1/0"),
    ("redis://:pa@ss:w@h:1", "redis://:***@h:1"),
    ("redis+cluster://:pa@ss:w@h1:1,h2:2", "redis+cluster://:***@h1:1,h2:2"),
    ("rediss+cluster://admin:pa@ss:w/x?y#z@h1:1,h2:2/0", "rediss+cluster://admin:***@h1:1,h2:2/0"),
    ("redis://pa@ss:w@h:1", "redis://***@h:1"),  # no user name: the whole user part may be a password
    ("redis://h:1/0?password=pa@ss:w", "redis://***"),  # what follows the '@' does not parse as hosts
    ("redis://h:1/0?password=pa:ss", "redis://h:1/0"),
    ("redis://h:1/0", "redis://h:1/0"),
    ("h:1 pa@ss", "***"),
])
def test_redact_hides_every_part_of_the_password(url, shown):
    assert redact(url) == shown
    for piece in ("pa", "ss:w", "w/x", "y#z"):
        assert piece not in redact(url)


def test_a_password_with_url_characters_authenticates(redis_server):
    """The same hand split that redacts also parses: '@', ':', '/', '?', '#' in a password work."""
    server = RedisServer(password=PASSWORD)
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}"
        src, t = cache(), toks(31)
        with engine(url) as a:
            store_and_flush(a, src, t, list(range(8)))
            assert a.stats()["remote_puts"] == 4 and a.stats()["remote_errors"] == 0
            assert PASSWORD not in repr(a._remote) and "***" in a._remote.tier.display_name
    finally:
        server.stop()


@pytest.fixture
def tls_server(tmp_path):
    """A redis-server that speaks TLS only and asks clients for a certificate."""
    ca, (cert, key), client = write_pki(tmp_path)
    port = free_port()
    server = RedisServer("--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
                         "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes", port=port)
    yield server, ca, client
    server.stop()


def test_tls_options_reach_the_client(tls_server):
    server, ca, (cert, key) = tls_server
    tier = make_remote_tier(f"rediss://localhost:{server.port}", timeout_s=1,
                            tls=RemoteTls(ca_file=ca, cert_file=cert, key_file=key))
    try:
        kw = tier._client.connection_pool.connection_kwargs
        assert kw["ssl_ca_certs"] == ca and kw["ssl_certfile"] == cert and kw["ssl_keyfile"] == key
        assert kw["ssl_cert_reqs"] == "required" and kw["ssl_check_hostname"] is True
    finally:
        tier.close()


def test_tls_round_trip_and_refusals(tls_server):
    server, ca, (cert, key) = tls_server
    good = RemoteTls(ca_file=ca, cert_file=cert, key_file=key)
    url = f"rediss://localhost:{server.port}"
    src, t = cache(), toks(32)
    with engine(url, tls=good) as a:
        store_and_flush(a, src, t, list(range(8)))
        assert a.stats()["remote_puts"] == 4
    hit, n, dst, _ = load_into_fresh(url, t, tls=good)
    assert hit == n == 128 and same_blocks(src, dst, list(range(8)), 8)
    refused = {
        "wrong host name": (f"rediss://127.0.0.1:{server.port}", good),  # the certificate names localhost only
        "unknown CA": (url, RemoteTls(cert_file=cert, key_file=key)),  # the system's CAs do not know ours
        "no client certificate": (url, RemoteTls(ca_file=ca)),
    }
    for why, (bad_url, tls) in refused.items():
        hit, n, _, s = load_into_fresh(bad_url, t, tls=tls, timeout_s=2)
        assert (hit, n) == (0, 0), why
        assert s["remote_exists_errors"] == 1, why


def test_bad_tls_settings_are_config_errors(tmp_path):
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(lmcache.ConfigError, match="remote_tls"):
        make_remote_tier("redis://127.0.0.1:1", timeout_s=1, tls=RemoteTls(ca_file=str(pem)))  # not a TLS URL
    with pytest.raises(lmcache.ConfigError, match="remote_tls_ca_file"):
        make_remote_tier("rediss://127.0.0.1:1", timeout_s=1, tls=RemoteTls(ca_file=str(tmp_path / "missing")))
    with pytest.raises(lmcache.ConfigError, match="remote_tls_key_file"):
        make_remote_tier("rediss://127.0.0.1:1", timeout_s=1, tls=RemoteTls(key_file=str(pem)))
