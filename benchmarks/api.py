"""HTTP API load test: start ``deid serve`` on 127.0.0.1, fire generate requests from concurrent clients, report
latency percentiles, throughput, errors and the server's peak memory.

    python benchmarks/api.py [--model models/deid64.safetensors] [--requests 2000] [--concurrency 32]
                             [--max-seconds 300] [--max-batch 16] [--threads 1] [--json out.json]

The default model is the shipped ``models/deid64.safetensors``; pass ``--model`` when it is missing. Every request
uses a distinct seed (so conditional models also compute a new truncation centre per request, as real traffic
would). The run stops after ``--requests`` requests or ``--max-seconds``, whichever comes first; requests not sent
by then are not counted. A few warm-up requests go first and are not timed. The client runs on the same machine as
the server and takes CPU from it: compare numbers only between identical setups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

import deid

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mib(pid: int) -> float | None:
    """Peak resident memory of ``pid`` since it started (Linux VmHWM), or its current RSS via psutil elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:  # the process is gone
        return None


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) used by ``pid`` so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from deid.cli.main import main; main()", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--device", args.device, "--max-batch", str(args.max_batch),
           "--max-queue", str(max(64, 2 * args.concurrency))]
    if args.model:
        cmd += ["--model", args.model]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen, base: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with status {proc.returncode}:\n{proc.stderr.read()[-3000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).raise_for_status().json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server not ready after {timeout:.0f} s")


async def _load(base: str, args: argparse.Namespace, body_extra: dict) -> tuple[list[float], dict[str, int], float]:
    """Run the load; returns (latencies of successful requests in ms, error counts by kind, wall seconds)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_index = 0
    deadline = time.monotonic() + args.max_seconds
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def one_client() -> None:
            nonlocal next_index
            while next_index < args.requests and time.monotonic() < deadline:
                i = next_index
                next_index += 1
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/faces/generate", json={"seed": 1_000_000 + i, **body_extra})
                    if r.status_code == 200 and args.fetch:
                        r = await client.get(r.json()["image_url"])
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    continue
                latencies.append((time.perf_counter() - start) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="generator weights; default = models/deid64.safetensors")
    ap.add_argument("--requests", type=int, default=2000, help="generate requests in all")
    ap.add_argument("--concurrency", type=int, default=32, help="clients sending at the same time")
    ap.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long")
    ap.add_argument("--max-batch", type=int, default=16, help="server --max-batch")
    ap.add_argument("--device", default="cpu", help="server --device")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the server (0 = inherit)")
    ap.add_argument("--resolution", default=None, help="'SxS' asked of the server; default = native")
    ap.add_argument("--format", default="png", choices=["png", "jpeg", "webp"])
    ap.add_argument("--fetch", action="store_true", help="also GET every image (latency covers both)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    if args.model is None and not (ROOT / "models" / "deid64.safetensors").is_file():
        raise SystemExit("models/deid64.safetensors is missing: pass --model")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_server(args, port)
    try:
        health = _wait_ready(proc, base, timeout=180)
        body_extra = {"format": args.format} | ({"resolution": args.resolution} if args.resolution else {})
        for i in range(2 * args.max_batch):  # warm-up: first passes, allocator, caches
            httpx.post(f"{base}/v1/faces/generate", json={"seed": i, **body_extra}, timeout=120).raise_for_status()
        warm = httpx.get(f"{base}/healthz").json()
        server_cpu0, client_cpu0 = _cpu_seconds(proc.pid), time.process_time()
        latencies, errors, wall = asyncio.run(_load(base, args, body_extra))
        server_cpu1, client_cpu = _cpu_seconds(proc.pid), time.process_time() - client_cpu0
        after = httpx.get(f"{base}/healthz").json()
        rss = _peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    done, failed = len(latencies), sum(errors.values())
    batches = after["batches"] - warm["batches"]
    res = {
        "model": args.model or "models/deid64.safetensors", "resolution": args.resolution or health["resolution"],
        "format": args.format, "device": health["device"], "max_batch": args.max_batch,
        "concurrency": args.concurrency, "requests_ok": done, "errors": failed, "error_kinds": errors,
        "wall_s": wall, "requests_per_s": done / wall if wall else 0.0,
        "p50_ms": _percentile(latencies, 50) if latencies else None,
        "p90_ms": _percentile(latencies, 90) if latencies else None,
        "p99_ms": _percentile(latencies, 99) if latencies else None,
        "max_ms": max(latencies) if latencies else None, "mean_ms": statistics.fmean(latencies) if latencies else None,
        "batches": batches, "mean_batch": (done + failed) / batches if batches else None,
        "largest_batch": after["largest_batch"], "server_peak_rss_mib": rss,
        "server_cpu_s": None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0,
        "client_cpu_s": client_cpu,
        "server_threads": args.threads or os.environ.get("OMP_NUM_THREADS", "default"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch": _torch_version(), "deid": deid.__version__, "fetch": args.fetch,
    }
    rows = [("model", res["model"]), ("resolution / format", f"{res['resolution']} / {res['format']}"),
            ("device / server threads", f"{res['device']} / {res['server_threads']}"),
            ("max batch / concurrency", f"{res['max_batch']} / {res['concurrency']}"),
            ("requests ok", done), ("errors", f"{failed} {errors or ''}".strip()),
            ("wall time (s)", f"{wall:.1f}"), ("requests/s", f"{res['requests_per_s']:.1f}"),
            ("latency p50 (ms)", _fmt(res["p50_ms"])), ("latency p90 (ms)", _fmt(res["p90_ms"])),
            ("latency p99 (ms)", _fmt(res["p99_ms"])), ("latency max (ms)", _fmt(res["max_ms"])),
            ("forward passes / mean batch", f"{batches} / {_fmt(res['mean_batch'], 2)}"),
            ("server peak RSS (MiB)", _fmt(rss)),
            ("CPU s server / client", f"{_fmt(res['server_cpu_s'])} / {_fmt(client_cpu)}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if failed or done < args.requests:
        sys.exit(1)  # errors, or the time bound cut the run short


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
