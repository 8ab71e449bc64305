"""The node side of the federation: a Flower ``ClientApp``.

This module is imported from the hospital's *own installed* healthfed. It
finds its node from the SuperNode's node config (``healthfed-node``: path of
the node TOML, set by the hospital when it starts its SuperNode) and answers
``query`` messages with ``Node.handle``. Nothing in a message is executed:
the message names a registered computation and carries JSON parameters.

``train`` messages are Flower's SecAgg+ protocol (``secaggplus_mod``) for
secure-aggregation rounds (:mod:`healthfed.federation.secure_client`): the same
``Node.handle`` answers the request inside them, and only masked vectors leave.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from healthfed.errors import HealthfedError
from healthfed.federation.messages import NODE_CONFIG_KEY, decode_request, encode_reply
from healthfed.federation.secure_client import make_secure_train, policy_mod
from healthfed.node.runtime import Node, load_node


def node_from_context(context: Context) -> Node:
    """The node this SuperNode serves, from its ``healthfed-node`` config entry."""
    path = context.node_config.get(NODE_CONFIG_KEY)
    if not isinstance(path, str) or not path:
        raise HealthfedError(
            f"SuperNode has no node config {NODE_CONFIG_KEY!r}; start it with "
            f"--node-config '{NODE_CONFIG_KEY}=\"/path/to/node.toml\"'"
        )
    return load_node(path)


def make_client_app(resolve_node: Callable[[Context], Node] = node_from_context) -> ClientApp:
    """A ClientApp answering healthfed queries for the node ``resolve_node`` returns."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        node = resolve_node(context)
        try:
            request = decode_request(msg.content)
        except HealthfedError as exc:
            reply = {"site": node.name, "status": "refused", "reason": str(exc)}
        else:
            reply = node.handle(request)
        return Message(content=encode_reply(reply), reply_to=msg)

    # Secure aggregation: the site's protocol rules, then Flower's SecAgg+, then the node.
    app.train(mods=[policy_mod(resolve_node), secaggplus_mod])(make_secure_train(resolve_node))
    return app


app = make_client_app()
