"""``importd api --host --port``: serve the HTTP API with uvicorn.

Without ``IMPORTD_API_TOKENS`` the API has no auth, so it binds only a loopback address unless
``--insecure-no-auth`` says otherwise (and then serves remote clients on purpose).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from dataclasses import replace

from importd.config import Settings

#: Exit code for a refused configuration (same as importd.cli.EXIT_CONFIG).
EXIT_CONFIG = 78
#: Seconds a stopping server waits for open responses. SSE streams never end on their own, so
#: without a bound a restart would wait for every browser to leave; cut off, browsers reconnect
#: with Last-Event-ID and lose nothing. (With plain uvicorn: ``--timeout-graceful-shutdown 10``.)
SHUTDOWN_GRACE_S = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve a non-loopback address although no IMPORTD_API_TOKENS are set")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.token_list and not is_loopback_host(args.host) and not args.insecure_no_auth:
        print(f"importd api: refusing to serve {args.host} without auth: set IMPORTD_API_TOKENS, "
              "bind 127.0.0.1, or pass --insecure-no-auth", file=sys.stderr)
        return EXIT_CONFIG
    if args.insecure_no_auth:
        settings = replace(settings, api_allow_remote_without_auth=True)
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=settings.log_level.lower(),
                proxy_headers=False, server_header=False, lifespan="on",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    return 0
