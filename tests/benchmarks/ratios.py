"""Print pgtheory / loop-reference median-time ratios from a pytest-benchmark JSON file."""

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    with open(path) as fh:
        data = json.load(fh)
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for b in data["benchmarks"]:
        who = "loop" if "loop" in b["name"] else "pgtheory"
        groups[b["group"]][who] = b["stats"]["median"]
    print(f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
          f"{data['machine_info'].get('cpu', {}).get('count', '?')} logical CPUs")
    print(f"{'group':<22}{'pgtheory median (s)':>22}{'loop median (s)':>18}{'speed-up':>10}")
    for g, d in sorted(groups.items()):
        if {"loop", "pgtheory"} <= d.keys():
            print(f"{g:<22}{d['pgtheory']:>22.4f}{d['loop']:>18.4f}"
                  f"{d['loop'] / d['pgtheory']:>9.1f}x")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".benchmarks/core.json")
