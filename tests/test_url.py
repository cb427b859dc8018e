"""Connection URLs: aio-pika's options, defaults, and a password that never shows."""

from __future__ import annotations

import re
import ssl
from typing import Any
from unittest import mock

import pytest
from yarl import URL

import amqpfast
from amqpfast.exceptions import AMQPConnectionError
from amqpfast.url import (
    ConnectionParameters,
    host_urls,
    mask_password,
    parse_bool,
    parse_url,
    split_hosts,
)


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


# ------------------------------------------------------------ several hosts (a cluster)


def test_a_host_list_gives_one_url_per_host_with_the_same_options():
    urls = split_hosts("amqp://user:p%40ss@h1:5672,h2:5673,h3/orders?heartbeat=5&name=w")

    assert [str(url) for url in urls] == [
        "amqp://user:p%40ss@h1:5672/orders?heartbeat=5&name=w",
        "amqp://user:p%40ss@h2:5673/orders?heartbeat=5&name=w",
        "amqp://user:p%40ss@h3/orders?heartbeat=5&name=w",
    ]
    parameters = [parse_url(url) for url in urls]
    assert [(p.host, p.port) for p in parameters] == [("h1", 5672), ("h2", 5673), ("h3", 5672)]
    for p in parameters:
        assert (p.login, p.password, p.virtualhost, p.heartbeat, p.name) == (
            "user",
            "p@ss",
            "orders",
            5,
            "w",
        )


def test_a_host_list_with_tls_keeps_each_hosts_name_and_the_tls_default_port():
    urls = split_hosts("amqps://rabbit-1.example,rabbit-2.example:6000/?cafile=/ca.pem")

    parameters = [parse_url(url) for url in urls]
    # the host name is also what the TLS handshake sends (SNI) and checks
    assert [(p.host, p.port, p.ssl, p.cafile) for p in parameters] == [
        ("rabbit-1.example", 5671, True, "/ca.pem"),
        ("rabbit-2.example", 6000, True, "/ca.pem"),
    ]


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("amqp://[::1]:5672,[fe80::2]/", [("::1", 5672), ("fe80::2", 5672)]),
        ("amqp://h1, h2:5673", [("h1", 5672), ("h2", 5673)]),  # as a configuration writes it
        ("amqp://h1:,h2", [("h1", 5672), ("h2", 5672)]),  # an empty port is the default
        ("amqp://10.0.0.1,10.0.0.2#frag", [("10.0.0.1", 5672), ("10.0.0.2", 5672)]),
    ],
)
def test_host_list_forms(url, hosts):
    assert [(parse_url(one).host, parse_url(one).port) for one in split_hosts(url)] == hosts


def test_one_host_gives_the_url_itself():
    url = URL("amqp://guest:guest@h:5672/vh?heartbeat=3")

    assert split_hosts(url) == [url]
    assert split_hosts("amqp://h/") == [URL("amqp://h/")]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://h1,,h2/", "host list 'h1,,h2' is invalid: host 2 is empty"),
        ("amqp://h1,h2,/", "host 3 is empty"),
        ("amqp://h1,h2:0/", "host 2 has the port '0', expected an integer from 1 to 65535"),
        ("amqp://h1:65536,h2/", "host 1 has the port '65536', expected an integer from 1"),
        ("amqp://h1,h2:x/", "host 2 has the port 'x'"),
        ("amqp://h1,[::1/", "host 2 '[::1' is not host[:port]"),
        ("amqp://h1,h 2/", "host 2 'h 2' is not host[:port]"),
        ("amqp://h1,h2:1:2/", "host 2 'h2:1:2' is not host[:port]"),
        ("http://h1,h2/", "unsupported URL scheme 'http'"),
    ],
)
def test_bad_host_lists_are_refused(url, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        split_hosts(url)


def test_parse_url_refuses_several_hosts_without_showing_the_password():
    with pytest.raises(ValueError, match="names 2 hosts: a connection is made to one") as raised:
        parse_url("amqp://user:s3cret-pw@h1,h2/")

    assert "s3cret-pw" not in str(raised.value)


def test_password_of_a_host_list_is_masked():
    masked = mask_password("amqps://user:s3cret-pw@h1:1,h2/vh?name=x")

    assert masked == "amqps://user:******@h1:1,h2/vh?name=x"
    assert mask_password("amqp://h1,h2/") == "amqp://h1,h2/"


@pytest.mark.parametrize(("query", "expected"), [("", False), ("?shuffle=1", True)])
def test_shuffle_option(query, expected):
    assert parse_url(f"amqp://h/{query}").shuffle is expected


@pytest.mark.parametrize("source", ["option", "keyword"])
def test_bad_shuffle_is_refused(source):
    allowed = "is invalid: expected a boolean: true, yes"
    if source == "option":
        with pytest.raises(ValueError, match=f"URL option shuffle='sometimes' {allowed}"):
            host_urls("amqp://h1,h2/?shuffle=sometimes")
        with pytest.raises(ValueError, match=f"URL option shuffle='sometimes' {allowed}"):
            parse_url("amqp://h/?shuffle=sometimes")
    else:
        with pytest.raises(ValueError, match=f"keyword shuffle='sometimes' {allowed}"):
            host_urls("amqp://h1,h2/", shuffle="sometimes")


def test_host_urls_keep_the_order_unless_shuffled():
    hosts = [f"h{number}" for number in range(8)]
    url = f"amqp://{','.join(hosts)}/"

    assert [one.host for one in host_urls(url)] == hosts
    assert [one.host for one in host_urls([url, "amqp://z/"])] == [*hosts, "z"]
    orders = {tuple(one.host for one in host_urls(f"{url}?shuffle=true")) for _ in range(20)}
    assert all(sorted(order) == hosts for order in orders)  # each host once
    assert len(orders) > 1  # 20 times the same order: (1 / 8!) ** 19
    # the keyword wins over the option
    assert [one.host for one in host_urls(f"{url}?shuffle=true", shuffle=False)] == hosts
    with pytest.raises(ValueError, match="no URL given"):
        host_urls([])


# ------------------------------------------------------------ connections given several hosts


class _Refused:
    """Stands for UnderlayConnection.connect: every host refuses; records the order."""

    def __init__(self) -> None:
        self.ports: list[int | None] = []

    async def __call__(self, url: URL, *args: Any, **kwargs: Any) -> Any:
        self.ports.append(url.port)
        raise AMQPConnectionError(f"refused by port {url.port}")


async def test_connect_tries_each_host_once_and_raises_the_last_error():
    refused = _Refused()
    with mock.patch("amqpfast.connection.UnderlayConnection.connect", refused):
        with pytest.raises(AMQPConnectionError, match="refused by port 3") as raised:
            await amqpfast.connect("amqp://u:s3cret@h:1,h:2,h:3/", timeout=1)
        assert raised.value.__notes__ == [
            "tried before: amqp://u:******@h:1/: AMQPConnectionError: refused by port 1",
            "tried before: amqp://u:******@h:2/: AMQPConnectionError: refused by port 2",
        ]
        assert refused.ports == [1, 2, 3]

        refused.ports.clear()
        with pytest.raises(AMQPConnectionError):
            await amqpfast.connect(["amqp://h:4/", "amqp://h:5,h:6/"], timeout=1)
        assert refused.ports == [4, 5, 6]


async def test_shuffle_gives_each_connection_an_order_of_its_own():
    refused = _Refused()
    url = "amqp://h:1,h:2,h:3,h:4/"
    with mock.patch("amqpfast.connection.UnderlayConnection.connect", refused):
        orders = set()
        for shuffle in [{"shuffle": True}] * 10 + [{}] * 10:
            refused.ports.clear()
            with pytest.raises(AMQPConnectionError):
                await amqpfast.connect(url, timeout=1, **shuffle)
            orders.add(tuple(refused.ports))
    assert (1, 2, 3, 4) in orders  # without shuffle
    assert len(orders) > 1 and all(sorted(order) == [1, 2, 3, 4] for order in orders)


async def test_connect_robust_takes_a_host_list():
    refused = _Refused()
    with (
        mock.patch("amqpfast.connection.UnderlayConnection.connect", refused),
        pytest.raises(AMQPConnectionError, match="refused by port 3"),
    ):
        await amqpfast.connect_robust("amqp://h:1,h:2,h:3/?fail_fast=1", timeout=1)
    assert refused.ports == [1, 2, 3]  # fail_fast: each host once


def test_a_connection_object_knows_its_hosts():
    connection = amqpfast.RobustConnection("amqp://u:pw@h1:1,h2/?reconnect_interval=2")

    assert connection.url == URL("amqp://u:pw@h1:1/?reconnect_interval=2")  # the first, for now
    assert connection.reconnect_interval == 2
    assert "pw" not in str(connection)
    with pytest.raises(ValueError, match="host 2 is empty"):
        amqpfast.Connection("amqp://h1,,h2/")
