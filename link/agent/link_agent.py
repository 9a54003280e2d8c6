"""`link-agent`: the agent's entry point (the supervisor process)."""
from __future__ import annotations

import argparse
import gc
import logging
import sys

from link import __version__, logs
from link.config import ConfigError, load, origin
from link.scripts import warn_stored_programs
from link.vocabulary import binder_kinds
from link.vocabulary.vip import VipSpec

logger = logging.getLogger(__name__)

EPILOG = """\
configuration is read from environment variables (as LinK):
  INTERFACE (required)        interface where VIPs are bound, e.g. eth1
  HOSTNAME                    name of this host in etcd (default: the machine's hostname)
  ETCD_HOSTS                  comma-separated etcd URLs (default http://127.0.0.1:2379)
  ETCD_TLS_CERT, ETCD_TLS_KEY, ETCD_CACERT   client certificate, key and CA for https:// etcd
  PORT                        HTTP API port (default 1313)
  BIND_ADDRESS                comma-separated addresses the API listens on (default
                              127.0.0.1,::1; 0.0.0.0 when PASSWORD is set)
  USER, PASSWORD              HTTP basic auth, on when PASSWORD is set
  ALLOW_UNAUTHENTICATED_API   true: serve a non-loopback BIND_ADDRESS without PASSWORD
  SCRIPTS_DIR                 the only directory programs may be run from (default /etc/link/scripts)
  SCRIPT_USER                 user[:group] programs run as (default nobody as root, else the agent's user)
  WEBHOOK_ALLOWED_URLS        comma-separated origins (https://host:port) webhook binders may call
  MAX_VIPS                    most VIPs this agent takes (default 100)
  KEEPALIVE_INTERVAL          lease of a VIP: a dead host's VIP moves within it (default 2s)
  KEEPALIVE_RETRY             etcd failures in a row before the `fault` event (default 3)
  ARP_GRATUITOUS_COUNT        announcements when a VIP is bound (default 3)
  ARP_GRATUITOUS_INTERVAL     time between two announcements (default 1s)
  STATE_DIR                   where the VIP list is kept (default /var/lib/link)
  LOGGER_LEVEL                debug, info, warn or error (default info)
  LOGGER_TYPE                 text (default) or json: one JSON object per line
  METRICS_AUTH                false: GET /metrics without basic auth (default: as the API)
  HEALTH_CHECK_INTERVAL       time between two rounds of a VIP's health checks (default 1s)
  HEALTH_CHECK_TIMEOUT        longest a single check may take (default 1s)
  FAIL_COUNT_BEFORE_FAILOVER  failed rounds in a row before the VIP fails over (default 3)
  TRACK_INTERFACES            comma-separated interfaces whose carrier the VIPs need, besides
                              INTERFACE (none: track nothing, not even INTERFACE)
  FAULT_POLICY                when etcd is unreachable: arbitrate (default: the hosts agree on
                              one holder over the wire), activate (LinK), keep or release
  PRIORITY                    0-255, lowest wins (default 10); PREEMPT (default true),
  PREEMPT_DELAY               how long a better host waits before taking over (default 3s)
  WIRE_PORT                   UDP port of the heartbeat between agents (default 1314)
  WIRE_INTERVAL               time between two heartbeats (default 800ms); a peer silent for 3 is dead
  WIRE_PEERS                  static peers, comma-separated address[:port] (default: from etcd)
  WIRE_KEY_FILE               shared HMAC-SHA256 key (a file only root reads); none: unsigned
  WIRE_ADDRESS                the address peers send heartbeats to (default: INTERFACE's first)

signals:
  SIGTERM, SIGINT  hand every VIP over (unbind, release the lock), then exit
  SIGUSR1/SIGUSR2  priority -1 (promote) / +1 (demote)
  SIGHUP           reread LOGGER_LEVEL and PRIORITY from --env-file

example:
  INTERFACE=eth1 HOSTNAME=h1 ETCD_HOSTS=http://198.51.100.1:2379 link-agent
  curl -X POST -d '{"ip": "198.51.100.50/32"}' localhost:1313/ips

one-shot modes (as exoip's -A and -D; no etcd, no API, no state dir: only INTERFACE,
ARP_GRATUITOUS_COUNT and ARP_GRATUITOUS_INTERVAL are read):
  link-agent associate IP     bind IP on INTERFACE, announce it (gratuitous ARP / NA), exit
  link-agent dissociate IP    unbind IP from INTERFACE, exit
  exit status: 0 done (already bound/unbound is said), 1 failed (e.g. netlink refused),
  2 usage or configuration error (bad IP, INTERFACE missing)
  e.g. INTERFACE=eth1 link-agent associate 198.51.100.50/32

coming from LinK v2 (reads the agent's variables: HOSTNAME, ETCD_*, STATE_DIR, MAX_VIPS):
  link-agent import-link [--dry-run] [--env-file PATH]
                              add this host's VIPs kept by LinK v2 in etcd (/link/hosts/HOSTNAME/)
                              to STATE_DIR; done by the agent itself at its first start
  exit status: 0 done (nothing new to import included), 1 etcd failed or a LinK key is bad (nothing
  written), 2 usage or configuration error (an agent runs on STATE_DIR, MAX_VIPS...)
"""


def _preload() -> None:
    """Import what workers use before forking any: each child then shares these pages
    instead of importing them again (scapy alone is ~35 MiB and 0.2 s)."""
    import grpc  # noqa: F401  (importing grpc before fork is safe; a channel is not)
    import etcd3.etcdrpc  # noqa: F401
    import scapy.layers.inet6  # noqa: F401
    import scapy.layers.l2  # noqa: F401
    import link.worker.entry  # noqa: F401  (the worker and its real etcd adapter)
    import link.api.server  # noqa: F401


def _warn_webhooks_not_allowed(stored: list[VipSpec], allowed: tuple[str, ...]) -> None:
    """A kept VIP whose webhook is no longer on WEBHOOK_ALLOWED_URLS stays (deleting it is the
    user's call), but its worker will not call the URL: say so once, at start."""
    for spec in stored:
        for _, url in binder_kinds.urls_of(spec.to_json()):
            if origin(url) not in allowed:
                logger.warning("%s (%s): its %s %s is not on WEBHOOK_ALLOWED_URLS: it will not be called",
                               spec.ip, spec.id, spec.binder, origin(url))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="link-agent",
        description="Share virtual IPs between hosts, elected through etcd (one worker process per VIP).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"link {__version__}")
    parser.add_argument("--env-file", metavar="PATH",
                        help="the file the environment came from (e.g. /etc/default/link): SIGHUP rereads "
                             "LOGGER_LEVEL and PRIORITY from it")
    # Without a mode the agent runs; a mode does one change and exits (link.agent.oneshot).
    modes = parser.add_subparsers(dest="mode", metavar="[associate IP | dissociate IP | import-link]")
    for mode, what in (("associate", "bind IP on INTERFACE, announce it, exit"),
                       ("dissociate", "unbind IP from INTERFACE, exit")):
        sub = modes.add_parser(mode, help=what, description=f"{what} (no etcd, no API: only INTERFACE, "
                               "ARP_GRATUITOUS_COUNT and ARP_GRATUITOUS_INTERVAL are read). Exit status: 0 done, "
                               "1 failed, 2 usage or configuration error.")
        sub.add_argument("ip", metavar="IP", help="the address, e.g. 198.51.100.50/32 (a bare address means /32 or /128)")
    importer = modes.add_parser("import-link", help="add this host's LinK v2 VIPs (etcd) to STATE_DIR",
                                description="Add the VIPs LinK v2 keeps for HOSTNAME in etcd (/link/hosts/HOSTNAME/) "
                                "to link's STATE_DIR, once each; never touches the locks. Not while an agent runs on "
                                "STATE_DIR. Exit status: 0 done, 1 etcd failed or a LinK key is bad (nothing written), "
                                "2 usage or configuration error.")
    importer.add_argument("--dry-run", action="store_true", help="say what would be imported, write nothing")
    importer.add_argument("--env-file", dest="import_env_file", metavar="PATH",
                          help="read the variables from this file too (e.g. /etc/default/link)")
    args = parser.parse_args(argv)
    if args.mode == "import-link":
        from link.agent import import_linkv2 as linkv2_import

        return linkv2_import.run(args.import_env_file or args.env_file, args.dry_run)
    if args.mode is not None:
        from link.agent import oneshot

        return oneshot.run(args.mode, args.ip)
    try:
        config = load()
    except ConfigError as exc:
        print(f"link-agent: {exc}", file=sys.stderr)
        return 2
    # No writer thread here: the supervisor forks, so it writes without blocking instead.
    logs.setup(config.logger_level, "supervisor", fmt=config.logger_type, threaded=False)
    if config.api_exposed and not config.auth_enabled:
        logger.warning("the API listens on %s without a password (ALLOW_UNAUTHENTICATED_API=true): anyone who "
                       "reaches port %d can add, move and delete this host's VIPs", config.bind_address, config.port)

    from link.agent import state_lock
    from link.supervisor.arbiter import Arbiter
    from link.supervisor.ops import RealOps
    from link.supervisor.store import StoreError, VipStore
    from link.supervisor.wire_link import WireLink

    store = VipStore(config.state_dir)
    try:
        store.prepare()
        # Held (by this process only, not its children) until the agent exits.
        state_lock.hold(config.state_dir, "link-agent")
    except (StoreError, state_lock.StateDirBusy) as exc:
        print(f"link-agent: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"link-agent: cannot lock {state_lock.lock_path(config.state_dir)}: {exc.strerror}", file=sys.stderr)
        return 2
    from link.agent.import_linkv2 import import_at_first_start

    import_at_first_start(config, store)
    try:
        stored = store.load()
    except StoreError as exc:
        print(f"link-agent: {exc}", file=sys.stderr)
        return 2
    if len(stored) > config.max_vips:
        # Never a silent cut: which VIPs would go is not ours to choose.
        print(f"link-agent: {store.path} lists {len(stored)} VIPs, more than MAX_VIPS={config.max_vips}: "
              "raise MAX_VIPS or delete VIPs from the file", file=sys.stderr)
        return 2
    _warn_webhooks_not_allowed(stored, config.webhook_allowed_urls)
    warn_stored_programs(stored, config)  # refused programs of kept VIPs, said before their first run
    _preload()
    # Move everything imported so far out of the garbage collector's reach: a collection in a
    # child would otherwise write to every object's header and copy the pages we share.
    gc.freeze()
    arbiter: Arbiter
    ops = RealOps(config, lambda: arbiter.open_fds(), __version__)
    try:
        # Before any fork: a port in use is one line at start, not a supervisor that cannot hear its peers.
        wire = WireLink(config, lambda record, message: arbiter.send(record, message))
    except OSError as exc:
        print(f"link-agent: cannot listen for heartbeats on UDP port {config.wire_port} (WIRE_PORT): "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    arbiter = Arbiter(config, store, ops, env_file=args.env_file, open_wire=lambda send: wire)
    return arbiter.run()


if __name__ == "__main__":
    sys.exit(main())
