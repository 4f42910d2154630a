"""The console is served from the package, loads nothing from another origin, and the
sandbox banner's URLs answer."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.http.conftest import HttpGateway
from tests.test_process import _free_port, _imgate, _wait_serving

CONSOLE = Path(__file__).resolve().parents[2] / "server" / "imgate" / "console"


def test_the_console_names_no_other_origin() -> None:
    for path in CONSOLE.iterdir():
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]", text, re.I), path.name
            assert "@import" not in text


async def test_the_console_is_served_with_a_same_origin_policy(http: HttpGateway) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ):
        async with http.session.get(http.url(path)) as response:
            assert response.status == 200, path
            assert response.content_type == kind
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy
            assert "connect-src 'self'" in policy
            assert "script-src 'self'" in policy
    async with http.session.get(http.url("/console/nope.js")) as response:
        assert response.status == 404


async def test_the_console_can_be_turned_off(start_http: object) -> None:
    http = await start_http(http_console=False)  # type: ignore[operator]
    async with http.session.get(http.url("/")) as response:
        assert response.status == 404
    async with http.session.get(http.url("/v1/backends")) as response:
        assert response.status == 200


def test_the_sandbox_banner_points_at_urls_that_answer() -> None:
    target = f"127.0.0.1:{_free_port()}"
    http = f"127.0.0.1:{_free_port()}"
    process = _imgate(
        "serve", "--listen", target, "--sandbox-listen", "127.0.0.1:0", "--http-listen", http
    )
    try:
        banner = _read_banner(process)
        _wait_serving(target)
        urls = re.findall(r"http://[0-9.:]+/[^\s)]*", banner)
        assert f"http://{http}/" in urls, banner
        assert f"http://{http}/v1/openapi.json" in urls
        assert any(url.endswith("/sandbox/") for url in urls)
        for url in urls:
            if url.endswith("/v1/"):
                url += "backends"  # the API's root is its routes
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, url
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def _read_banner(process: subprocess.Popen[str]) -> str:
    """Standard error up to the end of the sandbox notice (printed once serving)."""
    assert process.stderr is not None
    lines: list[str] = []
    while sum(line.startswith("=====") for line in lines) < 2:
        line = process.stderr.readline()
        if not line:
            raise AssertionError("no banner: " + "".join(lines))
        lines.append(line)
    return "".join(lines)


def test_sandbox_mode_serves_grpc_alone_when_its_default_http_port_is_taken() -> None:
    target = f"127.0.0.1:{_free_port()}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The default port, made one this test holds.
        code = (
            "import sys, imgate.cli.main as cli, imgate.cli.serve as serve;"
            f" serve.DEFAULT_HTTP_LISTEN_IN_SANDBOX = '127.0.0.1:{port}';"
            f" sys.exit(cli.main(['serve', '--listen', '{target}', '--sandbox-listen',"
            " '127.0.0.1:0']))"
        )
        process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        try:
            banner = _read_banner(process)
            _wait_serving(target)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
    assert f"cannot listen on 127.0.0.1:{port} for HTTP/JSON" in banner
    assert "serving without HTTP (--http-listen)" in banner
    assert "Console:" not in banner
    assert process.returncode == 0
