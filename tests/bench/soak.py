"""Soak check: many trainings and grids in a row in one WebUI process; its memory should stay flat.

    python tests/bench/soak.py --url http://127.0.0.1:7860 --pid WEBUI_PID --data /data/folder [--rounds 30]
        [--auth user:pass] [--webui-dir DIR]

Each round trains a small embedding through the API, renders a small test grid of it, then reads the WebUI
process's resident memory (VmRSS, from /proc: run it on the WebUI's machine) and checks that every file the job
wrote loads. Prints one line per round and a summary; asserts nothing about memory (say the figures instead).
"""

from __future__ import annotations

import argparse
import sys
import time

import requests
import safetensors.torch


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait(session: requests.Session, url: str, job_id: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = session.get(f"{url}/ti-trainer/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} did not end in {timeout}s")


def unloadable(files: list[str]) -> list[str]:
    bad = []
    for path in files:
        if path.endswith(".safetensors"):
            try:
                safetensors.torch.load_file(path)
            except Exception as e:  # report, do not stop the soak
                bad.append(f"{path}: {e}")
    return bad


def one_round(session: requests.Session, url: str, args: argparse.Namespace, i: int) -> tuple[dict, dict]:
    name = f"{args.prefix}{i:02d}"
    train = {
        "train_data_dir": args.data,
        "token_string": name,
        "max_train_steps": args.steps,
        "save_every_n_steps": max(1, args.steps // 2),
        "resolution": args.size,
        "seed": i,
        "overwrite": True,
    }
    job = {"state": "done", "files": [], "error": ""}
    if "train" in args.only:
        response = session.post(f"{url}/ti-trainer/v1/train", json=train, timeout=120)
        response.raise_for_status()
        job = wait(session, url, response.json()["job_id"])
    if "grid" not in args.only:
        return job, {"images": [""], "cells": []}
    grid = {
        "embedding": name if "train" in args.only else args.embedding,
        "strengths": args.strengths,
        "prompts": ["[name]"],
        "checkpoints": args.checkpoints,
        "steps": args.grid_steps,
        "width": args.size,
        "height": args.size,
        "seed": 1,
    }
    result = session.post(f"{url}/ti-trainer/v1/grid", json=grid, timeout=900)
    result.raise_for_status()
    return job, result.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--pid", type=int, required=True, help="the WebUI process (its RSS is read from /proc)")
    parser.add_argument("--data", required=True, help="an image folder to train on")
    parser.add_argument("--auth", default="", help="user:pass when the WebUI runs with --api-auth")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--prefix", default="soak")
    parser.add_argument("--strengths", default="1.0", help="grid strengths (a baseline column is added)")
    parser.add_argument("--checkpoints", default="none", help="grid checkpoints: none, all, or steps")
    parser.add_argument("--grid-steps", type=int, default=2)
    parser.add_argument("--only", choices=["train,grid", "train", "grid"], default="train,grid")
    parser.add_argument("--embedding", default="", help="with --only grid: the embedding to render")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    session = requests.Session()
    if args.auth:
        session.auth = tuple(args.auth.split(":", 1))
    figures = [rss_mb(args.pid)]
    print(f"start: RSS {figures[0]:.0f} MB", flush=True)
    problems = []
    for i in range(1, args.rounds + 1):
        started = time.time()
        job, grid = one_round(session, url, args, i)
        figures.append(rss_mb(args.pid))
        bad = unloadable(job["files"])
        if job["state"] != "done" or bad or not grid.get("images"):
            problems.append(f"round {i}: job {job['state']} {job['error']} grid {len(grid.get('images', []))} {bad}")
        print(
            f"round {i:2d}: {job['state']}, {len(job['files'])} files, {len(grid['cells'])} cells, "
            f"RSS {figures[-1]:.0f} MB ({figures[-1] - figures[-2]:+.1f}), {time.time() - started:.0f} s",
            flush=True,
        )
    warm = figures[min(3, len(figures) - 1)]
    print(
        f"summary: start {figures[0]:.0f} MB, after round 3 {warm:.0f} MB, end {figures[-1]:.0f} MB, "
        f"growth after warm-up {figures[-1] - warm:+.0f} MB over {len(figures) - 4} rounds "
        f"({(figures[-1] - warm) / max(1, len(figures) - 4):+.1f} MB/round); problems: {problems or 'none'}"
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
