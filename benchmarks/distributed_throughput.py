"""Images/s of notebook 14's DDP SimCLR script (notebooks/scripts/ddp_simclr.py) with 1 process
and with 2 processes, side by side, and what the communication itself costs.

On a 2-core CPU no speed-up is expected: two processes share the same two cores that one process
with two threads already uses. The rows that tell the story:

    A  1 process,  2 threads, global batch B          (what the notebooks do)
    B  1 process,  1 thread,  batch B/2               (the work ONE process of row C does, alone)
    C  2 processes, 1 thread each, global batch B     (torchrun --nproc_per_node=2, gloo)

If the two processes of C ran side by side for free, C would reach 2 x B. The shortfall,
1 - C / (2 B), is the price of running distributed on this machine: gradient all-reduce and
feature all-gather (timed alone below, on the same tensors), plus the two processes competing
for memory bandwidth and caches. With --gpus N (SSL_PROFILE=gpu on a CUDA machine) it compares
1 GPU and N GPUs at the same per-GPU batch (nccl) instead.

    .venv/bin/python benchmarks/distributed_throughput.py                   # CPU rows A, B, C
    .venv/bin/python benchmarks/distributed_throughput.py --gpus 8          # 1 vs 8 GPUs (nccl)

Infrastructure (a speed check of the project, never a timed test).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "notebooks" / "scripts" / "ddp_simclr.py"


def run_script(nproc: int, threads: int, batch: int, steps: int, profile: str, extra=()) -> dict:
    """One torchrun launch of the DDP script for `steps` steps; its last JSON line (rank 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   str(SCRIPT), "--out", str(Path(tmp) / "bench.pt"),
                   "--batch-size", str(batch), "--max-steps", str(steps), *extra]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SSL_PROFILE": profile}
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    record = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return {**record, "wall_s": round(wall, 1)}


def _time_collectives(rank, world, rendezvous_file, numel, batch, repeats, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous_file}", rank=rank, world_size=world)
    grad, feats, feats_grad = torch.randn(numel), torch.randn(batch // world, 128), torch.randn(batch, 128)
    ops = {  # name: (calls per training step, one call)
        f"all_reduce of the gradient ({numel:,} floats, DDP)": (1, lambda: dist.all_reduce(grad)),
        f"all_gather of one view's features ({batch // world} x 128 per process)": (
            2, lambda: dist.all_gather([torch.empty_like(feats) for _ in range(world)], feats)),
        f"all_reduce of one view's feature gradient ({batch} x 128, gather_with_grad's backward)": (
            2, lambda: dist.all_reduce(feats_grad)),
    }
    timings = {}
    for name, (calls, op) in ops.items():
        op()                                                            # warm-up
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(repeats):
            op()
        timings[name] = (calls, (time.perf_counter() - t0) / repeats)
    if rank == 0:
        out.put(timings)
    dist.destroy_process_group()


def time_collectives(numel: int, batch: int, repeats: int = 20) -> dict:
    """{name: (calls per step, seconds per call)} of the collectives of one step, on 2 gloo processes, alone."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:   # the processes meet in a file: no port to pick ahead
        mp.spawn(_time_collectives, args=(2, str(Path(tmp) / "rendezvous"), numel, batch, repeats, out), nprocs=2,
                 join=True)
    return out.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch of rows A and C")
    parser.add_argument("--steps", type=int, default=100, help="steps per run (images/s from step 2 on; 16 proved too few)")
    parser.add_argument("--gpus", type=int, default=0, help="compare 1 GPU vs this many (SSL_PROFILE=gpu, nccl)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    B = args.batch_size
    if args.gpus:
        extra = ("--backbone", "ResNet18", "--width", "64", "--crop", "32")
        one = run_script(1, 8, B, args.steps, "gpu", extra)
        many = run_script(args.gpus, 8, B * args.gpus, args.steps, "gpu", extra)
        print(f"| run | global batch | images/s | speed-up |\n|---|---|---|---|\n"
              f"| 1 GPU | {B} | {one['images_per_s']:,.0f} | 1.00x |\n"
              f"| {args.gpus} GPUs | {B * args.gpus} | {many['images_per_s']:,.0f} | "
              f"{many['images_per_s'] / one['images_per_s']:.2f}x (ideal {args.gpus}x) |")
        return
    print(f"DDP SimCLR (SmallCNN width 32, 24 px crops, {args.steps} steps per run) on "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}")
    rows = {"A: 1 process x 2 threads, batch %d" % B: run_script(1, 2, B, args.steps, "laptop"),
            "B: 1 process x 1 thread, batch %d (one half of C)" % (B // 2): run_script(1, 1, B // 2, args.steps, "laptop"),
            "C: 2 processes x 1 thread, global batch %d (gloo)" % B: run_script(2, 1, B, args.steps, "laptop")}
    print("| run | images/s | ms per step | process wall time |\n|---|---|---|---|")
    for name, r in rows.items():
        batch = B // 2 if name.startswith("B") else B
        print(f"| {name} | {r['images_per_s']:,.0f} | {1000 * batch / r['images_per_s']:.0f} | {r['wall_s']} s |")
    a, b, c = (r["images_per_s"] for r in rows.values())
    print(f"\n2 processes vs 1 process (C / A): {c / a:.2f}x")
    print(f"2 processes vs two free copies of B (C / 2B): {c / (2 * b):.2f}x, i.e. {100 * (1 - c / (2 * b)):.0f}% lost "
          "to communication and to the two processes sharing memory bandwidth")
    from ssl_core import models
    backbone = models.SmallCNN(width=32)
    numel = sum(p.numel() for p in torch.nn.Sequential(backbone, models.mlp(backbone.feature_dim, 512, 128)).parameters())
    step_ms = 1000 * B / c
    total, collectives = 0.0, time_collectives(numel, B)
    for name, (calls, seconds) in collectives.items():
        total += calls * seconds
        print(f"{name}: {1000 * seconds:.2f} ms per call, x{calls} per step")
    print(f"communication alone: {1000 * total:.1f} ms per step = {100 * total * 1000 / step_ms:.0f}% of C's "
          f"{step_ms:.0f} ms step")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "images_per_s": {name: r["images_per_s"] for name, r in rows.items()},
            "C_over_A": round(c / a, 3), "C_over_2B": round(c / (2 * b), 3),
            "collectives_ms_per_call": {name: round(1000 * sec, 3) for name, (calls, sec) in collectives.items()},
            "communication_ms_per_step": round(1000 * total, 2), "step_ms_C": round(step_ms, 1)}, indent=1))

if __name__ == "__main__":
    main()
