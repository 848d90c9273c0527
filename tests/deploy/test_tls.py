"""The TLS variant of deploy/nginx.conf: HSTS over HTTPS only, every route still served."""
from __future__ import annotations

import http.client
import ssl
import subprocess
from pathlib import Path

import pytest

from deploystack import Stack, chat, request, start_nginx
from gated_llm import GatedLLM

pytestmark = pytest.mark.deploy

HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def https_get(port: int, path: str) -> http.client.HTTPResponse:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a throw-away self-signed certificate on loopback
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_hsts_is_sent_over_https_only_on_static_and_proxied_routes(make_stack, redis_prefix: str, llm: GatedLLM,
                                                                   certificate: tuple[Path, Path]) -> None:
    stack: Stack = make_stack(f"redis://127.0.0.1:6379/0?prefix={redis_prefix}", llm.base_url, instances=1)
    tls_proc, tls_port = start_nginx("nginx-tls", stack.work_dir / "nginx-tls", stack.ports, tls=certificate)
    try:
        for path in ("/widget.js", "/healthz", "/"):
            resp = https_get(tls_port, path)
            assert resp.status == 200, path
            assert resp.getheader("Strict-Transport-Security") == HSTS, path
        for path in ("/widget.js", "/healthz"):  # the plain-HTTP server of the same template
            assert "strict-transport-security" not in request(stack.nginx_port, "GET", path).headers
        assert chat(stack.nginx_port, "hi").status == 200
    finally:
        tls_proc.stop()
