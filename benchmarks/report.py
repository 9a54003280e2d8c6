"""The benchmark's results for people: markdown tables (benchmarks/results/<name>.md) and the
generated blocks of BENCHMARKS.md (between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->`; what is around them is written by hand and kept).
"""
from __future__ import annotations

import re
from pathlib import Path

RUNTIME_NAMES = {"debian": "Debian 12's own libraries (as the .deb)", "venv": "the virtualenv's PyPI libraries"}


def _s(x: float | None, unit: str = "s") -> str:
    if x is None:
        return "–"
    if unit == "s":
        return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"
    return f"{x:.3g}"


def _triple(st: dict | None) -> str:
    if not st or not st.get("n"):
        return "–"
    return f"{_s(st['median'])} / {_s(st['p95'])} / {_s(st['max'])}"


def failover_table(data: dict) -> str:
    lines = ["| subject | scenario | n | VIP bound on another host (median / p95 / max) | client neighbour entry follows "
             "(median / p95 / max) | client's capture: first announcement (median) | no holder (median / max) | "
             "two holders (median / max) |",
             "|---|---|---:|---|---|---|---|---|"]
    for name, sub in data.get("subjects", {}).items():
        summ = sub.get("summary", {})
        for scenario in ("host-death", "orderly", "api", "rejoin"):
            sc = summ.get(scenario)
            if not sc:
                continue
            n = max((v.get("n", 0) for v in sc.values()), default=0)
            none = sc.get("none", {})
            double = sc.get("double", {})
            lines.append(
                f"| {name} | {scenario} | {n} | {_triple(sc.get('bound'))} | {_triple(sc.get('neigh'))} | "
                f"{_s(sc.get('garp', {}).get('median'))} | "
                f"{(_s(none.get('median')) + ' / ' + _s(none.get('max'))) if none.get('n') else '–'} | "
                f"{(_s(double.get('median')) + ' / ' + _s(double.get('max'))) if double.get('n') else '–'} |")
        if sub.get("errors"):
            lines.append(f"| {name} | errors | {len(sub['errors'])} | {'; '.join(sub['errors'][:2])} | | | | |")
    return "\n".join(lines)


def scale_rows(data: dict) -> list[tuple[str, dict, str]]:
    """(label, result, runtime) of every measured level: the fresh-lab counts, the ramp's
    levels, then the counts measured with agents on the other runtime's libraries."""
    agents = data.get("agents", "?")
    rows = [(n, c, agents) for n, c in data.get("counts", {}).items()]
    rows += [(f"{n} (ramp)", c, agents) for n, c in data.get("ramp", {}).get("levels", {}).items()]
    compare = data.get("compare") or {}
    rows += [(f"{n} ({compare['agents']})", c, compare["agents"]) for n, c in compare.get("counts", {}).items()]
    return rows


def scale_table(data: dict) -> str:
    lines = ["| VIPs per host (workers running) | converged: one holder each / APIs agree | worker USS median (PSS, RSS) | "
             "supervisor USS | worker idle CPU median (% of a core) | whole agent idle CPU per VIP | etcd CPU | "
             "machine busy (of 200 %) | etcd requests/s (RPCs / messages) | holder changes while idle | "
             "dead host: its VIPs moved (median / max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, c, _ in scale_rows(data):
        if "error" in c:
            lines.append(f"| {n} | error: {c['error']} | | | | | | | | | |")
            continue
        mem = c.get("memory_mib", {})
        w = mem.get("worker", {})
        sup = mem.get("supervisor", {})
        idle = c.get("idle", {})
        cpu = idle.get("cpu_pct_of_a_core", {})
        rps = idle.get("etcd_rps", {})
        dead = c.get("dead_host") or {}
        conv = (f"{c.get('converge_bound_s')} s / {c.get('converge_api_s')} s" if c.get("converged")
                else f"**no** within {c.get('converge_limit_s', 0):.0f} s "
                     f"({c.get('converge_reached') or c.get('api_agreement_reached')})")
        dead_txt = "–"
        if dead:
            ttm = dead.get("time_to_move", {})
            dead_txt = (f"{dead['moved']}/{dead['vips_held']}: {_s(ttm.get('median'))} / {_s(ttm.get('max'))}"
                        if ttm.get("n") else f"0/{dead['vips_held']}")
        lines.append(
            f"| {n} ({c.get('workers_running', '?')}) | {conv} | "
            f"{_mib(w, 'uss')} ({_mib(w, 'pss')}, {_mib(w, 'rss')}) | {_mib(sup, 'uss')} | "
            f"{_pct(cpu.get('per_worker', {}).get('median'))} | {_pct(cpu.get('per_vip_whole_agent'))} | "
            f"{_pct(cpu.get('etcd'))} | {_pct(cpu.get('machine_busy_all_cores'))} | "
            f"{rps.get('rpcs_handled', 0):.0f} / {rps.get('messages_received', 0):.0f} | "
            f"{idle.get('holder_changes_in_window', '–')} | {dead_txt} |")
    ramp = data.get("ramp")
    if ramp and "error" not in ramp:
        lines.append(f"\nRamp {ramp['start']}→{ramp['stop']} by {ramp['step']} VIPs per host: last good level "
                     f"{ramp.get('limit')}; stopped because: {ramp.get('stopped_because') or 'it reached the end'}.")
    elif ramp:
        lines.append(f"\nRamp: {ramp['error']}")
    return "\n".join(lines)


def _mib(block: dict, key: str) -> str:
    st = block.get(key, {}) if block else {}
    return f"{st['median']:.1f} MiB" if st.get("n") else "–"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} %"


def api_table(data: dict) -> str:
    if not data or not data.get("levels"):
        return ""
    lines = ["| VIPs on the host | all ACTIVATED after | `GET /ips` p50 / p99 / max | `POST /ips` p50 / p99 | "
             "`DELETE` p50 / p99 | `POST` + `DELETE` p50 / p99 / max |",
             "|---:|---|---|---|---|---|"]

    def ms(st: dict, keys=("median", "p99")) -> str:
        return " / ".join(f"{st[k]:.1f} ms" for k in keys) if st.get("n") else "–"

    for n, lv in data["levels"].items():
        lat = lv.get("latency_ms", {})
        fit = f"{lv['all_activated_after_s']} s" if lv.get("fits") else f"**no** ({lv.get('activated_reached')} ACTIVATED)"
        lines.append(f"| {n} | {fit} | {ms(lat.get('GET /ips', {}), ('median', 'p99', 'max'))} | "
                     f"{ms(lat.get('POST /ips', {}))} | {ms(lat.get('DELETE /ips/<id>', {}))} | "
                     f"{ms(lat.get('POST /ips + DELETE', {}), ('median', 'p99', 'max'))} |")
    lines.append(f"\n{data['get_requests']} `GET /ips` and {data['post_delete_pairs']} `POST`+`DELETE` pairs per level; "
                 f"largest count that fits: {data.get('largest_fit')}.")
    return "\n".join(lines)


def tables(results: dict) -> str:
    parts = [f"Results of `python -m benchmarks.run` ({results.get('profile')}), {results.get('when')}, "
             f"link {results['environment'].get('link')} ({results['environment'].get('git')}), "
             f"{results['environment'].get('cpus')} CPUs.\n"]
    if "failover" in results:
        parts.append("### Failover (link vs keepalived)\n\n" + failover_table(results["failover"]))
    if "scale" in results:
        agents = RUNTIME_NAMES.get(results["scale"].get("agents", ""), "?")
        parts.append(f"### Scale (3 hosts, link's default timers, agents on {agents})\n\n" + scale_table(results["scale"]))
    if "api" in results:
        parts.append("### API latency (real agent)\n\n" + api_table(results["api"]))
    return "\n\n".join(parts) + "\n"


def environment_block(results: dict) -> str:
    env = results.get("environment", {})
    libs = env.get("agent_libraries", {})
    lines = [f"Measured {results.get('when')} with `{results.get('profile')}` settings on link {env.get('link')} "
             f"({env.get('git')}): {env.get('cpus')} CPUs, {env.get('memory_gib')} GiB, kernel {env.get('kernel')}, "
             f"{env.get('etcd')}, {env.get('keepalived')}. Agents on {RUNTIME_NAMES.get(results.get('agents', ''), '?')} "
             "unless a row says otherwise.", "", "| agents on | Python | grpcio | protobuf | etcd3 | pyroute2 | scapy |",
             "|---|---|---|---|---|---|---|"]
    for name, info in libs.items():
        lines.append(f"| {name} | {info.get('python', '?')} | {info.get('grpcio', '?')} | {info.get('protobuf', '?')} "
                     f"({info.get('protobuf_implementation', '?')}) | {info.get('etcd3', '?')} | {info.get('pyroute2', '?')} | "
                     f"{info.get('scapy', '?')} |")
    took = results.get("durations_s", {})
    lines.append("")
    lines.append("Time taken: " + ", ".join(f"{k} {v / 60:.0f} min" for k, v in took.items()) + ".")
    return "\n".join(lines)


def plots_block(results: dict, doc_dir: Path, results_dir: Path) -> str:
    out = []
    for plot in results.get("plots", []):
        rel = (results_dir / plot).resolve().relative_to(doc_dir.resolve())
        out.append(f"![{Path(plot).stem}]({rel.as_posix()})")
    return "\n\n".join(out) or "(no plots: matplotlib is not installed)"


def update_document(doc: Path, results: dict, results_dir: Path) -> list[str]:
    """Rewrite the generated blocks of `doc` that these results have; the names rewritten."""
    blocks = {"environment": environment_block(results), "plots": plots_block(results, doc.parent, results_dir)}
    if "failover" in results:
        blocks["failover"] = failover_table(results["failover"])
    if "scale" in results:
        blocks["scale"] = scale_table(results["scale"])
    if "api" in results:
        blocks["api"] = api_table(results["api"])
    text = doc.read_text()
    done = []
    for name, body in blocks.items():
        text, found = replace_block(text, name, body)
        if found:
            done.append(name)
    doc.write_text(text)
    return done


def replace_block(text: str, name: str, body: str) -> tuple[str, bool]:
    """`text` with its generated block `name` holding `body`, and whether it had one."""
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(\n<!-- /generated:{name} -->)", re.S)
    if not pattern.search(text):
        return text, False
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text), True
