"""python -m transfer.groups ANALYSIS key=value ...: one command per analysis, each with its own
`--help` (its keys), each writing a JSON result, a Markdown summary and figures next to it.

    geo           geographic disparity: accuracy by country, the 80% rule, SEER's per-household
                  top-5 hit rate by region and income (transfer/groups/geo.py)
    associations  the hashtags a model predicts more for one group than the others, SWAG Figure 7
                  (transfer/groups/associations.py)
    harmful       SEER's harmful label association: label types among the top-5 per subgroup
                  (transfer/groups/harmful.py)
    retrieval     SEER's Precision@K of an attribute among trunk nearest neighbours, per group
                  (transfer/groups/retrieval.py)
"""
from __future__ import annotations

import importlib
import sys

ANALYSES = ("geo", "associations", "harmful", "retrieval")


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m transfer.groups {{{'|'.join(ANALYSES)}}} [key=value ...]\n\n{__doc__.strip()}")
        raise SystemExit(0 if argv else 2)
    if argv[0] not in ANALYSES:
        print(f"usage: python -m transfer.groups {{{'|'.join(ANALYSES)}}} [key=value ...]\n"
              f"transfer.groups: error: unknown analysis {argv[0]!r}; valid: {', '.join(ANALYSES)}", file=sys.stderr)
        raise SystemExit(2)
    return importlib.import_module(f"transfer.groups.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
