"""``hems-conformance vtn --url U --admin-url A``, ``hems-conformance ven --ven-cmd "... {vtn_url} ..."`` and
``hems-conformance certificates --dir D --ean A --ean B`` (the suite's certificates for the VTN-SEC rules).

Exit code 0 when no must-rule failed or was inconclusive, 1 when a must-rule failed, 3 when none failed but one
could not be judged fairly (run again), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from conformance.report import write_reports
from conformance.rules import Severity
from conformance.ven_suite import (
    DEFAULT_SPEED,
    PLACEHOLDERS,
    ClockMode,
    check_clock_mode,
    check_ven_cmd,
    default_clock_mode,
    wall_seconds,
)
from conformance.verdicts import Outcome, Report, failed_ids


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hems-conformance", description="HEMS–DSO OpenADR 2.0b profile conformance")
    sub = parser.add_subparsers(dest="side", required=True)
    vtn = sub.add_parser("vtn", help="play a VEN against a VTN (DSO server) under test")
    vtn.add_argument("--url", required=True, help="VTN URL, e.g. http://host:8080/OpenADR2/Simple/2.0b")
    vtn.add_argument("--admin-url", default=None, help="operator API base URL (publish steps are not run without)")
    vtn.add_argument("--admin-token-file", type=Path, default=None, metavar="PATH",
                     help="file holding an operate token of the operator API (default: $DSO_API_TOKEN)")
    vtn.add_argument("--ean", default=None, help="an EAN18 the VTN already serves (else one is added)")
    vtn.add_argument("--certs", type=Path, default=None, metavar="DIR",
                     help="for an https VTN: the suite's certificates ('hems-conformance certificates'); the VTN must "
                          "trust DIR/ca.crt and have enrolled the certificates of its two households")
    vtn.add_argument("--vtn-ca", type=Path, default=None, metavar="PEM",
                     help="for an https VTN: the CA its server certificate must chain to")
    ven = sub.add_parser("ven", help="play a VTN against a VEN (HEMS) under test")
    ven.add_argument("--ven-cmd", required=True,
                     help="command starting the VEN under test; it must contain {vtn_url}; "
                          + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + " are filled in (conformance/README.md)")
    ven.add_argument("--speed", type=_positive, default=DEFAULT_SPEED,
                     help=f"simulated seconds per wall second the VEN must run its clock at (default "
                          f"{DEFAULT_SPEED:g}: the scenario takes {wall_seconds(DEFAULT_SPEED):.0f} s)")
    ven.add_argument("--clock", choices=[m.value for m in ClockMode], default=None,
                     help="how the VEN keeps time: 'own' - it runs its clock at {speed} from {start} (options of the "
                          "product); 'faketime' - it reads the wall clock and the suite runs it under libfaketime at "
                          "--speed; 'wall' - it reads the real clock and the scenario runs in real time (--speed 1). "
                          "Default: own when --ven-cmd contains {speed}, else wall at --speed 1, else faketime")
    ven.add_argument("--timeout", type=_positive, default=None,
                     help="wall seconds the whole run may take (default: the scenario's length plus a minute)")
    ven.add_argument("--contract", choices=["performance", "plain"], default="performance",
                     help="the household's contract given to the VEN ({contract}): 'performance' - a performance "
                          "contract (capacity needs and daily verdicts, PROFILE 9.5/9.6, judged by VEN-NEED-01 and "
                          "VEN-PERF-01); 'plain' - none, for a product that offers no performance contract (those two "
                          "rules are then not run). Default: %(default)s")
    ven.add_argument("--security-only", action="store_true",
                     help="only the impostor-VTN check of VEN-SEC-01 (needs {ca_file}/{cert}/{key} in --ven-cmd)")
    certificates = sub.add_parser("certificates", help="issue the suite's certificates for testing an https VTN",
                                  description="Write a CA, a client certificate per --ean, an unenrolled client "
                                              "certificate and an impostor CA into --dir. Let the VTN under test "
                                              "trust DIR/ca.crt for VEN certificates and enrol DIR/vens/EAN.crt for "
                                              "each household, then run 'hems-conformance vtn --certs DIR'.")
    certificates.add_argument("--dir", type=Path, required=True, help="where to write them (created)")
    certificates.add_argument("--ean", action="append", required=True, metavar="EAN",
                              help="a household the VTN serves (EAN18); give two")
    for each in (vtn, ven):
        each.add_argument("--out", type=Path, default=Path("conformance-report"), help="report directory")
    return parser


def _print(report: Report) -> None:
    for finding in report.findings:
        print(f"FINDING: {finding.title}: {finding.detail}")
    for verdict in report.verdicts:
        print(f"{verdict.rule.rule_id:12} {verdict.rule.severity.value:6} {verdict.outcome.value:12} {verdict.summary}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and 2
    if args.side == "certificates":
        return _certificates(args)
    if args.side == "vtn":
        from conformance.certificates import SuiteCertificates
        from conformance.vtn_suite import run_vtn_suite_report
        try:
            token = (args.admin_token_file.read_text(encoding="utf-8").strip() if args.admin_token_file
                     else os.environ.get("DSO_API_TOKEN") or None)
        except OSError as error:
            print(f"hems-conformance: error: --admin-token-file: {error.strerror or error}", file=sys.stderr)
            return 2
        certs = SuiteCertificates(args.certs) if args.certs is not None else None
        if args.url.startswith("https://") and (certs is None or args.vtn_ca is None or len(certs.eans()) < 2):
            print("hems-conformance: error: an https VTN needs --certs (with certificates of two households, see "
                  "'hems-conformance certificates') and --vtn-ca", file=sys.stderr)
            return 2
        report = asyncio.run(run_vtn_suite_report(args.url, args.admin_url, ean=args.ean, admin_token=token,
                                                  certificates=certs, vtn_ca=args.vtn_ca))
    else:
        problem = check_ven_cmd(args.ven_cmd)
        if problem:
            print(f"hems-conformance: error: --ven-cmd {problem}", file=sys.stderr)
            return 2
        mode = ClockMode(args.clock) if args.clock else default_clock_mode(args.ven_cmd, args.speed)
        problem = check_clock_mode(mode, args.speed)
        if problem:
            print(f"hems-conformance: error: {problem}", file=sys.stderr)
            return 2
        from conformance.ven_scenario import CONTRACT, PLAIN_CONTRACT
        from conformance.ven_suite import run_ven_suite_report
        report = asyncio.run(run_ven_suite_report(args.ven_cmd, speed=args.speed, clock_mode=mode,
                                                  timeout_s=args.timeout, security_only=args.security_only,
                                                  contract=CONTRACT if args.contract == "performance"
                                                  else PLAIN_CONTRACT))
    _print(report)
    write_reports(args.out, args.side, report)
    failed = failed_ids(report.verdicts, Severity.MUST)
    unclear = failed_ids(report.verdicts, Severity.MUST, Outcome.INCONCLUSIVE)
    print(f"reports in {args.out}; must-rules failed: {sorted(failed) or 'none'}"
          + (f"; inconclusive: {sorted(unclear)} (run again)" if unclear else ""))
    return 1 if failed else 3 if unclear else 0


def _certificates(args: argparse.Namespace) -> int:
    from conformance.certificates import issue
    from protocol.contract import ean18_check_digit

    for ean in args.ean:
        if len(ean) != 18 or not ean.isdigit() or ean18_check_digit(ean[:17]) != ean[17]:
            print(f"hems-conformance: error: --ean {ean!r} is not an EAN18 with a valid check digit", file=sys.stderr)
            return 2
    if len(set(args.ean)) < 2:
        print("hems-conformance: error: give two different --ean (the impersonation rule needs a second "
              "household)", file=sys.stderr)
        return 2
    certs = issue(args.dir, list(args.ean))
    print(f"{args.dir}: CA {certs.ca_file}; enrol at the VTN under test:")
    for ean in args.ean:
        print(f"  household {ean}: {certs.ven(ean)[0]}")
    print(f"then: hems-conformance vtn --url https://... --certs {args.dir} --vtn-ca <the VTN's CA>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
