"""``python -m healthfed.federation.deploy node-exec ...`` (the node executor) and ``fab-hash``.

The local deployment and ``healthfed node serve`` start the executor with this
command line (:func:`~healthfed.federation.deploy.commands.node_exec_argv`);
``fab-hash`` prints the SHA-256 every installation must agree on.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from healthfed.federation.deploy.bundle import CLIENTAPP_REF, app_fab_hash
from healthfed.federation.deploy.executor import run_node_executor


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the executor until SIGTERM/SIGINT (or print the hash)."""
    parser = argparse.ArgumentParser(prog="python -m healthfed.federation.deploy")
    sub = parser.add_subparsers(dest="cmd", required=True)
    node = sub.add_parser("node-exec", help="serve a --isolation process SuperNode")
    node.add_argument("--runtime-api-address", required=True)
    node.add_argument("--root-certificates", default=None)
    node.add_argument("--superexec-auth-secret-file", default=None)
    node.add_argument("--poll-interval", type=float, default=0.1)
    node.add_argument(
        "--clientapp", default=CLIENTAPP_REF, help="module:attribute, imported locally"
    )
    sub.add_parser("fab-hash", help="print the SHA-256 of the healthfed app bundle")
    args = parser.parse_args(argv)
    if args.cmd == "fab-hash":
        print(app_fab_hash())
        return
    secret = None
    if args.superexec_auth_secret_file:
        secret = Path(args.superexec_auth_secret_file).read_bytes()
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_node_executor(
        args.runtime_api_address,
        args.root_certificates,
        secret,
        poll_interval=args.poll_interval,
        stop=stop,
        clientapp_ref=args.clientapp,
    )


if __name__ == "__main__":
    main()
