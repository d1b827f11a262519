"""A throw-away PKI for TLS tests: a CA, a server certificate for the name
'localhost' only, and a client certificate, written as PEM files."""

import datetime
import ipaddress


def _cert(subject, issuer_key, issuer, key, *, ca=False, dns=(), ips=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns or ips:
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def write_pki(d):
    """A CA, a server certificate for the name 'localhost' only, and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def pem_key(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lmcache test CA")])
    ca = _cert("lmcache test CA", ca_key, ca_name, ca_key, ca=True)
    files = {}
    for name, dns in (("server", ("localhost",)), ("client", ())):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name, ca_key, ca_name, key, dns=dns)
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{name}.key").write_bytes(pem_key(key))
        files[name] = (str(d / f"{name}.pem"), str(d / f"{name}.key"))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return str(d / "ca.pem"), files["server"], files["client"]
