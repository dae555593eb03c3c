"""``dso-server pki``: a CA, the VTN's server certificate, one enrolled client certificate per household,
revocation; file permissions and readable errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dso_server.cli import main
from dso_server.security.pki import Pki, fingerprint_sha256, openadr_fingerprint
from dso_server.store.certificates import CertificateStore
from dso_server.store.sqlite import DsoStore
from protocol import make_ean18

EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_issue_and_enrol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki, db = tmp_path / "pki", str(tmp_path / "dso.sqlite")
    assert run(["pki", "init", "--dir", str(pki)], capsys)[0] == 0
    assert run(["pki", "issue-vtn", "--dir", str(pki), "--host", "dso.example.net", "--host", "192.0.2.7"],
               capsys)[0] == 0
    code, out, _ = run(["pki", "issue-ven", "--dir", str(pki), "--ean", EAN_A, "--db", db], capsys)
    assert code == 0 and f"enrolled for household {EAN_A}" in out

    assert mode(pki) == 0o700
    for key in ("ca.key", "vtn.key", f"vens/{EAN_A}.key"):
        assert mode(pki / key) == 0o600, key
    ca, vtn, ven = cert(pki / "ca.crt"), cert(pki / "vtn.crt"), cert(pki / "vens" / f"{EAN_A}.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[attr-defined]
    for leaf in (vtn, ven):
        leaf.verify_directly_issued_by(ca)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(vtn.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    names = vtn.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["dso.example.net"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert list(ven.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ven.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == EAN_A

    with DsoStore(db) as store:
        [enrolment] = CertificateStore(store).enrolments()
    assert (enrolment.connection_point_id, enrolment.fingerprint_sha256, enrolment.revoked) == (
        EAN_A, fingerprint_sha256(ven), False)
    assert openadr_fingerprint(ven) in out


def test_revocation_marks_the_crl_the_index_and_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki, db = tmp_path / "pki", str(tmp_path / "dso.sqlite")
    run(["pki", "init", "--dir", str(pki)], capsys)
    run(["pki", "issue-ven", "--dir", str(pki), "--ean", EAN_A, "--db", db], capsys)
    first = cert(pki / "vens" / f"{EAN_A}.crt")
    code, _, err = run(["pki", "issue-ven", "--dir", str(pki), "--ean", EAN_A, "--db", db], capsys)
    assert code == 2 and "revoke it first" in err  # one current certificate per household

    code, out, _ = run(["pki", "revoke", "--dir", str(pki), "--ean", EAN_A, "--db", db, "--reason", "key lost"],
                       capsys)
    assert code == 0 and "revoked" in out
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    assert crl.is_signature_valid(cert(pki / "ca.crt").public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(first.serial_number) is not None
    assert [r.revocation_reason for r in Pki(pki).issued() if r.kind == "ven"] == ["key lost"]
    with DsoStore(db) as store:
        enrolment = CertificateStore(store).enrolment(fingerprint_sha256(first))
    assert enrolment is not None and enrolment.revoked and enrolment.revocation_reason == "key lost"

    assert run(["pki", "issue-ven", "--dir", str(pki), "--ean", EAN_A, "--db", db], capsys)[0] == 0  # renewal
    assert cert(pki / "vens" / f"{EAN_A}.crt").serial_number != first.serial_number
    code, _, err = run(["pki", "revoke", "--dir", str(pki), "--serial", f"{first.serial_number:x}", "--db", db],
                       capsys)
    assert code == 2 and "was already revoked" in err


def test_enrol_binds_a_foreign_certificate_to_one_household_only(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    other, db = tmp_path / "other-ca", str(tmp_path / "dso.sqlite")
    Pki(other).init(name="Vendor CA", key_type="rsa")
    Pki(other).issue_ven(ean=EAN_B, key_type="rsa")
    ven_cert = other / "vens" / f"{EAN_B}.crt"
    assert isinstance(cert(ven_cert).public_key(), rsa.RSAPublicKey)
    assert run(["pki", "enrol", "--ean", EAN_B, "--cert", str(ven_cert), "--db", db], capsys)[0] == 0
    code, out, _ = run(["pki", "enrol", "--ean", EAN_B, "--cert", str(ven_cert), "--db", db], capsys)
    assert code == 0 and "already enrolled" in out
    code, _, err = run(["pki", "enrol", "--ean", EAN_A, "--cert", str(ven_cert), "--db", db], capsys)
    assert code == 2 and f"is enrolled for household {EAN_B}" in err
    code, out, _ = run(["pki", "revoke", "--cert", str(ven_cert), "--dir", str(tmp_path / "pki"), "--db", db], capsys)
    assert code == 0 and f"of household {EAN_B} revoked" in out


@pytest.mark.parametrize("argv, message", [
    (["pki", "issue-vtn"], "no CA in {dir}: run 'dso-server pki init --dir {dir}' first"),
    (["pki", "issue-ven", "--ean", "123"], "'123' is not an 18-digit EAN"),
    (["pki", "issue-ven", "--ean", EAN_A[:-1] + str((int(EAN_A[-1]) + 1) % 10)], "check digit"),
    (["pki", "enrol", "--ean", EAN_A, "--cert", "missing.pem"], "cannot read missing.pem"),
    (["pki", "revoke", "--ean", EAN_A], "no CA in"),
])
def test_bad_requests_exit_2_with_a_readable_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                  message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv, capsys)
    assert code == 2 and message.format(dir="pki") in err and "Traceback" not in err, err


def test_a_ca_key_readable_by_others_is_refused_and_a_second_init_too(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pki = tmp_path / "pki"
    run(["pki", "init", "--dir", str(pki)], capsys)
    code, _, err = run(["pki", "init", "--dir", str(pki)], capsys)
    assert code == 2 and "already holds a CA" in err
    (pki / "ca.key").chmod(0o644)
    code, _, err = run(["pki", "issue-vtn", "--dir", str(pki)], capsys)
    assert code == 2 and "chmod 600" in err
    assert not (pki / "vtn.crt").exists()
