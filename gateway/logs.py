"""Structured logs on stderr: one key=value line per event, readable in journald and greppable.

Secrets never reach here: URLs are logged through their ``redacted()`` form.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def setup_logging(level: str | None = None) -> None:
    name = (level or os.environ.get("FIREGRID_LOG", "info")).upper()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, name, logging.INFO),
                        format="%(message)s")
    # pymodbus logs every unanswered poll at ERROR; the poller reports a silent unit once,
    # as a no_response trouble, so its own lines would only bury the gateway's
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
