"""``python -m healthfed.federation.deploy supernode|node-exec|fab-hash ...``.

* ``supernode`` — healthfed's SuperNode (:mod:`~healthfed.federation.deploy.supernode`):
  ``flower-supernode``'s flags plus healthfed's poll and worker options;
* ``superlink`` — healthfed's SuperLink
  (:mod:`~healthfed.federation.deploy.superlink_app`): ``flower-superlink``'s flags;
* ``node-exec`` — the node executor (:mod:`~healthfed.federation.deploy.executor`),
  started by the local deployment and ``healthfed node serve`` next to a stock
  SuperNode (:func:`~healthfed.federation.deploy.commands.node_exec_argv`) and by
  healthfed's SuperNode as its data worker;
* ``fab-hash`` prints the SHA-256 every installation must agree on.

Each branch imports only what it needs: the SuperNode process stays small.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from healthfed.federation.deploy.bundle import CLIENTAPP_REF, app_fab_hash


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the chosen part until SIGTERM/SIGINT."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["supernode"]:
        from healthfed.federation.deploy.memory_store import without_sql_object_store

        without_sql_object_store()  # before flwr is imported: ~30 MB less for an idle node
        from healthfed.federation.deploy.supernode import main as supernode_main

        supernode_main(args_in[1:])
        return
    if args_in[:1] == ["superlink"]:
        from healthfed.federation.deploy.superlink_app import main as superlink_main

        superlink_main(args_in[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m healthfed.federation.deploy")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("supernode", help="healthfed's SuperNode (flower-supernode's flags and more)")
    sub.add_parser("superlink", help="healthfed's SuperLink (flower-superlink's flags)")
    node = sub.add_parser("node-exec", help="serve a --isolation process SuperNode")
    node.add_argument("--runtime-api-address", required=True)
    node.add_argument("--root-certificates", default=None)
    node.add_argument("--superexec-auth-secret-file", default=None)
    node.add_argument("--poll-interval", type=float, default=0.2)
    node.add_argument("--idle-exit", type=float, default=None, help="exit after S idle seconds")
    node.add_argument(
        "--wake-stdin", action="store_true", help="a byte on stdin means a task is waiting"
    )
    node.add_argument(
        "--clientapp", default=CLIENTAPP_REF, help="module:attribute, imported locally"
    )
    node.add_argument("--done-fd", type=int, default=None, help="write a byte here after each task")
    node.add_argument(
        "--runtime-fd",
        type=int,
        default=None,
        help="a socket from the SuperNode: ask the Runtime API over it, not over HTTPS",
    )
    node.add_argument(
        "--node-file",
        default=None,
        help="the node TOML: open and check its datasets before accepting tasks",
    )
    sub.add_parser("fab-hash", help="print the SHA-256 of the healthfed app bundle")
    args = parser.parse_args(args_in)
    if args.cmd == "fab-hash":
        print(app_fab_hash())
        return
    from healthfed.federation.deploy.executor import run_node_executor

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
        idle_exit=args.idle_exit,
        wake_fd=sys.stdin.fileno() if args.wake_stdin else None,
        done_fd=args.done_fd,
        runtime_fd=args.runtime_fd,
        node_file=args.node_file,
    )


if __name__ == "__main__":
    main()
