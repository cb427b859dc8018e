"""amqps:// for real: a TLS-terminating proxy in front of the broker, certificates made here."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from broker_tools import TCPProxy

from amqpfast.core import connect
from amqpfast.exceptions import AMQPConnectionError


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def files(authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    client = authority.issue_cert("amqpfast-test-client")
    paths = {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "key.pem"}
    authority.cert_pem.write_to_path(paths["ca"])
    client.cert_chain_pems[0].write_to_path(paths["cert"])
    client.private_key_pem.write_to_path(paths["key"])
    return paths


def _server_context(authority: trustme.CA, client_certificate: ssl.VerifyMode) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    authority.configure_trust(context)
    context.verify_mode = client_certificate
    return context


@pytest.fixture
async def tls_proxy(authority: trustme.CA) -> AsyncIterator[TCPProxy]:
    context = _server_context(authority, ssl.CERT_OPTIONAL)
    proxy = await TCPProxy(server_ssl=context).start()
    proxy.server_names = []  # type: ignore[attr-defined]
    context.sni_callback = lambda _socket, name, _context: proxy.server_names.append(name)
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_valid_certificate_connects(tls_proxy, amqp_url, files):
    url = tls_proxy.url(amqp_url, host="localhost") + f"?cafile={files['ca']}"
    async with await connect(url) as conn:
        channel = await conn.channel()
        assert (await channel.queue_declare("", exclusive=True)).queue
    assert tls_proxy.peer_certificates == [None]  # no client certificate was asked for
    assert tls_proxy.server_names == ["localhost"]  # SNI


async def test_unknown_authority_fails(tls_proxy, amqp_url):
    url = tls_proxy.url(amqp_url, host="localhost")  # the system CAs do not know ours
    with pytest.raises(AMQPConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await connect(url, timeout=10)


async def test_wrong_host_name_fails(tls_proxy, amqp_url, files):
    # the certificate names localhost, not 127.0.0.1
    url = tls_proxy.url(amqp_url, host="127.0.0.1") + f"?cafile={files['ca']}"
    with pytest.raises(AMQPConnectionError, match=r"match"):
        await connect(url, timeout=10)


async def test_no_verify_ssl_connects_anyway(tls_proxy, amqp_url):
    # neither the authority nor the host name would pass verification
    url = tls_proxy.url(amqp_url, host="127.0.0.1") + "?no_verify_ssl=1"
    async with await connect(url) as conn:
        assert conn.is_opened


async def test_client_certificate_is_presented(tls_proxy, amqp_url, files):
    url = (
        tls_proxy.url(amqp_url, host="localhost")
        + f"?cafile={files['ca']}&certfile={files['cert']}&keyfile={files['key']}"
    )
    async with await connect(url) as conn:
        assert conn.is_opened
    (certificate,) = tls_proxy.peer_certificates
    assert certificate is not None
    subject_alt_names = [value for _kind, value in certificate["subjectAltName"]]
    assert "amqpfast-test-client" in subject_alt_names
