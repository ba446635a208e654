"""Per-invoice cost of our CFDI pipeline vs its floor. A script, not a test:

    .venv/bin/python bench/cfdi_build_sign.py [N]

pipeline = compute_totals + build_tree + sign_cfdi (cadena XSLT + RSA) + validate_xsd
           ("full": SAT's XSD as published; "lean" = prepare_for_stamping, the stamping path's
           one call: rules of both SAT matrices + huge enumerations as patterns, their
           membership checked by the rules)
floor    = cadena XSLT + RSA-SHA256 sign alone, on an already built tree
One-time costs (XSLT compile, XSD compile, CSD load) are reported separately.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sat.cfdi import (  # noqa: E402
    Concept,
    Invoice,
    Issuer,
    Receiver,
    Tax,
    build_tree,
    cadena_original,
    check_invoice,
    compute_totals,
    load_csd,
    prepare_for_stamping,
    sign_cfdi,
    validate_xsd,
)

CSD_DIR = ROOT / "tests" / "cfdi" / "fixtures" / "csd"


def invoice(n_concepts: int) -> Invoice:
    iva = Tax("002", "Tasa", Decimal("0.160000"))
    return Invoice(
        issued_at=datetime(2025, 6, 1, 10, 30),
        place_of_issue="42501",
        voucher_type="I",
        exportation="01",
        currency="MXN",
        payment_form="03",
        payment_method="PUE",
        issuer=Issuer("EKU9003173C9", "ESCUELA KEMPER URGATE", "601"),
        receiver=Receiver("XIA190128J61", "XENON INDUSTRIAL ARTICLES", "76343", "601", "G03"),
        concepts=[
            Concept(
                "84111506", Decimal(i + 1), "E48", f"Servicio {i}", Decimal("123.45"), "02", transferred_taxes=[iva]
            )
            for i in range(n_concepts)
        ],
    )


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    t0 = time.perf_counter()
    csd = load_csd(
        (CSD_DIR / "eku9003173c9_csd_2023.cer").read_bytes(),
        (CSD_DIR / "eku9003173c9_csd_2023.key").read_bytes(),
        "12345678a",
        now=datetime(2025, 6, 1, tzinfo=timezone.utc),
    )
    t1 = time.perf_counter()
    warm = build_tree(compute_totals(invoice(1)))
    sign_cfdi(warm, csd)
    t2 = time.perf_counter()
    validate_xsd(warm)
    t3 = time.perf_counter()
    validate_xsd(warm, mode="lean")
    check_invoice(compute_totals(invoice(1)), datetime(2025, 6, 1, 11, 0))  # loads catalogs
    t4 = time.perf_counter()
    print(
        f"one-time: load CSD {1000 * (t1 - t0):.1f} ms, compile cadena XSLT + first sign "
        f"{1000 * (t2 - t1):.1f} ms, compile full XSD {1000 * (t3 - t2):.1f} ms, "
        f"compile lean XSD + load catalogs {1000 * (t4 - t3):.1f} ms"
    )
    print(f"{'concepts':>8} {'mode':>5} {'pipeline ms (median/p95)':>26} {'floor ms (median/p95)':>23} {'overhead':>9}")
    for n, mode in ((1, "full"), (1, "lean"), (10, "full"), (10, "lean"), (100, "full"), (100, "lean")):
        model = invoice(n)
        now = datetime(2025, 6, 1, 11, 0)

        def pipeline() -> None:
            if mode == "lean":
                prepare_for_stamping(model, csd, now)
                return
            computed = compute_totals(model)
            root = build_tree(computed)
            sign_cfdi(root, csd)
            assert validate_xsd(root, mode=mode) == []

        prebuilt = build_tree(compute_totals(model))
        prebuilt.set("NoCertificado", csd.certificate_number)
        prebuilt.set("Certificado", csd.certificate_base64)

        def floor() -> None:
            csd.sign(cadena_original(prebuilt).encode("utf-8"))

        p, f = timed(pipeline, repeat), timed(floor, repeat)
        pm, fm = statistics.median(p), statistics.median(f)
        p95 = lambda xs: sorted(xs)[int(0.95 * (len(xs) - 1))]  # noqa: E731
        print(f"{n:>8} {mode:>5} {pm:>13.2f} / {p95(p):>8.2f} {fm:>11.2f} / {p95(f):>8.2f} {pm / fm:>8.1f}x")


if __name__ == "__main__":
    main()
