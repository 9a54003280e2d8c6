"""The benchmark's plots (matplotlib, PNG): failover-time distributions per subject, and
memory and idle CPU per VIP against the VIP count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .report import scale_rows


def plots(results: dict, directory: Path, stem: str, log: Callable[[str], None]) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        log("matplotlib is not installed (pip install '.[bench]'): no plots")
        return []
    written = []
    fo = results.get("failover", {}).get("subjects", {})
    if fo:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
        for ax, scenario, title in ((axes[0], "host-death", "Host death: holder's link down → VIP bound elsewhere"),
                                    (axes[1], "orderly", "Orderly hand-over (SIGTERM) → VIP bound elsewhere")):
            names, data = [], []

            def label(name: str) -> str:  # three short lines: the six labels must not overlap
                return name.replace("keepalived ", "keepalived\n").replace("link ", "link\n").replace(" (", "\n(")

            for name, sub in fo.items():
                values = sub.get("samples", {}).get(scenario, {}).get("bound", [])
                if values:
                    names.append(label(name))
                    data.append([v * 1000 for v in values])
            if scenario == "orderly":  # link's API hand-over next to the SIGTERM ones
                for name, sub in fo.items():
                    values = sub.get("samples", {}).get("api", {}).get("bound", [])
                    if values:
                        names.append(label(name) + "\nPOST failover")
                        data.append([v * 1000 for v in values])
            if not data:
                continue
            ax.boxplot(data, whis=(0, 100), widths=0.5)
            for i, values in enumerate(data, 1):
                xs = [i + (j % 7 - 3) * 0.03 for j in range(len(values))]
                ax.scatter(xs, values, s=10, alpha=0.6, color="tab:blue", zorder=3)
            ax.set_xticks(range(1, len(names) + 1))
            ax.set_xticklabels(names, fontsize=8)
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
            ax.tick_params(axis="y", which="minor", labelsize=7)
            ax.set_ylabel("milliseconds (log scale)")
            ax.set_title(title, fontsize=10)
            ax.grid(True, axis="y", which="both", alpha=0.3)
        fig.suptitle(f"Failover time, link vs keepalived ({results.get('failover', {}).get('runs')} runs each; "
                     "box: quartiles, whiskers: min–max)", fontsize=11)
        fig.tight_layout()
        path = directory / f"{stem}-failover.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    series: dict[str, list[tuple]] = {}  # runtime -> points
    scale = results.get("scale", {})
    for _, c, runtime in scale_rows(scale):
        n = c.get("vips_per_host")
        w = c.get("memory_mib", {}).get("worker", {})
        if not w.get("uss", {}).get("n"):
            continue
        cpu = c.get("idle", {}).get("cpu_pct_of_a_core", {})
        series.setdefault(runtime, []).append((int(n), w["uss"]["median"], w["pss"]["median"],
                                               c["memory_mib"].get("agent_total_uss_per_host", 0) / int(n),
                                               cpu.get("per_worker", {}).get("median"), cpu.get("per_vip_whole_agent"),
                                               bool(c.get("converged"))))
    if series:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
        ticks = sorted({p[0] for points in series.values() for p in points})
        for runtime, points in series.items():
            points.sort()
            xs = [p[0] for p in points]
            ax1.plot(xs, [p[1] for p in points], "o-", label=f"worker USS (median), {runtime}")
            ax1.plot(xs, [p[2] for p in points], "s--", label=f"worker PSS (median), {runtime}")
            ax1.plot(xs, [p[3] for p in points], "^:", label=f"whole agent USS / VIPs, {runtime}")
            # A level that never converged is not idle (the machine is saturated): its CPU is
            # drawn apart, as crosses, not as a point of the idle curve.
            good = [p for p in points if p[6]]
            ax2.plot([p[0] for p in good], [p[4] for p in good], "o-", label=f"one worker (median), {runtime}")
            ax2.plot([p[0] for p in good], [p[5] for p in good], "^:", label=f"whole agent / VIPs, {runtime}")
            bad = [p for p in points if not p[6]]
            if bad:
                ax2.plot([p[0] for p in bad], [p[4] for p in bad], "x", color="black", markersize=9,
                         label=f"one worker, did not converge (overloaded), {runtime}")
        ax1.axhline(12, color="red", linestyle="--", label="target: USS ≤ 12 MiB per worker")
        ax2.axhline(0.1, color="red", linestyle="--", label="target: ≤ 0.1 % of a core per VIP")
        for ax, ylabel, title in ((ax1, "MiB per VIP", "Memory per VIP"),
                                  (ax2, "% of one core per VIP, idle", "Idle CPU per VIP (default timers: 2 s lease)")):
            ax.set_xscale("log")
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(x) for x in ticks])
            ax.set_xlabel("VIPs per host (3 hosts)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=7)
            ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = directory / f"{stem}-scale.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written
