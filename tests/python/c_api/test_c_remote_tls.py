"""The C API's remote tier over TLS (the native client's libssl path)
against a redis-server that speaks TLS only and asks for a client
certificate: a C engine round-trips with the right CA and certificate, and
every wrong setting (a name the certificate does not hold, an unknown CA, no
client certificate) is a miss counted as an error, never a connection that
skips verification."""

import numpy as np
import pytest
from redis_servers import RedisServer, free_port
from tls_pki import write_pki

from c_engine import CEngine, CError

L, NB, BS, H, D = 2, 8, 16, 2, 64
SECRET = "tls test secret, sixteen bytes+"
TOKENS = list(range(42, 42 + 64))
BLOCKS = list(range(4))


@pytest.fixture
def tls_server(tmp_path):
    ca, (cert, key), client = write_pki(tmp_path)
    port = free_port()
    server = RedisServer("--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
                         "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes", port=port)
    yield server, ca, client
    server.stop()


def caches(fill):
    rng = np.random.default_rng(3)
    return [rng.standard_normal((2, NB, BS, H, D)).astype(np.float32) if fill
            else np.zeros((2, NB, BS, H, D), np.float32) for _ in range(L)]


def config(url, **tls):
    return dict(chunk_size=16, l1_capacity_gb=0.01, model_id="tls", remote_url=url, auth_secret=SECRET,
                remote_timeout_s=2, **tls)


def test_c_engine_over_tls(tls_server):
    server, ca, (cert, key) = tls_server
    url = f"rediss://localhost:{server.port}"
    good = dict(remote_tls_ca_file=ca, remote_tls_cert_file=cert, remote_tls_key_file=key)
    src = caches(True)
    with CEngine(src, **config(url, **good)) as a:
        assert a.store(TOKENS, BLOCKS) == 64
        a.flush()
        assert a.stat("remote_puts") == 4 and a.stat("remote_errors") == 0
    dst = caches(False)
    with CEngine(dst, **config(url, **good)) as b:
        assert b.lookup(TOKENS) == 64 and b.load(TOKENS, BLOCKS) == 64
    for x, y in zip(src, dst):
        assert np.array_equal(x[:, :4], y[:, :4])

    refused = {
        "wrong host name": config(f"rediss://127.0.0.1:{server.port}", **good),  # the certificate names localhost
        "unknown CA": config(url, remote_tls_cert_file=cert, remote_tls_key_file=key),
        "no client certificate": config(url, remote_tls_ca_file=ca),
    }
    for why, cfg in refused.items():
        with CEngine(caches(False), **cfg) as c:
            assert c.lookup(TOKENS) == 0, why
            assert c.stat("remote_exists_errors") == 1, why


def test_bad_tls_settings_are_refused_at_create(tmp_path):
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(CError, match="rediss://"):
        CEngine(caches(False), **config("redis://127.0.0.1:1", remote_tls_ca_file=str(pem)))
    with pytest.raises(CError, match="remote_tls_ca_file"):
        CEngine(caches(False), **config("rediss://127.0.0.1:1", remote_tls_ca_file=str(tmp_path / "missing")))
    with pytest.raises(CError, match="remote_tls_ca_file"):  # exists, but is no certificate
        CEngine(caches(False), **config("rediss://127.0.0.1:1", remote_tls_ca_file=str(pem)))
    with pytest.raises(CError, match="remote_tls_key_file"):
        CEngine(caches(False), **config("rediss://127.0.0.1:1", remote_tls_key_file=str(pem)))
