"""Connection URLs: aio-pika's options, defaults, and a password that never shows."""

from __future__ import annotations

import ssl

import pytest

from amqpfast.url import ConnectionParameters, mask_password, parse_bool, parse_url


def test_defaults():
    parameters = parse_url()

    assert (parameters.host, parameters.port, parameters.virtualhost) == ("localhost", 5672, "/")
    assert (parameters.login, parameters.password) == ("guest", "guest")
    assert parameters.fail_fast is True
    assert parameters.reconnect_interval == 5.0
    assert parameters.ssl_context() is None


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://h/", "/"),
        ("amqp://h", "/"),
        ("amqp://h/%2F", "/"),
        ("amqp://h/production", "production"),
        ("amqp://h/a%2Fb", "a/b"),
    ],
)
def test_vhost_from_path(url, vhost):
    assert parse_url(url).virtualhost == vhost


def test_every_query_option():
    parameters = parse_url(
        "amqps://user:p%40ss@broker.example:5999/vh?name=worker-1&cafile=/ca.pem&capath=/cas"
        "&cadata=PEM&keyfile=/k.pem&certfile=/c.pem&no_verify_ssl=1&heartbeat=15"
        "&interleave=1&happy_eyeballs_delay=0.25&reconnect_interval=2.5&fail_fast=no"
        "&frame_max=65536&channel_max=64&auth=amqplain&connection_timeout=7"
    )

    assert parameters == ConnectionParameters(
        host="broker.example",
        port=5999,
        login="user",
        password="p@ss",
        virtualhost="vh",
        ssl=True,
        name="worker-1",
        cafile="/ca.pem",
        capath="/cas",
        cadata="PEM",
        keyfile="/k.pem",
        certfile="/c.pem",
        no_verify_ssl=True,
        heartbeat=15,
        frame_max=65536,
        channel_max=64,
        auth="AMQPLAIN",
        connection_timeout=7.0,
        interleave=1,
        happy_eyeballs_delay=0.25,
        reconnect_interval=2.5,
        fail_fast=False,
    )


def test_amqps_defaults_to_port_5671_and_verifies():
    parameters = parse_url("amqps://broker.example/")

    context = parameters.ssl_context()

    assert parameters.port == 5671
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_no_verify_ssl_turns_verification_off():
    context = parse_url("amqps://broker.example/?no_verify_ssl=yes").ssl_context()

    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False


@pytest.mark.parametrize("text", ["true", "Yes", "y", "enable", "ON", "enabled", "1"])
def test_true_words(text):
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["false", "no", "n", "disable", "off", "disabled", "0"])
def test_false_words(text):
    assert parse_bool(text) is False


def test_bad_flag_is_refused():
    with pytest.raises(ValueError, match="boolean"):
        parse_url("amqp://h/?fail_fast=perhaps")


def test_keyword_overrides_win():
    parameters = parse_url("amqp://a:b@h:1/v", host="other", port=2, virtualhost="w")

    assert (parameters.host, parameters.port, parameters.virtualhost) == ("other", 2, "w")


@pytest.mark.parametrize("url", ["http://h/", "amqp://h/?heartbeat=soon", "amqp://h/?auth=magic"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        parse_url(url)


def test_password_never_printed():
    parameters = parse_url("amqp://user:s3cret-pw@h/vh")

    for text in (str(parameters), repr(parameters), mask_password(parameters.url)):
        assert "s3cret-pw" not in text
    assert "******" in str(parameters)


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", None), ("?timeout=3", 3.0), ("?connection_timeout=0&timeout=3", 0.0)],
)
def test_connection_timeout_zero_is_kept(query, expected):
    assert parse_url(f"amqp://localhost/{query}").connection_timeout == expected
