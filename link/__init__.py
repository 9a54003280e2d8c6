"""link: several Linux hosts share virtual IPs, elected through etcd (successor of Scalingo's LinK)."""

__version__ = "0.1.0"
