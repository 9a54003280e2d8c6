"""The operating system's side: netlink (binding addresses), rtnetlink probes, gratuitous
ARP / unsolicited neighbour advertisements."""
