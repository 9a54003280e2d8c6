"""The wire: a small heartbeat the agents exchange over UDP, and what it decides while etcd does not answer.

codec.py (the datagram), peers.py (who is heard, and what they say), arbitration.py (the rules a
worker applies while it cannot reach etcd), settings.py (WIRE_* settings). Pure modules: the
supervisor holds the socket (link.supervisor.wire_link), a worker applies the rules
(link.worker.wire_policy).
"""
