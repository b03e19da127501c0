"""`fvq serve --ray`: a real local Ray cluster (a head and two worker nodes on loopback); one node is killed, its
streams publish again on the other within 15 s, and a node that joins takes streams."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port, make_face_clip
from tests.harness import bundle_with_share
from tests.stream.test_workers import Served, assert_each_series_once, windows

ROOT = Path(__file__).resolve().parents[2]
ray = pytest.importorskip("ray", reason="the cluster extra is not installed (`pip install .[cluster]`)")
RAY = str(Path(sys.executable).parent / "ray")
START_TIMEOUT_S = 150
# Ray rewrites 127.0.0.1 and localhost to the host's routable address (ray._private.services.resolve_ip_for_localhost),
# so a cluster told to use 127.0.0.1 would talk over the host's network address. Another address of the loopback
# range is taken as given: every node, client and worker of the test cluster stays on loopback.
LOOPBACK = "127.0.0.2"


@pytest.fixture(autouse=True)
def _ray_without_tokens(monkeypatch):
    """The test clusters are private to the test, on loopback: no token auth, so no ~/.ray/auth_token is written
    or read (a token left there by one local `ray.init()` would otherwise lock every later client out)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


class LocalRayCluster:
    """`ray start --block` per node, each in its own process group, on free loopback ports, sessions in a temp dir;
    every process it started is killed at the end, by id (never `ray stop`, which would take any Ray on the host)."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="fvqray")  # short: Ray's socket paths must fit in 107 bytes
        self.port = free_port()
        self.nodes: dict[str, subprocess.Popen] = {}
        self.manager_ports: dict[str, int] = {}
        self.dead: list[subprocess.Popen] = []  # killed nodes' `ray start`
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled",
                    "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_failure_threshold": "3", "RAY_health_check_timeout_ms": "1000",
                    "RAY_USAGE_STATS_ENABLED": "0"}

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start_node(self, name: str, num_cpus: int, resources: dict, head: bool = False) -> None:
        nm = free_port()
        cmd = [RAY, "start", "--block", "--node-ip-address", LOOPBACK, "--num-cpus", str(num_cpus),
               "--resources", json.dumps(resources), "--node-manager-port", str(nm),
               "--object-store-memory", str(80 * 1024 * 1024), "--dashboard-agent-listen-port", str(free_port()),
               "--metrics-export-port", str(free_port()), "--disable-usage-stats"]
        if head:
            cmd += ["--head", "--port", str(self.port), "--temp-dir", self.tmp, "--include-dashboard", "false",
                    "--ray-client-server-port", str(free_port())]
        else:
            cmd += ["--address", self.address]
        log = open(Path(self.tmp) / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the node
        self.nodes[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.manager_ports[name] = nm

    def add_node(self, name: str, num_cpus: int, resources: dict, head: bool = False, tries: int = 2) -> None:
        """Starts a node and waits for it to join; once more if it gave up (Ray allows a raylet 30 s to register,
        which a loaded shared host can exceed)."""
        count = len(self.nodes) + (0 if name in self.nodes else 1)
        for attempt in range(tries):
            self.start_node(name, num_cpus, resources, head)
            try:
                self.wait_nodes(count)
                return
            except AssertionError:
                if attempt == tries - 1:
                    raise
                try:
                    os.killpg(self.nodes[name].pid, signal.SIGKILL)
                except ProcessLookupError:  # its `ray start` gave up and exited already
                    pass
                self.nodes[name].wait(10)

    def wait_nodes(self, count: int, timeout: float = START_TIMEOUT_S) -> None:
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.nodes.items():
                assert p.poll() is None, f"ray node {name} exited:\n{(Path(self.tmp) / f'{name}.log').read_text()}"
            try:
                out = subprocess.run([sys.executable, "-c", code, self.address], env=self.env, capture_output=True,
                                     text=True, timeout=60)
            except subprocess.TimeoutExpired:
                continue
            last = out.stdout.strip().splitlines()[-1:] or [""]
            if out.returncode == 0 and last[0].isdigit() and int(last[0]) >= count:
                return
            time.sleep(1)
        logs = "".join(f"--- {n}:\n" + (Path(self.tmp) / f"{n}.log").read_text()[-1500:] for n in self.nodes)
        raise AssertionError(f"the Ray cluster did not reach {count} nodes in {timeout} s\n{logs}")

    def node_ids(self) -> dict[str, str]:
        """{custom resource naming a node: its Ray node id}."""
        code = ("import ray,sys,json; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(json.dumps({r: n['NodeID'] for n in ray.nodes() if n['Alive'] for r in n['Resources']}))")
        out = subprocess.run([sys.executable, "-c", code, self.address], env=self.env, capture_output=True,
                             text=True, timeout=60, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def _mine(self) -> list[psutil.Process]:
        """Every process of this cluster: the `ray start` groups and anything naming our session dir."""
        out = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:  # dead already; reaped by whoever adopted it
                    continue
                cmd = " ".join(p.info["cmdline"] or [])
                if self.tmp in cmd or os.getpgid(p.pid) in {n.pid for n in [*self.nodes.values(), *self.dead]}:
                    out.append(p)
            except (psutil.Error, ProcessLookupError, OSError):
                continue
        return out

    def kill_node(self, name: str) -> None:
        """The node's raylet and everything under it (its workers, agents), then its `ray start`: a lost machine."""
        port = f"--node_manager_port={self.manager_ports[name]}"
        victims = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            if port in (p.info["cmdline"] or []):
                victims += [p, *p.children(recursive=True)]
        assert victims, f"no raylet of node {name} found"
        for p in victims:
            try:
                p.kill()
            except psutil.Error:
                pass
        os.killpg(self.nodes[name].pid, signal.SIGKILL)
        self.dead.append(self.nodes.pop(name))

    def stop(self) -> None:
        groups = [*self.nodes.values(), *self.dead]
        for p in groups:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and any(p.poll() is None for p in groups):
            time.sleep(0.2)
        for p in self._mine():
            try:
                p.kill()
            except psutil.Error:
                pass
        for p in groups:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def cluster():
    c = LocalRayCluster()
    try:
        c.add_node("head", 0, {"n0": 1}, head=True)
        c.add_node("n1", 1, {"n1": 1, "fvq": 1})
        c.add_node("n2", 1, {"n2": 1, "fvq": 1})
        yield c
    finally:
        c.stop()
    assert not c._mine(), "processes of the Ray cluster outlived it"


@pytest.fixture(scope="module")
def tiny_clip(media_dir: Path) -> Path:
    """4 s at 256x144, 5 fps: six of them fit two shared cores with room to spare."""
    return make_face_clip(media_dir / "tiny5.mp4", seconds=4.0, size="256x144", fps=5,
                          codec_args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "5"))


def placement(served: Served) -> dict[str, str]:
    status, body = served.get("/streams")
    assert status == 200
    return {s["name"]: s["worker"] for s in json.loads(body)["streams"]}


def test_a_lost_node_s_streams_publish_again_on_the_other(tmp_path: Path, cluster: LocalRayCluster,
                                                          tiny_clip: Path) -> None:
    names = [f"s{i}" for i in range(6)]
    config = {
        "sources": [{"name": n, "url": str(tiny_clip), "loop": True} for n in names],
        "window": {"length_s": 2.0, "hop_s": 0.5},
        "analysis": {"sample_fps": 1.0},
        "no_model": True,
        "cluster": {"address": cluster.address, "resource": "fvq", "num_cpus": 1, "failover_after_s": 3},
    }
    served = Served(tmp_path, config)
    try:
        served.wait(lambda: all((windows(served.samples(), n) or 0) > 0 for n in names), "windows of all six",
                    START_TIMEOUT_S)
        placed = placement(served)
        by_worker = Counter(placed.values())
        assert len(by_worker) == 2 and sorted(by_worker.values()) == [3, 3], placed  # both nodes, by load
        status, body = served.get("/sd")
        targets = json.loads(body)
        assert status == 200 and len(targets) == 2 and len({t["labels"]["node"] for t in targets}) == 2
        n1 = cluster.node_ids()["n1"]
        lost_worker = next(t["labels"]["worker"] for t in targets if t["labels"]["node"] == n1)
        moved = [n for n, w in placed.items() if w == lost_worker]
        kept = [n for n in names if n not in moved]
        before = {n: windows(served.samples(), n) for n in kept}
        killed = time.monotonic()
        cluster.kill_node("n1")
        back: dict[str, float] = {}
        while time.monotonic() - killed < 20 and len(back) < len(moved):
            samples = served.samples()
            assert_each_series_once(samples)
            now_placed = placement(served)
            for n in moved:
                if n not in back and now_placed[n] != lost_worker and (windows(samples, n) or 0) > 0:
                    back[n] = time.monotonic() - killed
            time.sleep(0.25)
        assert set(back) == set(moved), f"not back on the other node within 20 s: {set(moved) - set(back)}\n" \
            + served.tail()
        assert max(back.values()) < 15, f"the lost node's streams published again only after {back} s"
        samples = served.samples()
        assert_each_series_once(samples)
        for n in kept:  # the other node's streams never stopped
            assert windows(samples, n) > before[n]
        value = {(n, tuple(sorted(lb.items()))): v for n, lb, v in samples}
        assert value[("fvq_worker_stream_moves_total", (("reason", "lost"),))] == 3
        def lost_windows() -> dict[str, float | None]:
            got = {(n, tuple(sorted(lb.items()))): v for n, lb, v in served.samples()}
            return {n: got.get(("fvq_worker_windows_lost_total", (("stream", n),))) for n in moved}

        served.wait(lambda: all((v or 0) > 0 for v in lost_windows().values()), "the lost windows counted", 10)
        lost = lost_windows()
        for n in names:
            assert sum(1 for name, lb, _ in samples if name == "fvq_stream_up" and lb.get("stream") == n) == 1
        print(f"node lost: its streams published again after {back} s; windows lost {lost}")
        served.wait(lambda: not any(lb.get("worker") == lost_worker for _, lb, _ in served.samples()),
                    "the lost worker's series to go once Ray declares its node dead", 30)

        # a node joins: it gets a worker, and streams move to it while that lowers the highest load
        cluster.add_node("n3", 1, {"n3": 1, "fvq": 1})
        served.wait(lambda: len(set(placement(served).values())) == 2 and any(
            (windows(served.samples(), n) or 0) > 0 for n, w in placement(served).items() if w not in placed.values()),
            "streams on the joined node", START_TIMEOUT_S)
        samples = served.samples()
        assert_each_series_once(samples)
        value = {(n, tuple(sorted(lb.items()))): v for n, lb, v in samples}
        assert value[("fvq_worker_stream_moves_total", (("reason", "rebalance"),))] >= 1
    finally:
        served.stop()


def test_serve_rater_batches_windows_and_falls_back_in_process(media_dir: Path) -> None:
    """The rater as a Ray Serve deployment rates real windows as the in-process rater does, batching concurrent
    windows; once the deployment is gone the worker's own rater takes over."""
    from ray import serve

    from benchmarks.live import _captured_features
    from stream.scale.serve_rater import APP, ServeRater, rater_app

    clip = make_face_clip(media_dir / "serve_rater.mp4", seconds=6.0, size="320x180", fps=10)
    # the shipped bundle's model share is 0 (nothing for the deployment to run): its model at a share of 0.25
    bundle = str(bundle_with_share(media_dir / "serve_rater_bundle", 0.25))
    features, local = _captured_features(clip, bundle)
    assert len(features) >= 3
    expected = [r.score for r in local.rate(features)]
    tmp = tempfile.mkdtemp(prefix="fvqsr")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=tmp, logging_level="ERROR", _node_ip_address=LOOPBACK,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        serve.start(proxy_location="Disabled")
        handle = serve.run(rater_app(bundle, max_batch=8, num_cpus=0, batch_wait_s=0.05), name=APP, route_prefix=None)
        remote = ServeRater(local, handle, timeout_s=60)
        got = [r.score for r in remote.rate(features)]
        assert got == pytest.approx(expected, abs=1e-3)
        assert remote.remote_windows == len(features) and remote.fallbacks == 0
        sizes = handle.batch_sizes.remote().result()
        assert max(sizes) > 1 and sum(sizes) == len(features)  # concurrent windows went in shared batches
        serve.delete(APP)
        remote.timeout_s = 5
        again = [r.score for r in remote.rate(features)]
        assert again == pytest.approx(expected, abs=1e-3) and remote.fallbacks == 1
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
