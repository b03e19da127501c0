"""The rater as a Ray Serve deployment that batches every stream's windows (on GPU nodes), and the client side of it.

The rater interface is `Rater.rate(list[WindowFeatures]) -> list[Rating]`: a batch of windows' features in, one
rating each out (engines/rater.py). `ServeRater` keeps a worker's frame encoders local (they need the frames) and
sends each window's features (numpy only, ~tens of KiB) to the deployment, whose `@serve.batch` gathers the windows
of every worker into one forward pass; when the deployment fails or is slow it rates locally (the default path).
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

APP = "fvq-rater"
DEPLOYMENT = "FvqRater"


def rater_app(bundle: str | None, max_batch: int = 64, num_gpus: float = 0.0, num_cpus: float = 1.0,
              replicas: int = 1, batch_wait_s: float = 0.005) -> Any:
    """The Serve application: `replicas` copies of the bundle's rater, each batching up to `max_batch` windows."""
    from ray import serve

    @serve.deployment(name=DEPLOYMENT, num_replicas=replicas, max_ongoing_requests=max(8, 4 * max_batch),
                      ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    class FvqRater:
        def __init__(self, bundle: str | None) -> None:
            import sys

            from engines.bundle import default_bundle
            from engines.load import load_rater

            self.rater = load_rater(bundle or default_bundle(), device="cuda" if num_gpus > 0 else "cpu")
            torch = sys.modules.get("torch")  # a torch rater's; the ONNX rater runs without torch
            if torch is not None:
                torch.set_num_threads(1)
            self.batches: list[int] = []

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_s)
        async def rate(self, features: list) -> list:
            self.batches.append(len(features))
            return self.rater.rate(features)

        def batch_sizes(self) -> list[int]:
            out, self.batches = self.batches, []
            return out

    return FvqRater.bind(bundle)


def deploy_rater(config: Any) -> Any:
    """Starts Serve (no HTTP proxy: only handles call it) and the rater application; returns its handle."""
    from ray import serve

    c = config.cluster
    serve.start(proxy_location="Disabled")
    app = rater_app(str(config.bundle) if config.bundle else None, c.rater_max_batch, c.rater_num_gpus,
                    c.rater_num_cpus, c.rater_replicas)
    return serve.run(app, name=APP, route_prefix=None)


class ServeRater:
    """A Rater whose `rate` is a call to the Serve deployment, with the worker's own rater as the fallback."""

    def __init__(self, local: Any, handle: Any, timeout_s: float = 5.0) -> None:
        self.local, self.handle, self.timeout_s = local, handle, timeout_s
        self.remote_windows = 0
        self.fallbacks = 0
        self._warned = 0.0

    def __getattr__(self, name: str) -> Any:  # spec, prior, dimension_heads, calibrate...: the local rater's
        return getattr(self.local, name)

    def frame_features(self, records: list) -> None:
        self.local.frame_features(records)

    def window_features(self, window: Any) -> Any:
        return self.local.window_features(window)

    def rate(self, features: list) -> list:
        if not features:
            return []
        if not self.local.model_counts:  # model share 0: the deployment would only walk the forest rated here too
            return self.local.rate(features)
        try:
            responses = [self.handle.rate.remote(f) for f in features]
            ratings = [r.result(timeout_s=self.timeout_s) for r in responses]
            self.remote_windows += len(ratings)
            return ratings
        except Exception as exc:
            self.fallbacks += 1
            if time.monotonic() - self._warned > 30:
                self._warned = time.monotonic()
                log.warning("Serve rater failed (%s: %s): rating in process", type(exc).__name__, exc)
            return self.local.rate(features)


def use_serve_rater(runtime: Any, cluster: Any) -> None:
    """Points a worker's analyzer at the Serve deployment (when it has a rater at all: not with no_model)."""
    from ray import serve

    analyzer = runtime.state.monitor.analyzer
    if analyzer.rater is None:
        return
    handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP)
    analyzer.rater = ServeRater(analyzer.rater, handle)
