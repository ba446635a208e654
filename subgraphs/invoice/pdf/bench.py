"""Benchmark: `python -m subgraphs.invoice.pdf.bench [xml ...]`.

Renders each XML (default: the reference corpus, if present) plus synthetic 50/200-concept
invoices, and prints the median milliseconds per render.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

from lxml import etree

from . import render_invoice_pdf

CORPUS = Path("/work/shared/data/cfdi-corpus")


def _with_concepts(xml: bytes, n: int) -> bytes:
    root = etree.fromstring(xml)
    ns = {"cfdi": "http://www.sat.gob.mx/cfd/4"}
    conceptos = root.find("cfdi:Conceptos", ns)
    template = conceptos.find("cfdi:Concepto", ns)
    for c in list(conceptos):
        conceptos.remove(c)
    for i in range(n):
        c = copy.deepcopy(template)
        c.set("Descripcion", f"Producto {i + 1} con una descripción de longitud razonable")
        conceptos.append(c)
    return etree.tostring(root)


def _median_ms(xml: bytes, runs: int) -> float:
    render_invoice_pdf(xml)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        render_invoice_pdf(xml)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    paths = [Path(a) for a in argv] or sorted(CORPUS.glob("*.xml"))
    results = []
    for path in paths:
        try:
            ms = _median_ms(path.read_bytes(), 20)
        except Exception as exc:  # noqa: BLE001 - report and go on (e.g. malformed corpus file)
            print(f"{'ERROR':>9}  {path.name}: {type(exc).__name__}")
            continue
        results.append(ms)
        print(f"{ms:7.1f} ms  {path.name}")
    if results:
        print(f"median over {len(results)} files: {statistics.median(results):.1f} ms")
        base = next(p for p in paths if p.exists()).read_bytes()
        for n in (50, 200):
            try:
                print(f"{_median_ms(_with_concepts(base, n), 5):7.1f} ms  synthetic {n} concepts")
            except Exception as exc:  # noqa: BLE001
                print(f"synthetic {n}: {type(exc).__name__}")


if __name__ == "__main__":
    main(sys.argv[1:])
