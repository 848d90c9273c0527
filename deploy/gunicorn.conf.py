"""gunicorn settings for hybridbot: ``gunicorn -c deploy/gunicorn.conf.py bot.wsgi:app``.

Every value can be set from the environment (systemd ``EnvironmentFile=``, docker ``env``):

  BIND                      address(es) to listen on, comma-separated    127.0.0.1:8000
  GUNICORN_WORKERS          worker processes                              2
  GUNICORN_THREADS          threads per worker = concurrent requests      16
                            (an SSE reply holds one thread while it streams)
  GUNICORN_TIMEOUT          seconds a worker may stay silent before the   30
                            master restarts it (a heartbeat for gthread,
                            not a limit on request length)
  GUNICORN_GRACEFUL_TIMEOUT seconds to finish in-flight replies on        30
                            stop/reload before they are cut
  GUNICORN_KEEPALIVE        seconds an idle keep-alive connection stays   5
                            open (longer than NGINX's upstream
                            keepalive_timeout 4s, so NGINX closes first)
  GUNICORN_MAX_REQUESTS     restart a worker after this many requests     0 (never)
  GUNICORN_FORWARDED_ALLOW_IPS  proxies trusted for X-Forwarded-*         127.0.0.1,::1
  GUNICORN_CONTROL_SOCKET   path of gunicorn's control socket (gunicornc) none (disabled)
  PROMETHEUS_MULTIPROC_DIR  where workers write their metrics; wiped at   a fresh temporary
                            start. Needed with more than one worker.      folder when workers > 1
  BOT_LOG_LEVEL             level of the app's and gunicorn's logs        INFO
  BOT_LOG_FORMAT            json (one object per line) or text            json
  GUNICORN_ACCESS_LOG       1 to log every request (JSON), 0 to not       1

Capacity: workers x threads requests at once; the 2-core default (2 x 16) serves 32
simultaneous streams. Prefer threads over workers: each worker loads its own copy of the
router. See docs/deploy.md.
"""
import glob
import os
import shutil
import tempfile

_env = os.environ


def _int(name: str, default: int) -> int:
    raw = _env.get(name, "").strip()
    return int(raw) if raw else default


bind = [b.strip() for b in _env.get("BIND", "127.0.0.1:8000").split(",") if b.strip()]
workers = _int("GUNICORN_WORKERS", 2)
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 16)
# Connections one worker takes on (idle keep-alives included). A gthread worker accepts while it has
# fewer than this, busy threads or not, so with a large value one worker can grab a burst and
# queue it while another sits idle (bench/RESULTS.md): keep it just above `threads`.
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", threads + 4)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", max_requests // 10)
forwarded_allow_ips = _env.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proc_name = _env.get("GUNICORN_PROC_NAME", "hybridbot")
if _env.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = _env["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True  # the default path is shared, so two instances on one host would collide

# -- Prometheus: one folder of value files shared by the workers ----------------------------------
# prometheus_client decides at import whether it runs in multiprocess mode, from this variable;
# this file runs before the app (or anything else) imports it, in the master and so in every worker.
_own_metrics_dir = None
if not _env.get("PROMETHEUS_MULTIPROC_DIR") and workers > 1:
    _own_metrics_dir = tempfile.mkdtemp(prefix="hybridbot-metrics-")
    _env["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def on_starting(server):
    """Start from zero: stale files of a previous run would add old counts (prometheus_client docs)."""
    folder = _env.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for path in glob.glob(os.path.join(folder, "*.db")):
            os.remove(path)
        server.log.info("Prometheus multiprocess metrics in %s", folder)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (bot_active_streams); its counters stay in the sums."""
    if _env.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


# -- logs: JSON lines on stderr (journald / docker collect them) ----------------------------------
_level = _env.get("BOT_LOG_LEVEL", "INFO").upper()
_json = _env.get("BOT_LOG_FORMAT", "json").strip().lower() != "text"
_access = _env.get("GUNICORN_ACCESS_LOG", "1").strip().lower() not in ("0", "false", "no", "off")
loglevel = _level.lower()
accesslog = None  # access records go to the "gunicorn.access" logger configured below
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "bot.metrics.JsonFormatter"},
        "text": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json" if _json else "text",
                   "stream": "ext://sys.stderr"},
    },
    "root": {"level": _level, "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": _level, "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO" if _access else "WARNING", "handlers": [], "propagate": True},
    },
}
