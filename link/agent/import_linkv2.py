"""`link-agent import-link`: this host's VIPs, from LinK v2's keys in etcd into link's store.

What LinK v2.0.7 keeps (read from its source, models/etcd_storage.go, models/ip.go,
models/healthcheck.go): one key per VIP of a host, `/link/hosts/<HOSTNAME>/<id>`, no lease,
whose value is its Go model as JSON, e.g. {"id": "vip-<uuid4>", "ip": "10.0.0.1/32",
"checks": [{"type": "TCP", "host": "10.0.0.2", "port": 5432}], "healthcheck_interval": 0}
("checks" left out when there is none, "status" never stored, "lease_id" in data written
before LinK 1.9). An interval of 0 means the agent's HEALTH_CHECK_INTERVAL, as in link.

Each VIP becomes a link VIP read through the store's own validation (`parse_add_body` and
the id rule), so what is written is what the agent will load. LinK's id is kept when it is a
vip-<uuid4> (LinK makes them so), else a new one is made. LinK ran only the checks whose type
is exactly "TCP" (healthcheck/checker.go) and dialled this host for an empty host: other
checks are left out and said so, an empty host becomes `localhost`. A VIP whose ip is in the
store already is left as it is: a second run imports nothing new and says so. Either every
new VIP is written or none (one bad LinK key: nothing is written, the key is named).

Only keys under `/link/hosts/<HOSTNAME>/` are read. LinK itself lists that prefix without
the final "/", so LinK on h1 also ran the VIPs of h10, h11...: those are named, not imported.
Locks, candidate keys and LinK's own keys are never written: the workers take LinK's locks
over in place when the agent starts (link.worker.election).

The agent's supervisor must hold no gRPC channel (it forks workers): at the agent's first
start the import runs in a forked child that exits when done (`import_at_first_start`).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TextIO

from link import logs
from link.agent import state_lock
from link.api.validation import ApiError, check_vip_id, parse_add_body
from link.checks import describe
from link.config import Config, ConfigError, load
from link.supervisor.reload import read_env_file
from link.supervisor.store import StoreError, VipStore, parse_stored
from link.vocabulary.vip import ETCD_DIRECTORY, VipSpec, lock_key
from link.etcd.port import EtcdError, EtcdPort, EtcdUnavailable, KeyInfo

logger = logging.getLogger(__name__)

EXIT_DONE, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
IMPORT_DEADLINE = 5.0  # seconds per etcd call from the command (LinK gave its calls 5 s)
FIRST_START_DEADLINE = 2.0  # at start-up: an unreachable etcd must not hold the agent long
LINKV2_TCP = "TCP"  # the only check type LinK v2 runs, compared as it does: exactly


class LinkV2KeyError(ValueError):
    """A LinK key this host's VIPs cannot be imported from; the message names the key."""


def linkv2_prefix(hostname: str) -> str:
    return f"{ETCD_DIRECTORY}/hosts/{hostname}/"


@dataclass
class Plan:
    """What an import would do: the new VIPs (with the notes to print), those already there."""

    prefix: str
    new: list[tuple[str, VipSpec, list[str]]] = field(default_factory=list)  # key, spec, notes
    present: list[tuple[str, VipSpec]] = field(default_factory=list)  # key, the store's VIP
    errors: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # keys of hosts whose name starts like ours


def _checks(raw: object, key: str) -> tuple[list[dict[str, Any]], list[str]]:
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        raise LinkV2KeyError(f"{key}: checks is not a list (LinK could not have read it either)")
    kept, notes = [], []
    for index, check in enumerate(raw):
        if not isinstance(check, dict):
            raise LinkV2KeyError(f"{key}: checks[{index}] is not an object")
        if check.get("type") != LINKV2_TCP:
            notes.append(f"checks[{index}] of type {json.dumps(check.get('type'))[:40]} left out: LinK v2 never ran it")
            continue
        host = check.get("host")
        if host == "":
            notes.append(f"checks[{index}]: empty host (LinK dialled this host) imported as localhost")
            host = "localhost"
        kept.append({"type": "TCP", "host": host, "port": check.get("port")})
    return kept, notes


def convert(key: str, value: str) -> tuple[VipSpec, list[str]]:
    """One LinK VIP as a link VIP (its id kept if valid, else "" for the caller to choose),
    plus the notes to print; LinkV2KeyError naming the key and the field."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        raise LinkV2KeyError(f"{key}: not JSON (LinK could not have read it either)") from None
    if not isinstance(data, dict):
        raise LinkV2KeyError(f"{key}: not a JSON object")
    checks, notes = _checks(data.get("checks"), key)
    body: dict[str, Any] = {"ip": data.get("ip"), "checks": checks}
    if data.get("healthcheck_interval") is not None:
        body["healthcheck_interval"] = data["healthcheck_interval"]
    try:
        parsed = parse_add_body(json.dumps(body).encode("utf-8"))
    except ApiError as exc:
        raise LinkV2KeyError(f"{key}: {exc}") from None
    if parsed["ip"] != data["ip"]:
        # The lock key is spelled from the ip: LinK agents still running for this VIP use theirs.
        notes.append(f"LinK spelled it {data['ip']!r}: its lock key differs from link's {lock_key(parsed['ip'])}")
    vip_id = data.get("id")
    try:
        check_vip_id(vip_id if isinstance(vip_id, str) else "")
    except ApiError:
        notes.append(f"LinK's id {json.dumps(vip_id)[:60]} is not a vip-<uuid4>: a new id was made")
        vip_id = ""
    return VipSpec.from_json({"id": vip_id, **parsed}), notes


def make_plan(keys: Mapping[str, KeyInfo], stored: list[VipSpec], hostname: str) -> Plan:
    """Sort what LinK's prefix (`/link/hosts/<HOSTNAME>`, as LinK lists it) holds."""
    plan = Plan(linkv2_prefix(hostname))
    ips = {spec.ip: spec for spec in stored}
    ids = {spec.id for spec in stored}
    for key in sorted(keys):
        if not key.startswith(plan.prefix):
            if key != plan.prefix[:-1]:  # that one is an older link's address key, not LinK's
                plan.others.append(key)
            continue
        try:
            spec, notes = convert(key, keys[key].value)
        except LinkV2KeyError as exc:
            plan.errors.append(str(exc))
            continue
        if spec.ip in ips:
            plan.present.append((key, ips[spec.ip]))
            continue
        if not spec.id or spec.id in ids:
            if spec.id:
                notes.append(f"LinK's id {spec.id} is taken in link's store: a new id was made")
            spec = VipSpec.from_json({**spec.to_json(), "id": f"vip-{uuid.uuid4()}"})
        ips[spec.ip] = spec
        ids.add(spec.id)
        plan.new.append((key, spec, notes))
    return plan


def read_linkv2(etcd: EtcdPort, hostname: str, attempts: int) -> dict[str, KeyInfo]:
    """LinK's keys for `hostname`, tried on up to `attempts` etcd members (EtcdError if none answers)."""
    last: EtcdError = EtcdUnavailable("no etcd member was tried")
    for _ in range(max(1, attempts)):
        try:
            return etcd.get_prefix(linkv2_prefix(hostname)[:-1])
        except EtcdUnavailable as exc:  # the adapter moves to the next member of ETCD_HOSTS
            last = exc
    raise last


def _grpc_etcd(config: Config, deadline: float) -> EtcdPort:
    from link.etcd.grpc_client import GrpcEtcd  # gRPC only in the process that runs the import

    return GrpcEtcd(config.etcd_endpoints, deadline, config.etcd_cacert, config.etcd_tls_cert, config.etcd_tls_key)


def _details(spec: VipSpec) -> str:
    checks = ", ".join(describe(check) for check in spec.checks) or "none"
    interval = f"{spec.healthcheck_interval:g}s" if spec.healthcheck_interval else "HEALTH_CHECK_INTERVAL"
    return f"checks: {checks}; every {interval}"


@dataclass
class Outcome:
    code: int
    lines: list[str]  # for stdout (what was imported, or why nothing was)
    errors: list[str]  # for stderr
    imported: list[VipSpec] = field(default_factory=list)


def import_vips(config: Config, store: VipStore, etcd_factory: Callable[[Config, float], EtcdPort],
                deadline: float, dry_run: bool = False) -> Outcome:
    """Read LinK's keys, write the new VIPs to the store (unless `dry_run`); never raises for
    etcd, store or bad keys: the outcome says it."""
    try:
        stored = store.load()
    except StoreError as exc:
        return Outcome(EXIT_USAGE, [], [str(exc)])
    try:
        etcd = etcd_factory(config, deadline)
        try:
            keys = read_linkv2(etcd, config.hostname, len(config.etcd_endpoints))
        finally:
            etcd.close()
    except (EtcdError, OSError, ValueError) as exc:
        return Outcome(EXIT_FAILED, [], [f"etcd ({', '.join(map(str, config.etcd_endpoints))}) did not answer: {exc}"])
    plan = make_plan(keys, stored, config.hostname)
    lines = []
    if plan.others:
        hosts = sorted({key[len(ETCD_DIRECTORY) + len("/hosts/"):].split("/")[0] for key in plan.others})
        lines.append(f"left out: {len(plan.others)} key(s) of {', '.join(hosts)[:200]}, other hosts whose name "
                     f"starts with {config.hostname} (LinK v2 on {config.hostname} listed them too, a LinK bug)")
    if plan.errors:
        return Outcome(EXIT_FAILED, lines, [*plan.errors, f"nothing imported: fix or delete the key(s) above "
                                                           f"(etcdctl get --prefix {plan.prefix}), then run it again"])
    for key, spec in plan.present:
        lines.append(f"{spec.ip} (from {key}) is already in {store.path} as {spec.id}: left as it is")
    if not plan.new:
        if plan.present:
            lines.append(f"nothing new to import: the {len(plan.present)} VIP(s) under {plan.prefix} are already in link's store")
        else:
            lines.append(f"no LinK v2 VIP for {config.hostname} in etcd (no key under {plan.prefix}): nothing to import")
        return Outcome(EXIT_DONE, lines, [])
    merged = stored + [spec for _, spec, _ in plan.new]
    if len(merged) > config.max_vips:
        return Outcome(EXIT_USAGE, lines, [f"nothing imported: link's store would hold {len(merged)} VIPs, more than "
                                           f"MAX_VIPS={config.max_vips} (the agent would not start): raise MAX_VIPS"])
    try:
        # The store's own reading of the result: what is written is what the agent loads.
        parse_stored({"version": 1, "vips": [spec.to_json() for spec in merged]})
    except ValueError as exc:
        return Outcome(EXIT_FAILED, lines, [f"nothing imported: {exc}"])
    if not dry_run:
        try:
            store.save(merged)
            state_lock.match_owner(store.path, store.state_dir)
        except (StoreError, OSError) as exc:
            return Outcome(EXIT_FAILED, lines, [f"nothing imported: {exc}"])
    verb = "would import" if dry_run else "imported"
    for key, spec, notes in plan.new:
        lines.append(f"{verb} {spec.ip} as {spec.id} (from {key}); {_details(spec)}" + "".join(f"; {n}" for n in notes))
    where = "(dry run: nothing written)" if dry_run else f"into {store.path}"
    lines.append(f"{len(plan.new)} VIP(s) {verb} from LinK v2's {plan.prefix} {where}; {len(plan.present)} already there")
    return Outcome(EXIT_DONE, lines, [], [spec for _, spec, _ in plan.new])


def run(env_file: str | None = None, dry_run: bool = False, env: Mapping[str, str] | None = None, *,
        out: TextIO | None = None, err: TextIO | None = None,
        etcd_factory: Callable[[Config, float], EtcdPort] = _grpc_etcd) -> int:
    """The command: its lines on stdout, errors on stderr (one line each); the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    environment = dict(os.environ if env is None else env)
    try:
        if env_file:
            try:
                environment.update(read_env_file(env_file))
            except OSError as exc:
                raise ConfigError(f"cannot read {env_file}: {exc.strerror}") from None
        # INTERFACE is the agent's business, not the import's: any value passes here.
        config = load({**environment, "INTERFACE": environment.get("INTERFACE") or "-"}, check_interface=False)
    except ConfigError as exc:
        print(f"link-agent import-link: {exc}", file=err)
        return EXIT_USAGE
    store = VipStore(config.state_dir)
    lock_fd = None
    try:
        if not dry_run:
            store.prepare()
            lock_fd = state_lock.hold(config.state_dir, "link-agent import-link")
    except (StoreError, state_lock.StateDirBusy) as exc:
        print(f"link-agent import-link: {exc}", file=err)
        return EXIT_USAGE
    except OSError as exc:
        print(f"link-agent import-link: cannot lock {state_lock.lock_path(config.state_dir)}: {exc.strerror}", file=err)
        return EXIT_USAGE
    try:
        outcome = import_vips(config, store, etcd_factory, IMPORT_DEADLINE, dry_run)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    for line in outcome.lines:
        print(f"link-agent: {line}", file=out)
    for line in outcome.errors:
        print(f"link-agent import-link: {line}", file=err)
    return outcome.code


def _first_start(config: Config, store: VipStore) -> int:
    """In the child: import, and say it in one log line."""
    outcome = import_vips(config, store, _grpc_etcd, FIRST_START_DEADLINE)
    prefix = linkv2_prefix(config.hostname)
    if outcome.imported:
        logger.info("first start: imported %d VIP(s) from LinK v2's keys under %s: %s", len(outcome.imported), prefix,
                    ", ".join(f"{spec.ip} ({spec.id})" for spec in outcome.imported))
    elif outcome.errors and outcome.errors[0].startswith("etcd"):
        logger.warning("first start: could not look for LinK v2's VIPs under %s: %s; run `link-agent import-link` "
                       "once etcd answers", prefix, outcome.errors[0])
    elif outcome.errors:
        logger.error("first start: LinK v2's VIPs under %s were not imported: %s", prefix, " / ".join(outcome.errors))
    else:
        logger.debug("first start: %s", " / ".join(outcome.lines))
    return outcome.code


def import_at_first_start(config: Config, store: VipStore, timeout: float | None = None) -> None:
    """When STATE_DIR holds no VIP file yet (never written: a VIP list emptied through the API
    is a file), import LinK v2's VIPs for this host. Called by the supervisor before it starts
    anything; the import runs in a forked child, which alone opens a gRPC channel, and is waited
    for `timeout` seconds at most (then killed: the agent starts without it, the log says so)."""
    if os.path.exists(store.path):
        return
    if timeout is None:
        timeout = 5.0 + FIRST_START_DEADLINE * len(config.etcd_endpoints)
    pid = os.fork()
    if pid == 0:  # child
        code = EXIT_FAILED
        try:
            code = _first_start(config, store)
        except BaseException:
            logger.exception("first start: the import of LinK v2's VIPs failed")
        finally:
            logs.flush()
            os._exit(code)
    step = 0.05
    for _ in range(int(timeout / step) + 1):  # bounded: at most `timeout` seconds
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(step)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    logger.warning("first start: the import of LinK v2's VIPs took over %.0fs and was stopped; the agent starts "
                   "without it (run `link-agent import-link` by hand)", timeout)
