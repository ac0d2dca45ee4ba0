"""`--listen` and `endpoint.listen`: HOST:PORT or a clear error naming the field."""

from __future__ import annotations

import pytest

from vigil.agent.endpoint import EndpointError, parse_listen
from vigil.api.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9465", ("127.0.0.1", 9465)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9465", ("::1", 9465)),
        ("fd00::5:9465", ("fd00::5", 9465)),  # the chart's $(POD_IP):port on IPv6
    ],
)
def test_listen_parses(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["9465", ":9465", "host:", "host:http", "host:70000"])
def test_listen_refuses(value: str) -> None:
    with pytest.raises(EndpointError, match=r"--listen: .* is not HOST:PORT"):
        parse_listen(value)


def test_config_names_the_field() -> None:
    assert parse_config({"endpoint": {"listen": "0.0.0.0:9465"}}).endpoint.listen == (
        "0.0.0.0:9465"
    )
    with pytest.raises(ConfigError, match=r"endpoint\.listen: .*'9465' is not HOST:PORT"):
        parse_config({"endpoint": {"listen": "9465"}})
    with pytest.raises(ConfigError, match=r"endpoint\.stallSeconds"):
        parse_config({"endpoint": {"stallSeconds": 0}})
