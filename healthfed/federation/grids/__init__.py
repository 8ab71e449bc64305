"""What a round travels over, and the one interface the aggregator uses on it.

Every aggregator routine (:func:`~healthfed.federation.server_app.collect`,
:func:`~healthfed.federation.secure_server.secure_collect`) talks to the nodes
through Flower's ``Grid`` and nothing else, and asks for replies with
``Grid.send_and_receive``. Each grid makes that call return as soon as the
replies are in:

* :class:`~healthfed.federation.grids.inprocess.InProcessGrid` — nodes in this
  process, each answered by its ClientApp in a thread;
* :class:`~healthfed.federation.grids.delegating.PollingGrid` — Flower's deployed
  Grid (inside the SuperLink's ServerApp), polled every 20-200 ms.

:class:`~healthfed.federation.grids.session.ServerAppSession` is the researcher's
end of one long deployed ServerApp run that serves many rounds.
"""
