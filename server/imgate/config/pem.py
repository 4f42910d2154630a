"""Check a TLS certificate and its private key before gRPC is given them.

grpc reports a key that does not match its certificate, or a file that holds no PEM, as
"Failed to bind to address" (server) or a bare UNAVAILABLE (client). The standard
library's `ssl` reads the same files and says which one is wrong, so `imgate serve`,
`imgate config check`, `imgate health` and `imgate send` name it (CONTRACT §11 rule 31).
Standard library only (`ssl` only once there is a file to check): `imgate health` imports
this and must stay light.
"""

from __future__ import annotations

from typing import Literal

Which = Literal["cert", "key", "ca"]


def pem_problem(
    cert_file: str | None, key_file: str | None, ca_file: str | None = None
) -> tuple[Which, str] | None:
    """(which file, what is wrong with it), or None when the certificate chain, its key
    and the CA file (each optional) can be used."""
    for which, path in (("cert", cert_file), ("key", key_file), ("ca", ca_file)):
        if path is None:
            continue
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            return which, f"cannot read {path}: {exc.strerror}"  # type: ignore[return-value]
    if ca_file is not None:
        problem = _certificates_problem(ca_file)
        if problem:
            return "ca", problem
    if cert_file is None:
        return None
    problem = _certificates_problem(cert_file)
    if problem:
        return "cert", problem
    if key_file is None:
        return None
    with open(key_file, "rb") as file:
        key = file.read()
    if b"ENCRYPTED" in key:
        return "key", f"{key_file} is an encrypted private key; give it unencrypted"
    if b"PRIVATE KEY-----" not in key:
        return "key", f"{key_file} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)"
    import ssl  # here: a health check without TLS options never pays for it

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback: an encrypted key must fail here, never prompt on a terminal.
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "key", f"{key_file} is not the private key of the certificate in {cert_file}"
        return "key", f"{key_file} cannot be used as a private key ({exc.reason or exc})"
    return None


def _certificates_problem(path: str) -> str | None:
    with open(path, "rb") as file:
        text = file.read()
    if b"-----BEGIN CERTIFICATE-----" not in text:
        return f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=text.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        return f"{path} holds a certificate that cannot be read ({getattr(exc, 'reason', exc)})"
    return None
