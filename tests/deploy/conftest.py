"""Deploy-test fixtures: the minimal bot under real gunicorn instances behind real NGINX, on Redis.

Each test module builds its own stack (``make_stack``) and every process is stopped by a
finalizer, whatever the test did. Keys live under a random ``test-deploy-...:`` prefix in the
machine's Redis (127.0.0.1:6379) and are deleted afterwards; tests that stop Redis start their
own redis-server on a free port instead.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bot.app import Bot
from bot.redis_store import RedisStore
from bot.store import MemoryStore
from bot.testing import FakeLLM
from botdata import MINIMAL
from deploystack import MACHINE_REDIS, NGINX, REDIS_SERVER, Stack, start_gunicorn, start_nginx, wait_healthy
from gated_llm import GatedLLM


@pytest.fixture(scope="session")
def deploy_tools() -> None:
    """NGINX and redis-server must be installed (``.ci/run`` installs them with apt)."""
    missing = [path for path in (NGINX, REDIS_SERVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"deploy tests need {', '.join(missing)}: run .ci/run, or "
                    "apt-get install -y nginx redis-server")


@pytest.fixture(scope="session")
def warm_router_cache(router_cache: Path) -> Path:
    """Build the minimal bot's router once, so every gunicorn worker just loads it."""
    Bot.from_path(MINIMAL, store=MemoryStore(), llm=FakeLLM(), cache_dir=router_cache).close()
    return router_cache


@pytest.fixture(scope="session")
def llm() -> Iterator[GatedLLM]:
    server = GatedLLM()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix in the machine's Redis; its keys are deleted after the module."""
    prefix = f"test-deploy-{secrets.token_hex(6)}:"
    yield prefix
    cleaner = RedisStore(MACHINE_REDIS, prefix=prefix)
    cleaner.clear()
    cleaner.close()


def app_env(store_url: str, llm_url: str, cache: Path, **extra: str) -> dict[str, str]:
    """What each app instance gets: the minimal bot, the store, the fake LLM, limits off."""
    return {"BOT_DIR": str(MINIMAL), "BOT_STORE": store_url, "BOT_CACHE_DIR": str(cache),
            "BOT_RATE_LIMITS": "off", "BOT_CONVERSATION_RATE_LIMITS": "off", "BOT_PROXIES": "1",
            "OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "test", "BOT_LOG_LEVEL": "INFO", **extra}


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory: pytest.TempPathFactory, deploy_tools: None,
               warm_router_cache: Path) -> Iterator[Callable[..., Stack]]:
    """``make_stack(store_url, llm_url, instances=2, workers=1, threads=8)``: started, and stopped
    when the module ends."""
    stacks: list[Stack] = []

    def make(store_url: str, llm_url: str, *, instances: int = 2, workers: int = 1, threads: int = 8) -> Stack:
        work = tmp_path_factory.mktemp("stack")
        env = app_env(store_url, llm_url, warm_router_cache)
        apps, ports, metrics_dirs = [], [], []
        try:
            for n in range(instances):
                metrics_dir = work / f"metrics-{n}"
                proc, port = start_gunicorn(f"app{n}", "bot.wsgi:app", work, env, workers=workers, threads=threads,
                                            metrics_dir=metrics_dir, wait=False)
                apps.append(proc)
                ports.append(port)
                metrics_dirs.append(metrics_dir)
            for proc, port in zip(apps, ports):
                wait_healthy(port, proc)
            nginx, nginx_port = start_nginx("nginx", work / "nginx", ports)
        except BaseException:
            for proc in apps:
                proc.stop()
            raise
        stack = Stack(apps, ports, nginx, nginx_port, work, metrics_dirs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
