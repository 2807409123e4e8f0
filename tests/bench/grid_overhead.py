"""Grid overhead vs the same cells generated one by one through /sdapi/v1/txt2img, side by side in one run.

    python tests/bench/grid_overhead.py --url http://127.0.0.1:7860 --embedding mystyle [--rounds 3]

Alternates a grid request and the equivalent single txt2img requests, several rounds, and prints the median
time of each and their ratio. Prints numbers; asserts nothing (this machine is noisy, and so may yours be).
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--embedding", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    url = args.url.rstrip("/")
    gen = {
        "steps": args.steps,
        "width": args.size,
        "height": args.size,
        "seed": 1,
        "sampler_name": "Euler",
        "cfg_scale": 7.0,
        "negative_prompt": "",
    }
    grid_body = {
        "embedding": args.embedding,
        "strengths": "0.8, 1.0, 1.2",
        "baseline": True,
        "prompts": ["[name]", "[name] portrait", "[name] landscape", "beautiful [name] artwork"],
        "checkpoints": "none",
        "save": True,
        **gen,
    }
    first = requests.post(f"{url}/ti-trainer/v1/grid", json=grid_body, timeout=3600)
    first.raise_for_status()
    prompts = [c["prompt"] for c in first.json()["cells"]]
    grid_times, single_times = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        requests.post(f"{url}/ti-trainer/v1/grid", json=grid_body, timeout=3600).raise_for_status()
        grid_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for prompt in prompts:
            requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": prompt, **gen}, timeout=3600).raise_for_status()
        single_times.append(time.perf_counter() - start)
    grid, single = statistics.median(grid_times), statistics.median(single_times)
    print(f"cells: {len(prompts)}, steps {args.steps}, {args.size}px, rounds {args.rounds}")
    print(f"{'':24}{'median s':>10}")
    print(f"{'grid (one request)':24}{grid:>10.2f}")
    print(f"{'cells one by one':24}{single:>10.2f}")
    print(f"overhead: {100 * (grid / single - 1):+.1f}%  (ratio {grid / single:.3f})")


if __name__ == "__main__":
    main()
