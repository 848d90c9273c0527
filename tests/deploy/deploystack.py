"""Real servers for the deploy tests: gunicorn instances, NGINX and redis-server, plus HTTP helpers.

Every server runs as a child process in its own process group on 127.0.0.1 and a free port,
with its logs in a temporary folder; ``Proc.stop()`` (or ``kill()``) ends the whole group.
Also used by ``bench/http_throughput.py``; the gated fake LLM is in ``gated_llm.py``.
"""
from __future__ import annotations

import http.client
import http.server
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 30.0
MACHINE_REDIS = "redis://127.0.0.1:6379/0"
TEMPLATE_VARIABLE = re.compile(r"\$\{(HYBRIDBOT_[A-Z_]+)\}")
# Variables a test environment must not inherit from the developer's shell.
SCRUBBED = ("BOT_", "OPENAI_", "PROMETHEUS_", "GUNICORN_", "BIND")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: "Proc | None" = None, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s" + (f":\n{proc.tail()}" if proc else ""))


def wait_refused(port: int, timeout: float = 10.0) -> None:
    """Wait until connecting to ``port`` is refused (every process holding the socket is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except ConnectionRefusedError:
            return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"port {port} still accepts connections after {timeout:g} s")


@dataclass
class Proc:
    """A child process in its own process group, logging to ``log_path``."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None,
              cwd: Path = ROOT) -> "Proc":
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(argv, cwd=cwd, env=dict(env) if env is not None else None, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return cls(name, popen, log_path)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (a gunicorn master and its workers)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it if still there after ``timeout``; reap the child."""
        if self.alive:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        self.kill(signal.SIGKILL)  # workers that outlived their master
        self.popen.wait(timeout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
    env.update(extra)
    return env


def start_gunicorn(name: str, app: str, log_dir: Path, env: Mapping[str, str], *, workers: int = 1,
                   threads: int = 8, metrics_dir: Path | None = None, wait: bool = True) -> tuple[Proc, int]:
    """``gunicorn -c deploy/gunicorn.conf.py APP`` on a free port; returns once it accepts connections
    (with ``wait=False`` at once: call ``wait_healthy`` before using it)."""
    port = free_port()
    settings = {"BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": str(threads),
                "GUNICORN_GRACEFUL_TIMEOUT": "5", **env}
    if metrics_dir is not None:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        settings["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    proc = Proc.start(name, [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF), app], log_dir,
                      clean_env(**settings))
    if wait:
        wait_healthy(port, proc)
    return proc, port


def wait_healthy(port: int, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    """Wait until ``GET /healthz`` answers 200 (a worker has loaded the bot)."""
    wait_for_port(port, proc, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if request(port, "GET", "/healthz", timeout=timeout).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} is not healthy after {timeout:g} s:\n{proc.tail()}")


def render_nginx(template: str, **variables: str) -> str:
    """The site template with ``${HYBRIDBOT_*}`` replaced, as envsubst does; NGINX's own $vars stay."""
    missing = sorted(set(TEMPLATE_VARIABLE.findall(template)) - set(variables))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return TEMPLATE_VARIABLE.sub(lambda m: variables[m.group(1)], template)


def start_nginx(name: str, work_dir: Path, upstream_ports: list[int], *, web_root: Path = ROOT / "web",
                upstream_options: str = "max_fails=1 fail_timeout=10s", tls: tuple[Path, Path] | None = None
                ) -> tuple[Proc, int]:
    """NGINX in the foreground with deploy/nginx.conf rendered into ``work_dir``.

    ``tls=(certificate, key)`` turns the listen line into the TLS lines of the file's example.
    """
    port = free_port()
    listen = f"127.0.0.1:{port}"
    if tls is not None:
        listen += (f" ssl; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.2 TLSv1.3; "
                   "ssl_session_cache shared:hybridbot_tls:1m")
    work_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "temp"):
        (work_dir / sub).mkdir(exist_ok=True)
    upstreams = " ".join(f"server 127.0.0.1:{p} {upstream_options};" for p in upstream_ports)
    site = render_nginx(NGINX_TEMPLATE.read_text(encoding="utf-8"), HYBRIDBOT_LISTEN=listen,
                        HYBRIDBOT_SERVER_NAME="localhost", HYBRIDBOT_UPSTREAMS=upstreams,
                        HYBRIDBOT_WEB_ROOT=str(web_root), HYBRIDBOT_LOG_DIR=str(work_dir / "logs"))
    (work_dir / "hybridbot.conf").write_text(site, encoding="utf-8")
    temp = work_dir / "temp"
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read the repo and tmp paths
    (work_dir / "nginx.conf").write_text(
        f"{user}worker_processes 1;\n"
        f"error_log {work_dir / 'logs' / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    include /etc/nginx/mime.types;\n"
        "    default_type application/octet-stream;\n"
        f"    access_log off;\n"
        f"    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;\n"
        f"    include {work_dir / 'hybridbot.conf'};\n"
        "}\n", encoding="utf-8")
    proc = Proc.start(name, [NGINX, "-p", str(work_dir), "-c", str(work_dir / "nginx.conf"),
                             "-g", f"daemon off; pid {work_dir / 'nginx.pid'};"], work_dir / "logs")
    wait_for_port(port, proc)
    return proc, port


def start_redis(name: str, work_dir: Path) -> tuple[Proc, int]:
    """A private redis-server (append-only file in ``work_dir``, so a restart keeps the data)."""
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    proc = Proc.start(name, [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(work_dir),
                             "--daemonize", "no"], work_dir)
    wait_for_port(port, proc)
    return proc, port


@dataclass
class Stack:
    """App instances (gunicorn) behind one NGINX; ``ports[i]`` addresses instance i directly."""

    apps: list[Proc]
    ports: list[int]
    nginx: Proc
    nginx_port: int
    work_dir: Path
    metrics_dirs: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        for proc in [self.nginx, *self.apps]:
            proc.stop()

    def nginx_error_log(self) -> str:
        path = self.work_dir / "nginx" / "logs" / "hybridbot.error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


# -- HTTP -------------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: Any = None, *, timeout: float = 15.0,
            headers: Mapping[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers={**sent, **(headers or {})})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def chat(port: int, message: str, conversation_id: str | None = None, **kw: Any) -> Reply:
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return request(port, "POST", "/api/chat", body, **kw)


def sse_events(resp: http.client.HTTPResponse) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs from an open text/event-stream response, as they arrive."""
    name, data = "message", []
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def open_stream(port: int, message: str, conversation_id: str | None = None, *,
                timeout: float = 15.0) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    conn.request("POST", "/api/chat/stream", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    return conn, conn.getresponse()


def metric_samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` from the Prometheus text format, labels sorted by name
    (multiprocess output orders them differently), comments skipped."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
