"""The etcd-outage benchmark's results for people (benchmarks/etcd_outage.py): a markdown table
(<output>.md), a plot (<output>.png, matplotlib) and BENCHMARKS.md's `etcd_outage` block."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .report import RUNTIME_NAMES, _s, replace_block

SCENARIO_TITLES = {
    "etcd-down": "etcd down, every host up",
    "holder-dies": "the holder dies during the outage",
    "host-cut": "the holder alone cut from etcd",
}


def _pair(st: dict | None, unit: str = "s") -> str:
    if not st or not st.get("n"):
        return "–"
    if unit == "%":
        return f"{st['median']:.0f} % / {st['min']:.0f} %"
    return f"{_s(st['median'])} / {_s(st['max'])}"


def table(data: dict[str, Any]) -> str:
    lines = ["| subject | scenario | n | two holders (median / max) | no holder (median / max) | client's entry on "
             "a host that does not hold it (median / max) | client's probes answered (median / min) | longest "
             "without an answer (median / max) | another host bound after the death (median / max) |",
             "|---|---|---:|---|---|---|---|---|---|"]
    for name, sub in data.get("subjects", {}).items():
        for kind in SCENARIO_TITLES:
            sc = sub.get("summary", {}).get(kind)
            if not sc:
                continue
            never = sc.get("never_bound_elsewhere", {}).get("n", 0)
            bound = _pair(sc.get("bound_elsewhere")) if kind == "holder-dies" else ""
            if never:
                bound = f"{bound}; **never** in {never} run(s)" if bound != "–" else f"**never** ({never} run(s))"
            after = sc.get("none_after", {})
            none = _pair(sc.get("none")) + (f" (after the fault: {_pair(after)})" if after.get("max") else "")
            lines.append(f"| {name} | {kind} | {sc.get('double', {}).get('n', 0)} | {_pair(sc.get('double'))} | "
                         f"{none} | {_pair(sc.get('client_elsewhere'))} | "
                         f"{_pair(sc.get('answered_pct'), '%')} | {_pair(sc.get('unanswered_longest'))} | {bound} |")
        if sub.get("errors"):
            lines.append(f"| {name} | errors | {len(sub['errors'])} | {'; '.join(sub['errors'][:2])} | | | | | |")
    return "\n".join(lines)


def block(results: dict[str, Any], plot: str | None) -> str:
    env = results.get("environment", {})
    data = results.get("outage", {})
    head = (f"Measured {results.get('when')} on link {env.get('link')} ({env.get('git')}): {env.get('cpus')} CPUs, "
            f"{env.get('memory_gib')} GiB, kernel {env.get('kernel')}, {env.get('etcd')}, {env.get('keepalived')}; "
            f"agents on {RUNTIME_NAMES.get(results.get('agents', ''), '?')}. {data.get('runs')} run(s) of each scenario, "
            f"etcd out (or the host cut) {data.get('outage_s'):g} s, measured until {data.get('after_s'):g} s after; "
            f"took {results.get('duration_s', 0) / 60:.0f} min.")
    stamps = {n: sub.get("setup", {}).get("measured") or {} for n, sub in data.get("subjects", {}).items()}
    if len({(v.get("when"), v.get("git")) for v in stamps.values()}) > 1:
        head += " Subjects measured apart: " + "; ".join(f"{n} at {v.get('when')} ({v.get('git')})"
                                                          for n, v in stamps.items()) + "."
    parts = [head, "", table(data)]
    if plot:
        parts += ["", f"![etcd outage]({plot})"]
    return "\n".join(parts)


def plot(data: dict[str, Any], path: Path, log: Callable[[str], None]) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install '.[bench]'): no plot")
        return False
    subs = data.get("subjects", {})
    kinds = [k for k in SCENARIO_TITLES if any(k in s.get("summary", {}) for s in subs.values())]
    if not subs or not kinds:
        return False
    metrics = (("double", "two holders"), ("none", "no holder"), ("unanswered_longest", "client: longest without answer"))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 5), squeeze=False)
    width = 0.8 / len(metrics)
    for ax, kind in zip(axes[0], kinds):
        names = list(subs)
        for m, (key, label) in enumerate(metrics):
            med, lo, hi = [], [], []
            for name in names:
                st = subs[name].get("summary", {}).get(kind, {}).get(key, {})
                value = st.get("median", 0.0) if st.get("n") else 0.0
                med.append(value)
                lo.append(value - (st.get("min", value) if st.get("n") else value))
                hi.append((st.get("max", value) if st.get("n") else value) - value)
            xs = [i + (m - (len(metrics) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, med, width, yerr=[lo, hi], capsize=3, label=label)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace(" (", "\n(") for n in names], fontsize=8)
        ax.set_ylabel("seconds (median, whiskers min–max)")
        ax.set_title(SCENARIO_TITLES[kind], fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"etcd outage of {data.get('outage_s'):g} s: link's fault policies vs keepalived "
                 f"({data.get('runs')} run(s) each)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def publish(results: dict[str, Any], output: Path, document: Path | None, log: Callable[[str], None]) -> None:
    """The table next to the JSON, the plot, and the document's block when asked."""
    data = results.get("outage", {})
    png = output.with_suffix(".png")
    drawn = plot(data, png, log)
    output.with_suffix(".md").write_text(block(results, png.name if drawn else None) + "\n")
    print(table(data))
    if document is not None:
        rel = os.path.relpath(png, document.parent) if drawn else None
        text = document.read_text()
        new, done = replace_block(text, "etcd_outage", block(results, rel))
        document.write_text(new)
        log(f"{document}: {'rewrote the etcd_outage block' if done else 'no etcd_outage block to rewrite'}")
    log(f"results: {output}, table: {output.with_suffix('.md')}, plot: {png if drawn else 'none'}")
