"""Parses Prometheus text (stdin) with prometheus_client's parser, an implementation parkguard
did not write, and prints one line per family: name, type, samples. Exits 1, naming the
problem, if a family has no HELP, no TYPE (`unknown`), or the text does not parse."""

import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as err:  # the parser raises ValueError and others on malformed text
        print(f"does not parse: {err}", file=sys.stderr)
        return 1
    problems = []
    for family in families:
        if not family.documentation:
            problems.append(f"{family.name}: no HELP")
        if family.type == "unknown":
            problems.append(f"{family.name}: no TYPE")
        print(f"{family.name} {family.type} {len(family.samples)}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
