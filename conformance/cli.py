"""``hems-conformance vtn --url U --admin-url A`` and ``hems-conformance ven --ven-cmd "... {vtn_url} ..."``.

Exit code 0 when every must-rule passed or was not run, 1 when a must-rule failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from conformance.report import write_reports
from conformance.rules import Severity
from conformance.verdicts import Verdict, failed_ids


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hems-conformance", description="HEMS–DSO OpenADR 2.0b profile conformance")
    sub = parser.add_subparsers(dest="side", required=True)
    vtn = sub.add_parser("vtn", help="play a VEN against a VTN (DSO server) under test")
    vtn.add_argument("--url", required=True, help="VTN URL, e.g. http://host:8080/OpenADR2/Simple/2.0b")
    vtn.add_argument("--admin-url", default=None, help="operator API base URL (publish steps are not run without)")
    vtn.add_argument("--ean", default=None, help="an EAN18 the VTN already serves (else one is added)")
    ven = sub.add_parser("ven", help="play a VTN against a VEN (HEMS) under test")
    ven.add_argument("--ven-cmd", required=True, help="command starting the VEN; {vtn_url} and {ean} are filled in")
    ven.add_argument("--speed", type=float, default=600.0, help="clock acceleration for the VEN (default 600)")
    ven.add_argument("--timeout", type=float, default=60.0,
                     help="wall seconds the whole scenario may take (default 60)")
    for each in (vtn, ven):
        each.add_argument("--out", type=Path, default=Path("conformance-report"), help="report directory")
    return parser


def _print(verdicts: list[Verdict]) -> None:
    for verdict in verdicts:
        print(f"{verdict.rule.rule_id:12} {verdict.rule.severity.value:6} {verdict.outcome.value:8} {verdict.summary}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and 2
    if args.side == "vtn":
        from conformance.vtn_suite import run_vtn_suite
        target = args.url
        verdicts = asyncio.run(run_vtn_suite(args.url, args.admin_url, ean=args.ean))
    else:
        if "{vtn_url}" not in args.ven_cmd:
            print("--ven-cmd must contain {vtn_url}", file=sys.stderr)
            return 2
        from conformance.ven_suite import run_ven_suite
        target = args.ven_cmd
        verdicts = asyncio.run(run_ven_suite(args.ven_cmd, speed=args.speed, timeout_s=args.timeout))
    _print(verdicts)
    write_reports(args.out, args.side, target, verdicts)
    failed = failed_ids(verdicts, Severity.MUST)
    print(f"reports in {args.out}; must-rules failed: {sorted(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
