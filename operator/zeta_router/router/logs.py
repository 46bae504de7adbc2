"""Structured logging: one JSON object per line on stderr (or plain text for a terminal).

Fields passed through ``extra=`` become top-level keys, so a log line reads
``{"ts": ..., "level": "info", "event": "config_reloaded", "generation": 4, ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.getMessage()} {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def setup(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Lifecycle lines (listening with the bound port, the drain, stopped) are always written:
    # tools and people starting the router rely on the "listening" line, and a pod's drain
    # says when its traffic stopped.
    if root.level > logging.INFO:
        for name in ("zeta_router.router.server", "zeta_router.router.lifecycle"):
            logging.getLogger(name).setLevel(logging.INFO)
    # aiohttp's own access log would duplicate ours and log at a fixed format.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
