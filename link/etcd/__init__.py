"""etcd v3 as link uses it: the port (what the election needs), its gRPC implementation with
deadlines and lease keep-alive, and defensive decoding of values read from etcd."""
