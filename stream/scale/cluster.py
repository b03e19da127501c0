"""The workers as Ray actors across a Ray cluster's nodes: placed per node, restarted by Ray, followed as nodes come and go.

Ray is an optional extra (`pip install fvq-live[cluster]`). Every node that takes workers (all alive nodes, or
those offering `cluster.resource`) gets `cluster.workers_per_node` actors pinned to it (node affinity, not soft),
each reserving `cluster.num_cpus` CPUs and running the same worker as a local process does (stream/scale/workers.py)
with its HTTP on the node's address. Ray restarts an actor whose process dies (`max_restarts=-1`); a node that
leaves takes its actors with it, and the front moves their streams to the others once they stop answering
(`cluster.failover_after_s`); a node that joins gets actors, and the front moves streams to them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from stream.config import ConfigError, MonitorConfig

log = logging.getLogger(__name__)

EXTRA_HINT = "install the cluster extra: pip install 'fvq-live[cluster]' (it brings ray[serve])"
POLL_S = 0.5


def require_ray() -> Any:
    """The ray module, or a ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray and the `cluster:` config section need Ray, which is not installed: {EXTRA_HINT}")\
            from None
    return ray


@dataclass
class RayWorker:
    """A worker actor as the front sees it."""

    id: str
    node: str  # node id
    actor: Any
    url: str | None = None
    incarnation: str | None = None
    restarts: int = 0
    capacity: float = 1.0
    pending: Any = None  # an info() call in flight
    pending_since: float = 0.0


def _actor_class(ray: Any) -> Any:
    class FvqWorker:
        """One worker (stream/scale/workers.py's WorkerRuntime) inside a Ray actor; Ray runs __init__ again on restart."""

        def __init__(self, config_json: str, worker_id: str, token: str) -> None:
            from stream.scale.workers import WorkerRuntime

            logging.basicConfig(level=logging.INFO,
                                format=f"%(asctime)s %(levelname)s worker[{worker_id}] %(name)s: %(message)s")
            cfg = MonitorConfig.model_validate_json(config_json)
            host = ray.util.get_node_ip_address()
            self.runtime = WorkerRuntime(cfg, worker_id, token, host)
            self.url = self.runtime.start()
            if cfg.cluster is not None and cfg.cluster.rater == "serve":
                from stream.scale.serve_rater import use_serve_rater

                use_serve_rater(self.runtime, cfg.cluster)

        def info(self) -> dict:
            state = self.runtime.state
            return {"url": self.url, "incarnation": state.incarnation if state else None, "pid": os.getpid()}

    return ray.remote(FvqWorker)


class RayPool:
    """Worker actors on the nodes of a Ray cluster, kept in step with the cluster by a polling thread."""

    reassign_lost = True  # a lost node's streams go to the other workers

    def __init__(self, config: MonitorConfig, token: str, poke=None, start_timeout_s: float = 60.0) -> None:
        ray = self.ray = require_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._affinity = NodeAffinitySchedulingStrategy
        assert config.cluster is not None
        self.config, self.cluster, self.token = config, config.cluster, token
        self.poke = poke or (lambda: None)
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
            ray.init(address=self.cluster.address, namespace="fvq", log_to_driver=True,
                     runtime_env={"env_vars": env} if env else None)
        self._actor = _actor_class(ray)
        self._config_json = config.model_copy(update={"sources": [], "workers": 1}).model_dump_json()
        self.slots: dict[str, RayWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self.cluster.rater == "serve":
            from stream.scale.serve_rater import deploy_rater

            deploy_rater(config)
        self._sync()
        self._thread = threading.Thread(target=self._run, name="ray-pool", daemon=True)
        self._thread.start()
        # every node's workers, so the first streams spread over all of them (at least one, within the timeout)
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline and (not self.workers() or len(self.workers()) < len(self.slots)):
            time.sleep(0.2)
        if not self.workers():
            self.stop()
            raise RuntimeError(f"no fvq worker actor started on the Ray cluster within {start_timeout_s:g} s "
                               f"(nodes offering resource {self.cluster.resource!r}, num_cpus {self.cluster.num_cpus})")

    def _nodes(self) -> dict[str, dict]:
        out = {}
        for n in self.ray.nodes():
            if not n.get("Alive"):
                continue
            res = n.get("Resources", {})
            if self.cluster.resource and res.get(self.cluster.resource, 0) <= 0:
                continue
            if res.get("CPU", 0) < self.cluster.num_cpus:
                continue
            out[n["NodeID"]] = n
        return out

    def _sync(self) -> None:
        ray = self.ray
        nodes = self._nodes()
        changed = False
        with self._lock:
            for wid, slot in list(self.slots.items()):
                if slot.node not in nodes:
                    log.warning("ray: node %s left: worker %s is gone", slot.node[:8], wid)
                    del self.slots[wid]
                    changed = True
                    try:
                        ray.kill(slot.actor, no_restart=True)
                    except Exception:
                        pass
            for node_id, n in nodes.items():
                for k in range(self.cluster.workers_per_node):
                    wid = f"{n.get('NodeManagerAddress', 'node')}-{node_id[:6]}-{k}"
                    if wid in self.slots:
                        continue
                    resources = {self.cluster.resource: 0.001} if self.cluster.resource else {}
                    actor = self._actor.options(
                        name=f"fvq-worker-{wid}", get_if_exists=True, lifetime=None,
                        num_cpus=self.cluster.num_cpus, resources=resources, max_restarts=-1, max_task_retries=0,
                        scheduling_strategy=self._affinity(node_id=node_id, soft=False),
                    ).remote(self._config_json, wid, self.token)
                    self.slots[wid] = RayWorker(wid, node_id, actor, capacity=max(self.cluster.num_cpus, 0.1))
                    log.info("ray: worker %s started on node %s", wid, node_id[:8])
            slots = list(self.slots.values())
        now = time.monotonic()
        for slot in slots:
            if slot.pending is None:
                slot.pending, slot.pending_since = slot.actor.info.remote(), now
        ready, _ = ray.wait([s.pending for s in slots], num_returns=len(slots), timeout=POLL_S) if slots else ([], [])
        ready_set = set(ready)
        for slot in slots:
            if slot.pending is None:
                continue
            if slot.pending in ready_set:
                ref, slot.pending = slot.pending, None
                try:
                    info = ray.get(ref)
                except Exception as exc:  # the actor is restarting (or its node is gone)
                    if slot.url is not None:
                        log.warning("ray: worker %s unreachable: %s", slot.id, type(exc).__name__)
                        slot.url = None
                        changed = True
                    continue
                if slot.incarnation is not None and info["incarnation"] != slot.incarnation:
                    slot.restarts += 1
                    changed = True
                if slot.url != info["url"]:
                    changed = True
                slot.url, slot.incarnation = info["url"], info["incarnation"]
            elif now - slot.pending_since > self.cluster.failover_after_s and slot.url is not None:
                slot.url = None  # an info() that hangs: the actor is being restarted, or its node is unreachable
                changed = True
        if changed:
            self.poke()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception:
                log.exception("ray: pool sync failed")
            self._stop.wait(POLL_S)

    def workers(self) -> dict[str, RayWorker]:
        with self._lock:
            return {wid: s for wid, s in self.slots.items() if s.url}

    def kill(self, worker_id: str) -> None:
        slot = self.slots.get(worker_id)
        if slot is not None:
            self.ray.kill(slot.actor, no_restart=False)

    def stop(self) -> None:
        self._stop.set()
        if getattr(self, "_thread", None) is not None and self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            slots = list(self.slots.values())
            self.slots.clear()
        for slot in slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:
                pass
        if self.cluster.rater == "serve":
            try:
                from ray import serve

                serve.delete("fvq-rater")
            except Exception:
                pass
        self.ray.shutdown()
