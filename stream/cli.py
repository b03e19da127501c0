"""The serving subcommands of `fvq`: `serve` (the monitor) and `score` (files), their arguments and error messages.

The `fvq` command itself (fvq/cli.py) composes these with `eval` and `export`; `python -m stream.cli serve|score`
runs the serving subcommands alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from stream import __version__

# stream.config (pydantic) and everything below it are imported where a subcommand runs, so that `--help` and
# argument errors answer without loading them.

log = logging.getLogger("fvq")


def _serve_overrides(args: argparse.Namespace) -> dict:
    from stream.config import parse_source_arg

    overrides: dict = {}
    sources = [parse_source_arg(a) for a in args.sources] + [parse_source_arg(a, listen=True) for a in args.listen]
    if args.fast:
        for s in sources:
            s["realtime"] = False
    if args.loop:
        for s in sources:
            s["loop"] = True
    if sources:
        overrides["sources"] = sources
    server = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    if server:
        overrides["server"] = server
    if args.bundle is not None:
        overrides["bundle"] = str(args.bundle)
    if args.no_model:
        overrides["no_model"] = True
    if args.workers is not None:
        overrides["workers"] = args.workers if args.workers == "auto" else _positive_int(args.workers, "--workers")
    if args.ray is not None:
        overrides["cluster"] = {"address": args.ray}
    return overrides


def _positive_int(value: str, option: str) -> int:
    from stream.config import ConfigError

    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{option} takes a number of workers or `auto`, not {value!r}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from engines.bundle import bundle_label
    from stream.config import ConfigError, load_config
    from stream.http.catalog import attach_catalog
    from stream.http.server import PortInUseError, start_server
    from stream.live.analysis import build_analyzer
    from stream.live.monitor import Monitor
    from stream.ops.metrics import build_metrics
    from stream.ops.recommend import start_recommendations

    overrides = _serve_overrides(args)
    cfg = load_config(args.config, overrides)
    if cfg.cluster is not None or cfg.worker_count() > 1:
        if not cfg.no_model:  # a missing bundle or a rater this install cannot run: said here, not by each worker
            from engines.bundle import bundle_to_load
            from engines.load import check_rater_importable

            bundle = bundle_to_load(cfg.bundle)
            if bundle is not None:
                check_rater_importable(bundle)
        return _serve_front(cfg, args, overrides)
    metrics = build_metrics(bundle=bundle_label(cfg.bundle))
    monitor = Monitor(cfg, build_analyzer(cfg, metrics), metrics)
    catalog = attach_catalog(monitor, args.config, overrides)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            runner = await start_server(monitor)
        except PortInUseError as exc:
            raise ConfigError(f"{exc.strerror} (server.port / --port)") from None
        print(ingest_notice(cfg), flush=True)
        try:  # off the loop: /healthz and the API answer while thousands of sources start
            await loop.run_in_executor(None, monitor.start)
        except Exception:
            await loop.run_in_executor(None, monitor.stop)
            await runner.cleanup()
            raise
        catalog.load_state()
        addr = runner.addresses[0] if runner.addresses else (cfg.server.host, cfg.server.port)
        recommender = start_recommendations(monitor, f"http://{addr[0]}:{addr[1]}")
        print(f"fvq {__version__}: serving http://{addr[0]}:{addr[1]}/metrics  /streams  /healthz  POST /whip/{{stream}}",
              flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, _reload, catalog))
        table = None
        if args.table:
            from stream.ops.table import render_table

            table = render_table
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                if table is not None:
                    sys.stdout.write(table(monitor.snapshot()))
                    sys.stdout.flush()
                if args.duration and time.monotonic() - started > args.duration:
                    break
        finally:
            await loop.run_in_executor(None, recommender.stop)
            await loop.run_in_executor(None, monitor.stop)
            await runner.cleanup()

    started = time.monotonic()
    asyncio.run(main())
    return 0


def _serve_front(cfg, args: argparse.Namespace, overrides: dict) -> int:
    """Several workers behind one front: local worker processes, or Ray actors across a cluster."""
    from stream.scale.front_http import serve_front

    if cfg.cluster is not None:
        from stream.scale.cluster import RayPool, require_ray

        require_ray()  # fails here, with the extra to install, before anything starts

        def factory(token, poke):
            return RayPool(cfg, token, poke)
    else:
        from stream.scale.local_pool import LocalPool

        def factory(token, poke):
            pool = LocalPool(cfg, cfg.worker_count(), cfg.worker_spares, token, on_change=poke)
            pool.start()
            return pool

    from stream.config import ConfigError
    from stream.http.server import PortInUseError

    print(ingest_notice(cfg), flush=True)
    try:
        asyncio.run(serve_front(cfg, factory, duration=args.duration, table=args.table, config_path=args.config,
                                overrides=overrides))
    except PortInUseError as exc:
        raise ConfigError(f"{exc.strerror} (server.port / --port)") from None
    return 0


def _reload(catalog) -> None:
    """SIGHUP: re-read the config file; a bad file changes nothing and says why."""
    try:
        catalog.reload()
    except Exception as exc:
        log.error("SIGHUP: the config file was not applied: %s", exc)


def ingest_notice(cfg) -> str:
    """What `fvq serve` says at start-up about who may publish over WHIP."""
    s = cfg.server
    if s.whip_token:
        who = "WHIP ingest needs `Authorization: Bearer <server.whip_token>`"
    elif s.allow_anonymous_ingest:
        who = "WHIP ingest is OPEN to anyone who can reach this port (server.allow_anonymous_ingest: true)"
    else:
        who = ("WHIP ingest: loopback clients only (no server.whip_token set; clients on other hosts are "
               "refused until you set one, or server.allow_anonymous_ingest: true)")
    cors = ", ".join(s.cors_origins) if s.cors_origins else "none"
    ice = "any address" if s.ice_allow_private else "public addresses only (server.ice_allow_private: false)"
    notice = f"fvq: {who}; CORS origins: {cors}; ICE candidates: {ice}"
    from stream.http.access import is_loopback

    if s.host != "localhost" and not is_loopback(s.host) and not s.limit_exempt_clients:
        notice += (f"\nfvq: warning: serving on {s.host} beyond loopback with server.limit_exempt_clients empty: a "
                   f"connection flood from other hosts can hold your Prometheus scraper under the per-client cap "
                   f"({s.max_connections_per_client}) and the total cap ({s.max_connections}); list its address, "
                   "e.g. limit_exempt_clients: [10.0.0.5/32]")
    return notice


def cmd_score(args: argparse.Namespace) -> int:
    from stream.config import load_config
    from stream.live.analysis import build_analyzer
    from stream.live.offline import InputError, analyse_file, file_report

    overrides: dict = {}
    if args.bundle is not None:
        overrides["bundle"] = str(args.bundle)
    if args.no_model:
        overrides["no_model"] = True
    cfg = load_config(args.config, overrides)
    analyzer = build_analyzer(cfg)
    failed = 0
    for path in args.paths:
        try:
            report = file_report(analyse_file(path, cfg, analyzer))
        except InputError as exc:
            failed += 1
            report = {"path": path, "error": str(exc)}
        except Exception as exc:  # one bad input never stops the others
            failed += 1
            report = {"path": path, "error": f"{type(exc).__name__}: {exc}"}
        if args.json:
            print(json.dumps(report), flush=True)
        else:
            print(_human(report), flush=True)
    return 1 if failed else 0


def _human(report: dict) -> str:
    if "error" in report:
        return f"{report['path']}: ERROR {report['error']}"
    head = f"{report['path']}:"
    if "score" in report:
        head += f" score {report['score']:.1f} ({report['level']})"
    dims = " ".join(f"{k} {v:.0f}" for k, v in report["dimensions"].items())
    line = f"{head} face {report['face_presence']:.0%} | {dims} | {len(report['windows'])} windows"
    switches = ", ".join(f"{s['switch']} at {s['at']:.1f} s" for s in report.get("colour_switches", ()))
    return f"{line} | colour pipeline switched: {switches}" if switches else line


DESCRIPTION = "Real-time face-video quality monitor (FVQ-Rater)."
SERVE_HELP = "watch live streams and serve Prometheus metrics"
SCORE_HELP = "score video files"


def add_serve_arguments(s: argparse.ArgumentParser) -> None:
    """`fvq serve`'s arguments."""
    s.add_argument("sources", nargs="*", help="NAME=URL or URL/path: files, rtmp://, rtsp://, srt://, http(s)://.m3u8")
    s.add_argument("--listen", action="append", default=[], metavar="NAME=rtmp://HOST:PORT/APP/KEY",
                   help="accept an RTMP publisher on this address (repeatable)")
    s.add_argument("--config", type=Path, help="YAML config (see README); command-line values are added to it")
    s.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="HTTP port (default 9108)")
    s.add_argument("--bundle", type=Path, help="model bundle folder (default: the shipped bundle)")
    s.add_argument("--no-model", action="store_true", help="signal measurements only, no quality model")
    s.add_argument("--fast", action="store_true", help="read files as fast as possible instead of in real time")
    s.add_argument("--loop", action="store_true", help="loop files")
    s.add_argument("--table", action="store_true", help="print a live table of the streams every second")
    s.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: run until stopped)")
    s.add_argument("--workers", metavar="N|auto",
                   help="worker processes, each owning a share of the streams, behind one front (default: the "
                   "config's `workers`, itself `auto`: one per core, at least one; 1: a single process)")
    s.add_argument("--ray", metavar="auto|ADDRESS",
                   help="run the workers as Ray actors on this Ray cluster (needs `pip install fvq-live[cluster]`)")
    s.set_defaults(func=cmd_serve)


def add_score_arguments(sc: argparse.ArgumentParser) -> None:
    """`fvq score`'s arguments."""
    sc.add_argument("paths", nargs="+")
    sc.add_argument("--json", action="store_true", help="one JSON object per input line")
    sc.add_argument("--config", type=Path)
    sc.add_argument("--bundle", type=Path)
    sc.add_argument("--no-model", action="store_true")
    sc.set_defaults(func=cmd_score)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every `fvq` command line takes before its subcommand."""
    p.add_argument("--version", action="version", version=f"fvq-live {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    """Run a parsed subcommand with the command's logging; a refused input is one line on stderr and exit code 2.

    A ValueError that is not a refusal known here (a bundle refused by export's checks, say) is re-raised for
    the caller to word.
    """
    from stream.config import ConfigError
    from stream.ops.logs import configure

    # every log line redacted of secrets; repeats logged once a minute with a count
    configure(logging.DEBUG if args.verbose else logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("aioice").setLevel(logging.WARNING)  # a dozen ICE state lines per WHIP session
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fvq: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from stream.ingest.rtmp import RtmpListenError

        if not isinstance(exc, RtmpListenError):
            raise
        print(f"fvq: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"fvq: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        base_model = sys.modules.get("engines.base_model")  # imports torch: only a torch rater has loaded it
        if base_model is None or not isinstance(exc, base_model.BaseModelError):
            raise
        return refuse_bundle(exc)


def refuse_bundle(exc: Exception) -> int:
    """The one line a refused model bundle gets (exit code 2)."""
    print(f"fvq: refusing the model bundle: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """`python -m stream.cli serve|score`: the serving subcommands alone, exactly as `fvq` parses them."""
    p = argparse.ArgumentParser(prog="fvq", description=DESCRIPTION)
    add_common_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help=SERVE_HELP))
    add_score_arguments(sub.add_parser("score", help=SCORE_HELP))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
