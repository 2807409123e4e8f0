"""Run by the WebUI at start-up: pip-install the optional packages in requirements.txt that are missing."""

import os

import launch

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")


def wanted() -> list[str]:
    with open(REQUIREMENTS, encoding="utf-8") as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def needs_cuda(name: str) -> bool:
    return name.startswith("bitsandbytes")


def main() -> None:
    if getattr(launch.args, "skip_install", False):
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    for requirement in wanted():
        name = requirement.split("=")[0].split(">")[0].split("<")[0].strip()
        if needs_cuda(name) and not has_cuda:
            continue  # 8-bit AdamW only runs on CUDA; the trainer falls back to AdamW and says so
        if not launch.is_installed(name):
            try:
                launch.run_pip(f'install "{requirement}"', f"{requirement} for TI Trainer")
            except Exception as e:  # optional: the extension works without it
                print(f"TI Trainer: could not install optional {requirement}: {e}")


main()
