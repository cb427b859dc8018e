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


# ------------------------------------------------------------ values refused


NOT_UTF8 = "its percent-escapes are not UTF-8"
INTEGER_16 = "expected an integer from 0 to 65535"
SECONDS = "expected a number of seconds, 0 or more"


@pytest.mark.parametrize(
    ("query", "shown", "allowed"),
    [
        # percent-escapes that are not UTF-8: yarl would hand out U+FFFD
        ("fail_fast=%ff", "%FF", NOT_UTF8),
        ("heartbeat=1%C3%28", "1%C3(", NOT_UTF8),
        ("name=%E2%82", "%E2%82", NOT_UTF8),
        # numbers that are not numbers, or out of range
        ("heartbeat=soon", "soon", INTEGER_16),
        ("heartbeat=-1", "-1", INTEGER_16),
        ("heartbeat=65536", "65536", INTEGER_16),
        ("heartbeat=1.5", "1.5", INTEGER_16),
        ("frame_max=4095", "4095", "expected 0 (no limit) or an integer from 4096 to 4294967295"),
        ("frame_max=4294967296", "4294967296", "expected 0 (no limit) or an integer"),
        ("channel_max=65536", "65536", INTEGER_16),
        ("max_message_size=1MB", "1MB", "expected 0 (no limit) or a positive integer (bytes)"),
        ("max_message_size=-5", "-5", "expected 0 (no limit) or a positive integer"),
        ("interleave=-1", "-1", "expected an integer, 0 or more"),
        ("connection_timeout=nan", "nan", SECONDS),
        ("timeout=-1", "-1", SECONDS),
        ("happy_eyeballs_delay=inf", "inf", SECONDS),
        ("reconnect_interval=x", "x", SECONDS),
        ("fail_fast=maybe", "maybe", "expected a boolean: true, yes, y, on, enable, enabled, 1"),
        ("no_verify_ssl=2", "2", "expected a boolean"),
    ],
)
def test_bad_option_names_itself_its_value_and_what_is_allowed(query, shown, allowed):
    option = query.partition("=")[0]

    with pytest.raises(ValueError) as raised:
        parse_url(f"amqp://h/?{query}")

    assert str(raised.value).startswith(f"URL option {option}={shown!r} is invalid: {allowed}")


def test_unknown_auth_lists_the_mechanisms():
    with pytest.raises(
        ValueError, match="auth='MAGIC' is invalid: expected one of PLAIN, AMQPLAIN"
    ):
        parse_url("amqp://h/?auth=magic")


@pytest.mark.parametrize(
    ("url", "part"),
    [("amqp://u%ff@h/", "user name"), ("amqp://u:p%ff@h/", "password"), ("amqp://h/v%ff", "path")],
)
def test_parts_that_are_not_utf8_are_refused_without_showing_them(url, part):
    with pytest.raises(ValueError, match=f"the URL's {part} is invalid: .* not UTF-8") as raised:
        parse_url(url)

    assert "%ff" not in str(raised.value).lower()


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("heartbeat", -1),
        ("heartbeat", True),
        ("frame_max", 100),
        ("channel_max", 1 << 16),
        ("max_message_size", -1),
        ("max_message_size", 1.5),
        ("connection_timeout", "5"),
        ("reconnect_interval", float("nan")),
    ],
)
def test_bad_keyword_values_are_refused_as_well(keyword, value):
    with pytest.raises(ValueError, match=f"keyword {keyword}=.* is invalid: expected"):
        parse_url("amqp://h/", **{keyword: value})


def test_limits_themselves_are_allowed():
    parameters = parse_url(
        "amqp://h/?heartbeat=65535&frame_max=4096&channel_max=65535&max_message_size=0"
        "&connection_timeout=0&reconnect_interval=0.5"
    )

    assert (parameters.heartbeat, parameters.frame_max, parameters.channel_max) == (
        65535,
        4096,
        65535,
    )
    assert parameters.max_message_size == 0
    assert parse_url("amqp://h/?frame_max=0").frame_max == 0


def test_max_message_size_defaults_to_rabbitmqs_limit():
    assert parse_url("amqp://h/").max_message_size == 128 * 1024 * 1024
    assert parse_url().max_message_size == 128 * 1024 * 1024
    assert parse_url("amqp://h/?max_message_size=1048576").max_message_size == 1048576
    assert parse_url("amqp://h/?max_message_size=5", max_message_size=7).max_message_size == 7
