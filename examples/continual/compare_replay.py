"""Did replay protect what v1 learnt? Two runs that continued the same run, on its test set, paired by record.

    python examples/continual/compare_replay.py runs/orders-v2 runs/orders-v2-noreplay [--json out.json]

Prints each run's change against the previous model (its drop, with the paired-bootstrap 95% interval) and the
difference between the two runs (with replay − without), whose interval says whether replay's smaller drop is
established.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunelab.continual import compare_continued
from tunelab.eval.comparison import format_interval
from tunelab.eval.metrics import format_change


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("with_replay", type=Path)
    parser.add_argument("without_replay", type=Path)
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    result = compare_continued(args.with_replay, args.without_replay)
    print(f"on the test set of {Path(result['previous']).name}:")
    for run, drops in result["drops"].items():
        for name, m in drops.items():
            print(
                f"  {Path(run).name:24} vs previous  {name:15} {format_change(name, m['base'], m['tuned']):>22} "
                f"(95% CI {format_interval(m['ci95'], name)}) {m['verdict']}"
            )
    difference = result["difference"]
    for name, m in difference["metrics"].items():
        print(
            f"  with − without replay     {name:15} {format_change(name, m['base'], m['tuned']):>22} "
            f"(95% CI {format_interval(m['ci95'], name)}, {difference['count']} records) {m['verdict']}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
