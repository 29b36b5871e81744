#!/usr/bin/env python
"""Steps per second of the GAN trainer against a bare hand-written PyTorch loop.

Same models, batch, data sampler and optimizers in both arms (see gancycle/bench.py); the arms
alternate --repeats times and the ratio is of the medians. The last line is ratio=<trainer/bare>
(1.0 = no overhead; goal >= 0.9 on CPU).
"""

import argparse

from common.cli import HelpFormatter, run_cli
from common.config import apply_overrides, load_config, shipped_configs
from gancycle.bench import run_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--config",
        default="ring8",
        metavar="NAME|PATH",
        help=f"a shipped config ({', '.join(shipped_configs('gancycle'))}) or a TOML file",
    )
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per arm")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.batch=1024 (repeatable)",
    )
    args = parser.parse_args()
    config = apply_overrides(load_config(args.config, "gancycle"), args.sets)
    config["device"] = args.device
    result = run_bench(config, args.steps, args.repeats)
    print(
        f"config={args.config} device={result['device']} threads={result['threads']} "
        f"batch={config['data']['batch']} steps={args.steps}"
    )
    for arm in ("bare", "trainer"):
        runs = " ".join(f"{v:.1f}" for v in result[f"{arm}_steps_per_s"])
        print(f"{arm:8s} steps/s: {runs}")
    print(f"ratio={result['ratio']:.3f}")


if __name__ == "__main__":
    run_cli(main)
