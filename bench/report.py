#!/usr/bin/env python3
"""Turns bench/relay.sh's raw lines into bench/results/relay.md, relay.json and a chart."""
import json
import os
import platform
import subprocess
import sys
from collections import defaultdict


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def per(c, field, requests, scale):
    """A run's figure per request (None when the run did not record it)."""
    if field not in c:
        return None
    return float(c[field]) * scale / requests


def main(raw_path, out_dir):
    runs, calls, cmdstats, cmdruns = {}, {}, defaultdict(dict), {}
    for line in open(raw_path):
        parts = line.strip().split(" ", 3)
        if line.startswith("CALLS "):
            _, name, conns, rest = line.strip().split(" ", 3)
            calls[(name, int(conns))] = dict(kv.split("=") for kv in rest.split())
        elif line.startswith("COMMANDSTATS-RUN "):
            _, mode, js = line.strip().split(" ", 2)
            cmdruns[mode] = json.loads(js)
        elif line.startswith("COMMANDSTATS "):
            _, mode, stat = line.strip().split(" ", 2)
            cmd, fields = stat[len("cmdstat_"):].split(":", 1)
            cmdstats[mode][cmd] = int(dict(f.split("=") for f in fields.split(","))["calls"])
        elif len(parts) == 3 and parts[2].startswith("{"):
            runs[(parts[0], int(parts[1]))] = json.loads(parts[2])

    rows = []
    for (name, conns), r in sorted(runs.items(), key=lambda x: (x[0][0].split("-")[0] != "direct", x[0])):
        mode, kind = name.split("-", 1)
        base = runs.get((f"direct-{kind}", conns))
        c = calls.get((name, conns), {})
        reqs = int(c.get("requests", r["requests"])) or 1
        rows.append({
            "mode": mode, "kind": "stream" if kind == "stream" else "non-stream", "conns": conns,
            "rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": r["non2xx"],
            "added_p50_ms": None if mode == "direct" or not base else r["p50_ms"] - base["p50_ms"],
            "added_p99_ms": None if mode == "direct" or not base else r["p99_ms"] - base["p99_ms"],
            "vs_direct": None if mode == "direct" or not base else r["rps"] / base["rps"],
            "redis_calls_per_req": None if not c else int(c["redis"]) / reqs,
            "mysql_calls_per_req": None if not c else int(c["mysql"]) / reqs,
            "rss_mb": None if not c else int(c["rss_kb"]) / 1024,
            "relay_cpu_us": per(c, "relay_cpu", reqs, 1e6),
            "relay_vcs": per(c, "relay_vcs", reqs, 1),
            "redis_cpu_us": per(c, "redis_cpu", reqs, 1e6),
            "redis_cmds": per(c, "redis_cmds", reqs, 1),
            "mariadb_cpu_us": per(c, "mariadb_cpu", reqs, 1e6),
        })
    fmt = lambda v, spec: "–" if v is None else format(v, spec)
    lines = [
        "# Relay benchmark results", "",
        f"Machine: {machine()}. Mock upstream: nginx (`mock-upstream/`, answers at once). "
        "Load: wrk, 2 threads, on the same machine. Added latency = relay p50/p99 minus the "
        "direct-to-mock p50/p99 at the same connection count. Calls per request = round trips "
        "the relay's storage actors made during the run divided by requests (background work "
        "included). Per request: the relay's CPU time (µs), its voluntary context switches, "
        "the Redis server's CPU time (µs) and commands (a private redis-server; commands run by "
        "scripts count), and MariaDB's CPU time (µs; the archive's writes, which may lag the run).", "",
        "| mode | answer | conns | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | vs direct "
        "| relay CPU µs | ctx sw | Redis CPU µs | Redis cmds | MariaDB CPU µs "
        "| Redis calls/req | MySQL calls/req | RSS MB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['kind']} | {r['conns']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{fmt(r['added_p50_ms'], '.3f')} | {fmt(r['added_p99_ms'], '.3f')} | "
            f"{fmt(r['vs_direct'] and r['vs_direct'] * 100, '.0f')}{'%' if r['vs_direct'] else ''} | "
            f"{fmt(r['relay_cpu_us'], '.1f')} | {fmt(r['relay_vcs'], '.2f')} | {fmt(r['redis_cpu_us'], '.1f')} | "
            f"{fmt(r['redis_cmds'], '.1f')} | {fmt(r['mariadb_cpu_us'], '.1f')} | "
            f"{fmt(r['redis_calls_per_req'], '.2f')} | {fmt(r['mysql_calls_per_req'], '.3f')} | "
            f"{fmt(r['rss_mb'], '.0f')} | {r['errors']} |")
    if cmdstats:
        lines += ["", "## Redis commands per relayed request (`INFO commandstats`, 3 s at 4 connections)", "",
                  "| mode | command | calls per request |", "|---|---|---|"]
        for mode, stats in cmdstats.items():
            n = max(cmdruns.get(mode, {}).get("requests", 1), 1)
            for cmd, v in sorted(stats.items(), key=lambda x: -x[1]):
                if cmd in ("config", "info", "ping", "client", "hello", "select"):
                    continue
                lines.append(f"| {mode} | {cmd} | {v / n:.2f} |")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "relay.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "relay.json"), "w") as f:
        json.dump(rows, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, kind in zip(axes, ["non-stream", "stream"]):
            for mode in ["direct", "hybrid", "redis", "mysql"]:
                # In order of connections (1, 16, 64): the line follows the load as it grows.
                pts = sorted((r["conns"], r["rps"], r["p50_ms"]) for r in rows if r["mode"] == mode and r["kind"] == kind)
                if pts:
                    ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", label=mode)
                    for conns, rps, p50 in pts:
                        ax.annotate(str(conns), (rps, p50), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_title(f"{kind}: p50 latency vs throughput (1, 16, 64 conns)")
            ax.set_xlabel("requests/s (log)")
            ax.set_ylabel("p50 latency (ms, log)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "relay-latency.png"), dpi=90)
    except ImportError:
        print("report: matplotlib not installed; no chart (pip install matplotlib)")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
