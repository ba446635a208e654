"""PDF rendering (representación impresa) per invoice. A script, not a test:

    .venv/bin/python bench/pdf_render.py [xml ...]

By default it renders invoices the bench makes itself, so it never depends on data outside the
repository: built, signed with SAT's public test CSD and stamped by the sandbox PAC's timbre code
(the same pipeline a real invoice goes through), with 1, 10, 50 and 200 concepts. Files given on
the command line are rendered too (e.g. /work/shared/data/cfdi-corpus/*.xml); one that cannot be
rendered is reported and makes the run fail. Floor: parsing the same XML with the project's safe
parser, which every render does first.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cfdi_build_sign import CSD_DIR, invoice  # noqa: E402
from sat.cfdi import build_tree, compute_totals, load_csd, sign_cfdi, stamp_cfdi, to_bytes  # noqa: E402
from sat.cfdi.xmlsafe import parse_xml  # noqa: E402
from sat.pac.sandbox import PAC_RFC, signer  # noqa: E402
from subgraphs.invoice.pdf import render_invoice_pdf  # noqa: E402


def stamped_invoice(n_concepts: int) -> bytes:
    """A stamped CFDI 4.0 made by our own pipeline (the bench's fixture)."""
    csd = load_csd((CSD_DIR / "eku9003173c9_csd_2023.cer").read_bytes(),
                   (CSD_DIR / "eku9003173c9_csd_2023.key").read_bytes(), "12345678a",
                   now=datetime(2025, 6, 1, tzinfo=timezone.utc))
    root = build_tree(compute_totals(invoice(n_concepts)))
    sign_cfdi(root, csd)
    stamp_cfdi(root, signer(), PAC_RFC, datetime(2025, 6, 1, 10, 35))
    return to_bytes(root)


def median_ms(fn, runs: int) -> float:
    fn()  # warm-up (fonts, catalogs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    cases = [(f"own fixture, {n} concepts", stamped_invoice(n), 20 if n <= 10 else 5) for n in (1, 10, 50, 200)]
    cases += [(Path(a).name, Path(a).read_bytes(), 20) for a in argv]
    print(f"{'render ms':>10} {'floor ms':>9}  invoice   (median; floor = safe XML parse)")
    failed = 0
    for name, xml, runs in cases:
        try:
            ms = median_ms(lambda: render_invoice_pdf(xml), runs)
        except Exception as exc:  # noqa: BLE001 - report every file, fail at the end
            print(f"{'ERROR':>10} {'':>9}  {name}: {type(exc).__name__}: {str(exc)[:120]}")
            failed += 1
            continue
        floor = median_ms(lambda: parse_xml(xml), runs)
        print(f"{ms:10.1f} {floor:9.2f}  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
