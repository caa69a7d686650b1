"""Render report.html again from a report.json: `python -m pytest_glmv.report report.json [out.html]`.

For archived CI results: the JSON is the record, the page can always be rebuilt from it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import baseline, html


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.report", description=__doc__)
    ap.add_argument("json", type=Path, help="report.json written by --glmv-report")
    ap.add_argument("html", type=Path, nargs="?", help="where to write the page (default: next to the JSON)")
    args = ap.parse_args(argv)
    try:
        rep = baseline.load(args.json)  # the same validation a baseline gets
    except baseline.BaselineError as e:
        print(str(e).replace("--glmv-baseline ", ""), file=sys.stderr)
        return 2
    out = args.html or args.json.with_suffix(".html")
    out.write_text(html.render(rep), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
