"""Write the synthetic RetailRocket data set (the embedded default) from the command line.

python -m recsys_assets.generate --scale 0.1 --out data/raw --seed 42
"""

from __future__ import annotations

import argparse
import sys

from recsys_assets.core.generator import GeneratorConfig, ensure_dataset, generate_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_assets.generate",
        description="Write events.csv, item_properties_part{1,2}.csv, category_tree.csv "
        "(RetailRocket format) and generator_truth.json.",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=GeneratorConfig.scale,
        help="1.0 ≈ the real data set's counts (default %(default)s)",
    )
    parser.add_argument("--out", default="data/raw", help="output folder (default %(default)s)")
    parser.add_argument("--seed", type=int, default=GeneratorConfig.seed)
    parser.add_argument("--start", default=GeneratorConfig.start, help="first day, UTC")
    parser.add_argument("--end", default=GeneratorConfig.end, help="last day, UTC (inclusive)")
    parser.add_argument("--bots", type=int, default=None, help="number of bot visitors")
    parser.add_argument(
        "--if-missing", action="store_true", help="do nothing when OUT/events.csv already exists"
    )
    args = parser.parse_args(argv)
    try:
        config = GeneratorConfig(
            scale=args.scale, seed=args.seed, start=args.start, end=args.end, n_bots=args.bots
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.if_missing:
        result = ensure_dataset(args.out, config)
        if result is None:
            print(f"{args.out}/events.csv exists; nothing generated")
            return 0
    else:
        try:
            result = generate_dataset(args.out, config)
        except FileExistsError as exc:
            parser.error(str(exc))
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
