"""A test lab for link: hosts as network namespaces on a private bridge, etcd, agents, a client."""
from .lab import (AGENT_PORT, BRIDGE_IP, CLIENT_IP, ETCD_URL, IFACE, LAB_AGENT_ENV, Agent, Etcd, Host, Lab,
                  agent_command, lock_key, sweep_stale)
from .netns import usable
from .pcap import Arp, Capture, quiet_for, read_arp
from .waiting import GiveUp, WaitTimeout, timed_wait, wait_until

__all__ = [
    "AGENT_PORT", "BRIDGE_IP", "CLIENT_IP", "ETCD_URL", "IFACE", "LAB_AGENT_ENV", "Agent", "Arp", "Capture",
    "Etcd", "GiveUp", "Host", "Lab", "WaitTimeout", "agent_command", "lock_key", "quiet_for", "read_arp",
    "sweep_stale", "timed_wait", "usable", "wait_until",
]
