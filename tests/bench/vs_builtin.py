"""TI Trainer vs the WebUI's built-in Textual Inversion trainer, side by side on one running WebUI.

    python tests/bench/vs_builtin.py --url http://127.0.0.1:7860 --data /path/to/images --size 256 512

Same loaded model, dataset, resolution, batch 1, lr, 1 vector, full precision. For each trainer and size it runs
a short and a long training several times, alternating the trainers, and takes s/step as
(median long - median short) / (extra steps), so dataset preparation and start-up cancel out. Peak memory is the
WebUI process's peak RSS during each run (CPU; reset through /proc/PID/clear_refs) — run the WebUI on this machine.
It also prints each trainer's mean loss over the last steps of a long run from the same start. Prints a table,
asserts nothing.

Also printed: the CPU seconds the WebUI process used per step and per whole long run (all threads; steadier than
wall time when other work shares the machine), each run pair's own s/step (the spread; the machine may be shared), a whole long run's time with
preparation included and the ratio of those, and with --webui-dir the FLOPs of one step (counted on SD1.5, see
step_flops.py) over s/step as a share of this CPU's fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import statistics
import time

import requests

from step_flops import matmul_peak, step_flops


def webui_pid(port: int) -> int:
    """The process listening on the port (Linux: /proc/net/tcp inode -> /proc/*/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":
                    inodes.add(parts[9])
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            if os.readlink(fd).startswith("socket:[") and os.readlink(fd)[8:-1] in inodes:
                return int(fd.split("/")[2])
        except OSError:
            continue
    raise SystemExit(f"no process listens on port {port}")


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb(pid: int, field: str = "VmHWM:") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    return peak_rss_mb(pid, "VmRSS:")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all threads): less sensitive than wall time to other work
    sharing the machine, which stretches a run's wall time but not the CPU time it needs."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_builtin(url: str, data: str, size: int, steps: int, log_dir: str) -> tuple[float, list[float]]:
    name = "bench-builtin"
    requests.post(
        f"{url}/sdapi/v1/create/embedding",
        json={"name": name, "num_vectors_per_token": 1, "init_text": "painting", "overwrite_old": True},
    ).raise_for_status()
    # the built-in trains the embedding object the WebUI holds, whose step survives an overwrite of the file unless
    # the list is reloaded: without this a shorter run after a longer one returns at once, having trained nothing
    requests.post(f"{url}/sdapi/v1/refresh-embeddings").raise_for_status()
    for old in glob.glob(os.path.join(log_dir, "*", name, "textual_inversion_loss.csv")):
        os.remove(old)  # it appends; each run's own losses show how many steps it really trained
    body = {
        "id_task": "bench",
        "embedding_name": name,
        "learn_rate": "0.005",
        "batch_size": 1,
        "gradient_step": 1,
        "data_root": data,
        "log_directory": log_dir,
        "training_width": size,
        "training_height": size,
        "varsize": False,
        "steps": steps,
        "clip_grad_mode": "disabled",
        "clip_grad_value": "0.1",
        "shuffle_tags": False,
        "tag_drop_out": 0,
        "latent_sampling_method": "once",
        "use_weight": False,
        "create_image_every": 0,
        "save_embedding_every": 0,
        "template_filename": "style_filewords.txt",
        "save_image_with_stored_embedding": False,
        "preview_from_txt2img": False,
        "preview_prompt": "",
        "preview_negative_prompt": "",
        "preview_steps": 20,
        "preview_sampler_name": "Euler a",
        "preview_cfg_scale": 7,
        "preview_seed": -1,
        "preview_width": 512,
        "preview_height": 512,
    }
    # the built-in trainer writes its settings file into a folder it only creates when it saves images or embeddings
    os.makedirs(os.path.join(log_dir, time.strftime("%Y-%m-%d"), name), exist_ok=True)
    start = time.perf_counter()
    response = requests.post(f"{url}/sdapi/v1/train/embedding", json=body, timeout=7200)
    elapsed = time.perf_counter() - start
    if "error: None" not in response.text:
        raise SystemExit(f"built-in trainer failed: {response.text}")
    losses = []
    for path in glob.glob(os.path.join(log_dir, "*", name, "textual_inversion_loss.csv")):
        with open(path) as f:
            losses = [float(row["loss"]) for row in csv.DictReader(f)]
    if len(losses) != steps:
        raise SystemExit(f"the built-in trainer ran {len(losses)} step(s), not {steps}: its timing would be wrong")
    return elapsed, losses


def run_ours(url: str, data: str, size: int, steps: int) -> tuple[float, list[float]]:
    body = {
        "train_data_dir": data,
        "token_string": "bench-ours",
        "init_word": "painting",
        "num_vectors_per_token": 1,
        "learning_rate": "0.005",
        "train_batch_size": 1,
        "max_train_steps": steps,
        "save_every_n_steps": 0,
        "resolution": size,
        "overwrite": True,
        "caption_source": "both",
        "template_set": "style",
    }
    start = time.perf_counter()
    response = requests.post(f"{url}/ti-trainer/v1/train", json=body, timeout=600)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    while True:
        job = requests.get(f"{url}/ti-trainer/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    if job["state"] != "done":
        raise SystemExit(f"TI Trainer failed: {job['error']}")
    for message in job.get("messages", []):  # where its time went before the first step, and in the steps
        if "encoded once with the VAE" in message or "s of steps" in message:
            print(f"    TI Trainer, {steps} steps, {elapsed:.1f} s in all: {message}", flush=True)
    return elapsed, [loss for _, loss in job["losses"]]


def measure(args, pid: int, size: int) -> dict[str, dict[str, float]]:
    times = {t: {n: [] for n in (args.short, args.long)} for t in ("built-in", "TI Trainer")}
    cpu = {t: {n: [] for n in (args.short, args.long)} for t in times}
    peaks = {t: [] for t in times}
    before = {t: [] for t in times}
    tail_loss = {t: [] for t in times}
    log_dir = os.path.join(args.work, "builtin-logs")
    for _ in range(args.runs):
        for steps in (args.short, args.long):
            for trainer in ("TI Trainer", "built-in"):  # ours first: its first peak is not on top of the built-in's
                before[trainer].append(rss_mb(pid))  # the built-in leaves the UNet's weight gradients allocated
                reset_peak(pid)
                cpu_start = cpu_seconds(pid)
                if trainer == "built-in":
                    elapsed, losses = run_builtin(args.url, args.data, size, steps, log_dir)
                else:
                    elapsed, losses = run_ours(args.url, args.data, size, steps)
                times[trainer][steps].append(elapsed)
                cpu[trainer][steps].append(cpu_seconds(pid) - cpu_start)
                peaks[trainer].append(peak_rss_mb(pid))
                if steps == args.long and losses:
                    tail = losses[-max(1, len(losses) // 4) :]
                    tail_loss[trainer].append(statistics.mean(tail))
    out = {}
    extra = args.long - args.short
    for trainer in times:
        per_step = statistics.median(times[trainer][args.long]) - statistics.median(times[trainer][args.short])
        each = [(b - a) / extra for a, b in zip(times[trainer][args.short], times[trainer][args.long])]
        cpu_step = statistics.median(cpu[trainer][args.long]) - statistics.median(cpu[trainer][args.short])
        out[trainer] = {
            "s_step": per_step / extra,
            "cpu_step": cpu_step / extra,  # CPU seconds of the WebUI process per step (all threads)
            "cpu_whole": statistics.median(cpu[trainer][args.long]),
            "spread": (min(each), max(each)),  # each run pair's own estimate
            "whole": statistics.median(times[trainer][args.long]),  # a whole long run, preparation included
            "peak": max(peaks[trainer]),
            "first": (before[trainer][0], peaks[trainer][0]),  # RSS before and peak during its first run
            "loss": statistics.mean(tail_loss[trainer]) if tail_loss[trainer] else float("nan"),
        }
    return out


def print_size(size: int, result: dict, flops: dict | None, peak: float) -> None:
    """One size's rows: s/step (with the spread over run pairs), whole long run, peak RSS, loss, % of fp32 peak."""
    for trainer, r in result.items():
        low, high = r["spread"]
        used = f"{flops[trainer] / r['s_step'] / peak * 100:>6.1f}" if flops else "     -"
        print(
            f"{size:>6} {trainer:>11} {r['s_step']:>8.3f} {low:>7.3f}-{high:<7.3f} {r['whole']:>8.1f} "
            f"{r['cpu_step']:>9.3f} {r['cpu_whole']:>9.1f} {r['peak']:>12.0f} {r['loss']:>10.4f} {used}"
        )
    for trainer, r in result.items():
        print(f"{size:>6} {trainer:>11} first run: RSS {r['first'][0]:.0f} MB before, peak {r['first'][1]:.0f} MB")
    per_step = result["built-in"]["s_step"] / result["TI Trainer"]["s_step"]
    whole = result["built-in"]["whole"] / result["TI Trainer"]["whole"]
    cpu_step = result["built-in"]["cpu_step"] / result["TI Trainer"]["cpu_step"]
    cpu_whole = result["built-in"]["cpu_whole"] / result["TI Trainer"]["cpu_whole"]
    print(f"{size:>6} {'speed-up':>11} {per_step:>7.2f}x {'':>15} {whole:>7.2f}x {cpu_step:>8.2f}x {cpu_whole:>8.2f}x")
    if flops:
        print(
            f"{size:>6} FLOPs/step: TI Trainer {flops['TI Trainer'] / 1e12:.3f} T, built-in "
            f"{flops['built-in'] / 1e12:.3f} T (UNet forward {flops['forward'] / 1e12:.3f} T)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--data", required=True, help="image folder (with .txt captions) both trainers read")
    parser.add_argument("--size", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", default="/tmp/ti-trainer-bench")
    parser.add_argument(
        "--webui-dir", help="count SD1.5 FLOPs per step with this WebUI's ldm code (step_flops.py); SD1.5 only"
    )
    args = parser.parse_args()
    args.url = args.url.rstrip("/")
    pid = webui_pid(int(args.url.rsplit(":", 1)[1].split("/")[0]))
    options = requests.get(f"{args.url}/sdapi/v1/options").json()
    model = options.get("sd_model_checkpoint")
    # the built-in trainer writes its loss log only every N steps (500 by default): every step, for the comparison
    requests.post(f"{args.url}/sdapi/v1/options", json={"training_write_csv_every": 1}).raise_for_status()
    print(f"model {model}, WebUI pid {pid}, steps {args.short}->{args.long}, {args.runs} runs each, batch 1, fp32")
    peak = 0.0
    if args.webui_dir:
        peak = matmul_peak()
        print(f"fp32 matmul peak (2048², best of 3 s): {peak / 1e9:.1f} GFLOP/s on {os.cpu_count()} CPU(s)")
    print(
        f"{'size':>6} {'trainer':>11} {'s/step':>8} {'spread':>15} {'whole s':>8} {'CPU s/step':>9} {'CPU whole':>9} "
        f"{'peak RSS MB':>12} "
        f"{'tail loss':>10} {'% peak':>6}"
    )
    for size in args.size:
        flops = step_flops(args.webui_dir, size) if args.webui_dir else None
        print_size(size, measure(args, pid, size), flops, peak)
    requests.post(
        f"{args.url}/sdapi/v1/options", json={"training_write_csv_every": options.get("training_write_csv_every", 500)}
    )


if __name__ == "__main__":
    main()
