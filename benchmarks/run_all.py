"""Run every benchmark, each in its own process, then print and record one table of ratios vs goals.

    python benchmarks/run_all.py                  # the full suite (`make bench`), under 20 minutes
    python benchmarks/run_all.py --quick          # smoke test at tiny sizes (results in _work/, README untouched)
    python benchmarks/run_all.py --only indexing training
    python benchmarks/run_all.py --ann-n 300000   # a smaller ANN run
    python benchmarks/run_all.py --memory-full    # bench_memory.py at 1000/3000/10000 photos
    python benchmarks/run_all.py --table-only     # rebuild the table from results.json (after running one alone)

Each benchmark writes its own key of benchmarks/results.json; this script adds "suite" (the table,
each benchmark's wall time and peak RSS) and rewrites the table between the markers in README.md.
This module also holds the small measuring helpers the benchmark scripts share (peak RSS of a
phase of this process, or of a child process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "_work"
README = HERE / "README.md"
QUICK_RESULTS = WORK / "results-quick.json"
MIB = 1024.0


# ---------------------------------------------------------------------------------------------- helpers

def use_results_file(quick: bool) -> Path:
    """Smoke runs write to _work/results-quick.json so they never overwrite real figures."""
    import _common

    if quick:
        WORK.mkdir(parents=True, exist_ok=True)
        _common.RESULTS = QUICK_RESULTS
    return _common.RESULTS


def _status_kib(pid: int | str, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            f = [float(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (f + [0.0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Phase:
    """Wall time, peak RSS (MiB) and other processes' CPU load during a `with` block of this process.

    Peak RSS: VmHWM, reset on entry through /proc/self/clear_refs (where the kernel refuses,
    the process-lifetime peak; then `exact_peak` is False). `foreign_cores`: CPU the rest of the
    machine used meanwhile, in cores (machine busy time minus this process and its reaped children);
    a benchmark on a shared 2-core machine is only trustworthy where it stays near 0.
    """

    def __enter__(self) -> "Phase":
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.exact_peak = True
        except OSError:
            self.exact_peak = False
        self.start_mib = _status_kib("self", "VmRSS") / MIB
        self._busy, self._steal = _busy_seconds()
        self._own = _own_cpu_seconds()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t
        busy, steal = _busy_seconds()
        self.foreign_cores = max(0.0, (busy - self._busy) - (_own_cpu_seconds() - self._own)) / self.seconds
        self.steal_cores = (steal - self._steal) / self.seconds
        self.peak_mib = _status_kib("self", "VmHWM") / MIB
        self.delta_mib = self.peak_mib - self.start_mib  # what the phase added on top of what it found


def wait_for_quiet(max_wait: float, threshold: float = 0.15, window: float = 3.0) -> float:
    """Wait (at most max_wait s) until other processes use under `threshold` cores for `window` s.

    Returns the load seen last, in cores. On a shared machine this keeps a benchmark from starting
    in the middle of someone's test run; it cannot stop one from starting later (see foreign_cores).
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, _ = _busy_seconds()
        own0 = _own_cpu_seconds()
        time.sleep(window)
        load = max(0.0, _busy_seconds()[0] - busy0 - (_own_cpu_seconds() - own0)) / window
        if load < threshold or time.monotonic() >= deadline:
            return load


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return out


def run_measured(cmd: Sequence[str], *, cwd: Path = ROOT, env: dict | None = None, capture: bool = False,
                 timeout: float | None = None, sample_s: float = 0.25) -> dict[str, Any]:
    """Run a command; wall seconds, exit code, and peak memory of its process tree.

    peak_rss_mib is the kernel's ru_maxrss from wait4 (the largest single process of the tree);
    peak_tree_rss_mib is the largest sampled sum of RSS over the tree (shared pages count per process).
    """
    busy0, _ = _busy_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None, text=True)
    tree_peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(sample_s):
            tree_peak[0] = max(tree_peak[0], sum(_status_kib(p, "VmRSS") for p in _tree(proc.pid)) / MIB)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = err = ""
    if capture:
        # communicate() drains the pipes; wait4 below still reaps the child and gets its rusage.
        out, err = _communicate(proc, timeout)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    busy1, _ = _busy_seconds()
    own = usage.ru_utime + usage.ru_stime
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "seconds": seconds, "peak_rss_mib": usage.ru_maxrss / MIB,
            "peak_tree_rss_mib": tree_peak[0], "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "foreign_cores": max(0.0, busy1 - busy0 - own) / seconds, "stdout": out, "stderr": err}


def _communicate(proc: subprocess.Popen, timeout: float | None) -> tuple[str, str]:
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def drain(stream, key: str) -> None:
        chunks[key].append(stream.read())

    readers = [threading.Thread(target=drain, args=(proc.stdout, "out")),
               threading.Thread(target=drain, args=(proc.stderr, "err"))]
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout)
    return "".join(chunks["out"]), "".join(chunks["err"])


def landmark_cmd() -> list[str]:
    """The `landmark` entry point of this interpreter's environment."""
    exe = Path(sys.executable).parent / "landmark"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "landmark_search.cli"]


def summary_row(benchmark: str, metric: str, value: float, goal: str, ok: bool | None, detail: str = "",
                foreign: float | None = None) -> dict:
    """One line of the suite table; `foreign`: the most CPU (cores) other processes used meanwhile."""
    return {"benchmark": benchmark, "metric": metric, "value": value, "goal": goal, "ok": ok, "detail": detail,
            "foreign_cores": None if foreign is None else round(foreign, 2)}


# ---------------------------------------------------------------------------------------------- the suite

BENCHES = ("indexing", "default_model", "training", "transfer", "ann", "tagging", "memory", "recognition")


def _bench_command(name: str, args: argparse.Namespace) -> list[str]:
    py = sys.executable
    quick = ["--quick"] if args.quick else []
    if name == "ann":
        n = 20_000 if args.quick else args.ann_n
        return [py, str(HERE / "bench_ann.py"), "--n", str(n), *(["--no-save"] if args.quick else [])]
    if name == "memory":
        # 1000/3000/10000 photos take ~6 minutes at ~40 img/s; the suite's default keeps to
        # 200/600/2000 (--memory-full for the large sizes).
        if args.quick:
            return [py, str(HERE / "bench_memory.py"), "--smoke"]
        return [py, str(HERE / "bench_memory.py"), *([] if args.memory_full else ["--quick"])]
    return [py, str(HERE / f"bench_{name}.py"), *quick]


def _ann_rows(entry: dict | None, stdout: str, foreign: float) -> list[dict]:
    """bench_ann.py writes its own "ann" key (or only prints, with --no-save)."""
    if entry:
        n = entry["config"]["n"]
        approx = entry["approx"]
        # Prefer the figure measured with flat and ANN queries alternating in one process.
        paired = entry.get("speedup_single_query_paired")
        value = paired if paired is not None else entry["speedup_single_query"]
        how = "alternating in one process" if paired is not None else "separate processes"
        recall = approx["recall_at_k"]
        # The goal: recall@10 >= 0.95 at >= 50x (at 1M vectors; smaller n can't reach 50x).
        met = value >= 50 and recall >= 0.95 if n >= 1_000_000 else None
        return [summary_row("ann", f"{approx['type']} vs exact flat, single-query speed-up at n={n:,}",
                            round(value, 1), ">= 50x at recall >= 0.95" if n >= 1_000_000 else "-", met,
                            f"{how}; recall@{entry['config']['k']} {approx['recall_at_k']:.3f}; separate processes: "
                            f"{approx['median_ms']:.2f} vs {entry['flat']['median_ms']:.2f} ms", foreign)]
    m = re.search(r"speed-up of (\w+) over exact flat: ([\d.]+)x", stdout)
    return [summary_row("ann", f"{m.group(1)} vs exact flat, single-query speed-up (not saved)",
                        float(m.group(2)), "-", None, foreign=foreign)] if m else []


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| benchmark | metric | measured | goal | met | other load |", "|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["ok"]]
        metric = r["metric"] + (f" ({r['detail']})" if r.get("detail") else "")
        load = "-" if r.get("foreign_cores") is None else f"{r['foreign_cores']:.2f} cores"
        lines.append(f"| {r['benchmark']} | {metric} | {_fmt(r['value'])} | {r['goal']} | {met} | {load} |")
    return "\n".join(lines)


def table_text(rows: list[dict]) -> str:
    """The rows as an aligned console table."""
    w = max([len(r["benchmark"]) for r in rows] + [9])
    m = max([len(r["metric"]) for r in rows] + [6])
    out = [f"{'benchmark':<{w}}  {'metric':<{m}}  {'measured':>9}  {'goal':>9}  met  other load"]
    for r in rows:
        met = {True: "yes", False: "NO", None: "-"}[r["ok"]]
        load = "" if r.get("foreign_cores") is None else f"{r['foreign_cores']:.2f} cores"
        out.append(f"{r['benchmark']:<{w}}  {r['metric']:<{m}}  {_fmt(r['value']):>9}  {r['goal']:>9}  {met:<3}  {load}")
        if r.get("detail"):
            out.append(f"{'':<{w}}  {'  ' + r['detail']}")
    return "\n".join(out)


def rewrite_readme(markdown: str, meta_line: str) -> bool:
    """Replace the text between <!-- results --> and <!-- /results --> in benchmarks/README.md."""
    if not README.exists():
        return False
    text = README.read_text()
    start, end = "<!-- results -->", "<!-- /results -->"
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{meta_line}\n\n{markdown}\n{end}{tail}"
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(README)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test at tiny sizes; README untouched")
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benchmarks")
    parser.add_argument("--ann-n", type=int, default=1_000_000,
                        help="vectors for bench_ann.py (1M takes under 2 minutes on 2 cores)")
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS",
                        help="before each benchmark, wait up to this long for other processes to go idle")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: rebuild the table (and README) from results.json")
    parser.add_argument("--memory-full", action="store_true",
                        help="bench_memory.py at 1000/3000/10000 photos instead of 200/600/2000 (+5 min)")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    results_file = use_results_file(args.quick)
    import _common

    names = args.only or list(BENCHES)
    runs: dict[str, dict] = {}
    t_suite = time.perf_counter()
    for name in [] if args.table_only else names:
        cmd = _bench_command(name, args)
        print(f"\n=== {name}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
        if args.wait_quiet > 0 and not args.quick:
            load = wait_for_quiet(args.wait_quiet)
            if load >= 0.15:
                print(f"(other processes still use {load:.2f} cores after waiting {args.wait_quiet:g} s; "
                      "ratios from this benchmark may be off)", flush=True)
        # ANN's table goes to stdout; capture it only where its numbers are not saved.
        run = run_measured(cmd, capture=name == "ann" and args.quick)
        if run["stdout"]:
            print(run["stdout"], end="")
        runs[name] = run
        print(f"=== {name}: exit {run['rc']}, {run['seconds']:.0f} s, peak RSS {run['peak_rss_mib']:.0f} MiB "
              f"(process tree {run['peak_tree_rss_mib']:.0f} MiB, other processes {run['foreign_cores']:.2f} cores)",
              flush=True)
    total = time.perf_counter() - t_suite

    data = json.loads(results_file.read_text()) if results_file.exists() else {}
    rows: list[dict] = []
    for name in names:
        run = runs.get(name)
        if run and run["rc"] != 0:
            rows.append(summary_row(name, "FAILED", run["rc"], "exit 0", False))
        elif name == "ann":
            rows += _ann_rows(None if args.quick else data.get("ann"), run["stdout"] if run else "",
                              run["foreign_cores"] if run else None)
        else:
            rows += data.get(name, {}).get("summary", [])
    print("\n" + table_text(rows))
    m = _common.machine()
    previous = data.get("suite", {})
    if args.table_only:
        # Benchmarks were run one by one: keep the last full run's timings, refresh the table.
        suite = {**{k: v for k, v in previous.items() if k != "machine"}, "rows": rows,
                 "table_rebuilt_at": time.strftime("%Y-%m-%d %H:%M")}
        total = previous.get("total_seconds", 0.0)
    else:
        print(f"\nsuite: {total / 60:.1f} min on {m['cpu']} ({os.cpu_count()} cores)")
        # A partial run (--only) keeps the last full suite's time: that is what the README reports.
        suite = {"quick": args.quick, "rows": rows, "only": list(args.only) if args.only else None,
                 "total_seconds": previous.get("total_seconds", 0.0) if args.only else round(total, 1),
                 "benchmarks": {n: {"command": " ".join(_bench_command(n, args)), "exit": r["rc"],
                                    "seconds": round(r["seconds"], 1), "peak_rss_mib": round(r["peak_rss_mib"]),
                                    "peak_tree_rss_mib": round(r["peak_tree_rss_mib"]),
                                    "foreign_cores": round(r["foreign_cores"], 2)} for n, r in runs.items()}}
    _common.update_results("suite", suite)
    if not args.quick and (args.table_only or not args.only):
        how = ("table rebuilt from results.json, benchmarks re-run one by one" if args.table_only
               else "all benchmarks in one `make bench`")
        meta = (f"Measured on {time.strftime('%Y-%m-%d')} ({how}): {m['cpu']}, {m['cores']} cores, torch "
                f"{m.get('torch', '?')}; last full suite {total / 60:.1f} min. \"other load\": CPU that other "
                "processes used meanwhile (this machine is shared; ratios measured under load are unreliable).")
        if rewrite_readme(table_markdown(rows), meta):
            print(f"rewrote the results table in {README.relative_to(ROOT)}")
    print(f"wrote {results_file}")
    if any(r["rc"] != 0 for r in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
