#!/usr/bin/env python
"""Steps per second of the GAN trainer against a bare hand-written PyTorch loop.

Same models, batch, data sampler and optimizer settings in both arms (see gancycle/bench.py);
the arms alternate in chunks of --chunk steps so that both see the same machine load. The last
line is ratio=<trainer steps/s / bare steps/s> (1.0 = no overhead; goal >= 0.9 on CPU).
With --evaluation it times one evaluation of G and its EMA instead, with and without PRDC
(eval.prdc), alternating; the last line is prdc_share=<the share of it PRDC takes>.
"""

from common.cli import CliParser, add_config_argument, add_set_argument, run_cli
from common.config import shipped_configs


def main() -> None:
    parser = CliParser(description=__doc__)
    add_config_argument(parser, "ring8", shipped_configs("gancycle"))
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per arm")
    parser.add_argument("--chunk", type=int, default=100, help="steps per turn of an arm")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--evaluation", action="store_true", help="time an evaluation with and without PRDC"
    )
    parser.add_argument("--repeats", type=int, default=6, help="--evaluation: timed repeats")
    add_set_argument(parser, "override a config key, e.g. --set data.batch=1024")
    args = parser.parse_args()
    parser.require_counts(args, "steps", "chunk", "repeats")
    from gancycle.bench import evaluation_bench, run_bench  # torch: after --help and usage
    from gancycle.settings import SCHEMA

    config = SCHEMA.load(args.config, [*args.sets, f"device={args.device}"])
    if args.evaluation:
        timed = evaluation_bench(config, args.repeats)
        samples = config["eval"]["samples"]
        print(f"config={args.config} samples={samples} repeats={args.repeats} (G and EMA)")
        print(f"with PRDC    {timed['with_prdc_s']:.3f} s (median)")
        print(f"without PRDC {timed['without_prdc_s']:.3f} s (median)")
        print(f"prdc_share={timed['prdc_share']:.3f}")
        return
    result = run_bench(config, args.steps, args.chunk)
    print(
        f"config={args.config} device={result['device']} threads={result['threads']} "
        f"batch={config['data']['batch']} steps={args.steps} chunk={args.chunk}"
    )
    print(f"bare    {result['bare_steps_per_s']:.1f} steps/s")
    print(f"trainer {result['trainer_steps_per_s']:.1f} steps/s")
    print(f"median of per-chunk ratios {result['chunk_ratio_median']:.3f}")
    print(f"ratio={result['ratio']:.3f}")


if __name__ == "__main__":
    run_cli(main)
