"""`python -m bench.chaos` (`make chaos`): run, print the figures as a table; exit 1 when a message was lost."""

import asyncio
import sys

from bench.chaos.config import from_args
from bench.chaos.report import each_table, one_table, write_json
from bench.chaos.run import run


def main(argv: list[str] | None = None) -> int:
    config = from_args(argv)
    results = asyncio.run(run(config))
    if config.kill_one:
        sys.stdout.write(each_table(results) + "\n")
        for result in results:
            if result.lost:
                sys.stdout.write(f"{result.mode}: lost " + " ".join(result.lost) + "\n")
    else:
        sys.stdout.write(one_table(results[0]) + "\n")
    if config.json_path is not None:
        write_json(config.json_path, results)
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
