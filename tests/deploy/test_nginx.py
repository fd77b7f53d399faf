"""deploy/nginx.conf (the host's) and deploy/compose/nginx.conf (compose.yaml's) turn away what
Tapedeck would refuse anyway, with the same limits, and keep the callback token out of the logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.main import build_parser
from service.settings import Settings
from tests.deploy.nginx_conf import Directive, parse

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIGS = {"host": DEPLOY / "nginx.conf", "compose": DEPLOY / "compose" / "nginx.conf"}
# Directives nginx accepts only in the http block (which includes these files), not in a server.
HTTP_ONLY = {"log_format", "limit_conn_zone", "limit_req_zone", "upstream", "map"}
SERVER_LIMITS = ("client_max_body_size", "client_header_timeout", "client_body_timeout", "keepalive_timeout",
                 "send_timeout", "limit_conn")  # fmt: skip


def config(name: str) -> Directive:
    return parse(CONFIGS[name].read_text())


def serve_default(option: str) -> int:
    return int(getattr(build_parser().parse_args(["serve"]), option))


def seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value[:-1])


def megabytes(value: str) -> int:
    assert value.endswith("m"), value
    return int(value[:-1]) * 1024 * 1024


@pytest.mark.parametrize("name", CONFIGS)
def test_bodies_past_max_callback_bytes_stop_at_nginx(name: str) -> None:
    server = config(name).one("server")
    assert megabytes(server.one("client_max_body_size").args[0]) == Settings().max_callback_bytes


@pytest.mark.parametrize("name", CONFIGS)
def test_slow_clients_time_out_before_tapedeck_would(name: str) -> None:
    server = config(name).one("server")
    # A body stalled this long is cut by nginx before Tapedeck's own body timeout answers 408.
    assert seconds(server.one("client_body_timeout").args[0]) <= Settings().callback_body_timeout_s
    assert seconds(server.one("client_header_timeout").args[0]) <= Settings().callback_body_timeout_s
    for location in server.all("location"):
        # POST /tasks may wait CREATE_MAX_QUEUE_S for a create slot: nginx must wait as long.
        assert seconds(location.one("proxy_read_timeout").args[0]) >= Settings().create_max_queue_s
        assert location.one("proxy_request_buffering").args == ["on"]


def test_both_configs_set_the_same_limits() -> None:
    host, compose = (config(n).one("server") for n in ("host", "compose"))
    for limit in SERVER_LIMITS:
        assert host.one(limit).args == compose.one(limit).args, limit
    host_upstream, compose_upstream = (config(n).one("upstream") for n in ("host", "compose"))
    assert host_upstream.one("keepalive_timeout").args == compose_upstream.one("keepalive_timeout").args


@pytest.mark.parametrize("name", CONFIGS)
def test_nginx_drops_idle_upstream_connections_before_uvicorn_does(name: str) -> None:
    upstream = config(name).one("upstream")
    assert seconds(upstream.one("keepalive_timeout").args[0]) < serve_default("timeout_keep_alive")


@pytest.mark.parametrize("name", CONFIGS)
def test_http_level_directives_are_not_inside_a_server(name: str) -> None:
    """`log_format` inside `server` makes `nginx -t` fail ("directive is not allowed here")."""
    root = config(name)
    nested = [d.name for child in root.children for d in child.walk()[1:] if d.name in HTTP_ONLY]
    assert not nested


@pytest.mark.parametrize("name", CONFIGS)
def test_every_location_proxies_to_tapedeck_and_logs_no_query_string(name: str) -> None:
    root = config(name)
    upstream = root.one("upstream").args[0]
    server = root.one("server")
    log_format = root.one("log_format")
    assert "$request_uri" not in log_format.args[1] and "$args" not in log_format.args[1]
    assert server.one("access_log").args[1] == log_format.args[0]
    locations = {tuple(d.args): d for d in server.all("location")}
    assert set(locations) == {("=", "/callbacks/kie"), ("/",)}
    for location in locations.values():
        assert location.one("proxy_pass").args == [f"http://{upstream}"]
    # The callback path's error log would carry the token of every failed request.
    assert locations[("=", "/callbacks/kie")].one("error_log").args[1] == "crit"


def test_the_host_config_terminates_tls() -> None:
    server = config("host").one("server")
    assert server.one("listen").args == ["443", "ssl"]
    assert server.one("ssl_certificate").args and server.one("ssl_certificate_key").args
