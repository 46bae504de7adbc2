"""`zeta-router drain`: drain this pod's router by hand, from inside the pod (``kubectl exec``).

It asks the router of this pod (``POST /drain`` on 127.0.0.1, its admin port) to stop being
ready and waits until its drain has ended (``zeta_router.router.lifecycle``), as the router
container's preStop hook (the kubelet's ``GET /drain/router``) does.
A router that is not running (nothing to drain) is not an error.
"""

from __future__ import annotations

import argparse
import http.client
import sys

from zeta_router.api.defaults import ROUTER_ADMIN_PORT
from zeta_router.api.lifecycle import DRAIN_PATH


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Tell the router on this pod to stop taking new requests (it stops being ready and "
        "closes connections after each response), then wait until its drain has ended, as the "
        "router container's preStop hook (the kubelet's GET /drain/router) does; SIGTERM then "
        "makes it finish what is in flight. Run it inside the pod (kubectl exec)."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=ROUTER_ADMIN_PORT,
        help="the router's admin port (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up waiting after this long (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.timeout)
    try:
        conn.request("POST", DRAIN_PATH)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
    except ConnectionRefusedError:
        print("zeta-router drain: no router listening; nothing to drain", file=sys.stderr)
        return 0
    except OSError as e:
        print(f"zeta-router drain: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if resp.status != 200:
        print(f"zeta-router drain: the router answered {resp.status}: {body}", file=sys.stderr)
        return 1
    return 0
