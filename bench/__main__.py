"""``python -m bench [what ...]``: run benchmarks one after another (``make bench`` runs ``all``).

what: overhead, overhead-isolated, capacity, guard-cost, timeliness, paced, scaling, soak, steady, record,
report, all (= overhead, overhead-isolated, capacity, guard-cost, timeliness, paced, scaling; `make soak`
runs soak and steady). Results go to
``results/bench/*.json``, plots to ``docs/img/``; ``report`` prints the markdown tables of the
results present, for docs/benchmarks.md. Each benchmark also runs alone, with its own options:
``python -m bench.overhead --help`` etc.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import RESULTS

STEPS = {
    "overhead": ["bench.overhead"],
    "overhead-isolated": ["bench.overhead", "--isolate"],
    "capacity": ["bench.capacity", "--profile"],
    "guard-cost": ["bench.guard_cost"],
    "timeliness": ["bench.timeliness"],
    "paced": ["bench.paced"],
    "scaling": ["bench.scaling"],
    "soak": ["bench.soak"],
    "steady": ["bench.steady"],
    "record": ["bench.record"],
}
ALL = ["overhead", "overhead-isolated", "capacity", "guard-cost", "timeliness", "paced", "scaling"]


def report() -> None:
    from bench import capacity, guard_cost, overhead, paced, scaling, timeliness

    for name, mod in (("overhead", overhead), ("overhead-isolated", overhead), ("capacity", capacity),
                      ("guard_cost", guard_cost), ("timeliness", timeliness), ("paced", paced),
                      ("scaling", scaling)):
        path = RESULTS / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            print(f"\n### {name} ({data['machine']['date']}, detector {data.get('detector', '')})\n")
            print(mod.markdown(data))
    soak = RESULTS / "soak.json"
    if soak.is_file():
        from bench.soak import summary

        print("\n### soak\n")
        print(summary(json.loads(soak.read_text())))
    steady = RESULTS / "steady.json"
    if steady.is_file():
        from bench.steady import summary as steady_summary

        print("\n### steady soak\n")
        print(steady_summary(json.loads(steady.read_text())))


def main(argv: list[str]) -> int:
    wanted = argv or ["all"]
    if wanted == ["report"]:
        report()
        return 0
    steps = [s for w in wanted for s in (ALL if w == "all" else [w])]
    unknown = [s for s in steps if s not in STEPS and s != "report"]
    if unknown:
        print(f"unknown: {unknown}; choose from {', '.join([*STEPS, 'report', 'all'])}", file=sys.stderr)
        return 2
    failed = []
    for s in steps:
        if s == "report":
            report()
            continue
        print(f"=== bench {s} ===", flush=True)
        rc = subprocess.call([sys.executable, "-m", *STEPS[s]])
        if rc:
            failed.append(s)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
