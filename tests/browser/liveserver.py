"""Serve a WSGI app on 127.0.0.1 and a free port for the length of a with-block."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from werkzeug.serving import make_server


@contextmanager
def serving(app: Any, name: str = "browser-live-server") -> Iterator[str]:
    """Yield the base URL of ``app`` served by a threaded Werkzeug server; stop it afterwards."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
