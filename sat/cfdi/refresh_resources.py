"""Regenerate `resources/` from the installed `satcfdi` wheel and SAT's 4.0 catalog tables.

Run: ``python -m sat.cfdi.refresh_resources [PHPCFDI_SQL_DIR]``
(PHPCFDI_SQL_DIR defaults to ../shared/data/sat-catalogs-phpcfdi). ``--catalogs-only`` applies just
the second source to the shipped catalogs.

Sources, each named with its date in resources/SOURCES.md:
1. satcfdi (its version): XSD, XSLT and the big catalogs (c_ClaveProdServ, c_CodigoPostal, ...).
2. phpcfdi's SAT catalog tables (`cfdi_40_*.sql`, dated by their latest `vigencia_desde`): the
   CFDI 4.0 tables with validity dates. They win for every table they have: a code satcfdi still
   lists but the 4.0 table does not (c_FormaPago 07, c_RegimenFiscal 609, c_UsoCFDI P01, ...) is kept
   with `"retired": true` so old documents stay readable, and is refused for issuing.

Why: SAT publishes its XSD/XSLT and catalogs on its website (and the catalogs as an .xls that
changes often). `satcfdi` mirrors them; we copy them once into plain files so that the app never
imports satcfdi (it is a test-only dependency) and never hits the network at runtime.

Columns SAT publishes in catCFDI.xls but satcfdi does not ship (regime applicability to personas
físicas/morales, UsoCFDI allowed regimes, c_TasaOCuota) are transcribed below from SAT's
catCFDI.xls (Anexo 20 4.0) and written alongside.
"""

from __future__ import annotations

import gzip
import json
import pickle
import re
import sqlite3
from pathlib import Path

RESOURCES = Path(__file__).with_name("resources")
XSD_DIR = RESOURCES / "xsd"
XSLT_DIR = RESOURCES / "xslt"
CATALOG_DIR = RESOURCES / "catalogs"

# Relative to satcfdi/transform/schemas/; also the path part of SAT's official URL.
_XSD_FILES = {
    "cfdv40.xsd": "www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd",
    "catCFDI.xsd": "www.sat.gob.mx/sitio_internet/cfd/catalogos/catCFDI.xsd",
    "tdCFDI.xsd": "www.sat.gob.mx/sitio_internet/cfd/tipoDatos/tdCFDI/tdCFDI.xsd",
    "TimbreFiscalDigitalv11.xsd": "www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd",
    "Pagos20.xsd": "www.sat.gob.mx/sitio_internet/cfd/Pagos/Pagos20.xsd",
    "catPagos.xsd": "www.sat.gob.mx/sitio_internet/cfd/catalogos/Pagos/catPagos.xsd",
}
_CADENA_XSLT = "www.sat.gob.mx/sitio_internet/cfd/4/cadenaoriginal_4_0/cadenaoriginal_4_0.xslt"
_TFD_XSLT = "www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/cadenaoriginal_TFD_1_1.xslt"

_SQLITE_CATALOGS = {
    # our file name -> satcfdi table
    "c_RegimenFiscal": "C756_c_RegimenFiscal",
    "c_UsoCFDI": "C756_c_UsoCFDI",
    "c_FormaPago": "C756_c_FormaPago",
    "c_MetodoPago": "C756_c_MetodoPago",
    "c_Moneda": "C756_c_Moneda",
    "c_Impuesto": "C756_c_Impuesto",
    "c_ObjetoImp": "C756_c_ObjetoImp",
    "c_Exportacion": "C756_c_Exportacion",
    "c_TipoDeComprobante": "C756_c_TipoDeComprobante",
    "c_TipoRelacion": "C756_c_TipoRelacion",
    "c_Periodicidad": "C756_c_Periodicidad",
    "c_Meses": "C756_c_Meses",
    "c_ClaveUnidad": "C756_c_ClaveUnidad",
    "c_ClaveProdServ": "C756_c_ClaveProdServ",
    "c_CodigoPostal": "C756_c_CodigoPostal",
    "c_Pais": "C756_c_Pais",
}
# Big catalogs are gzipped JSON; the rest plain JSON so diffs stay reviewable.
_GZIPPED = {"c_ClaveProdServ", "c_CodigoPostal"}

# catCFDI.xls columns "Persona Física" / "Persona Moral" of c_RegimenFiscal.
REGIMEN_APPLIES: dict[str, tuple[bool, bool]] = {
    "601": (False, True),
    "603": (False, True),
    "605": (True, False),
    "606": (True, False),
    "607": (True, False),
    "608": (True, False),
    "609": (False, True),
    "610": (True, True),
    "611": (True, False),
    "612": (True, False),
    "614": (True, False),
    "615": (True, False),
    "616": (True, False),
    "620": (False, True),
    "621": (True, False),
    "622": (False, True),
    "623": (False, True),
    "624": (False, True),
    "625": (True, False),
    "626": (True, True),
    "628": (False, True),
    "629": (True, False),
    "630": (True, False),
}

_BUSINESS = ["601", "603", "606", "612", "620", "621", "622", "623", "624", "625", "626"]
_PERSONAL = ["605", "606", "608", "611", "612", "614", "607", "615", "625"]
_ANY = [
    "601",
    "603",
    "605",
    "606",
    "608",
    "610",
    "611",
    "612",
    "614",
    "616",
    "620",
    "621",
    "622",
    "623",
    "624",
    "607",
    "615",
    "625",
    "626",
]
# catCFDI.xls c_UsoCFDI columns: Física, Moral, "Régimen Fiscal Receptor".
USO_CFDI_RULES: dict[str, tuple[bool, bool, list[str]]] = {
    "G01": (True, True, _BUSINESS),
    "G02": (True, True, sorted(_BUSINESS + ["616"])),
    "G03": (True, True, _BUSINESS),
    **{f"I0{i}": (True, True, _BUSINESS) for i in range(1, 9)},
    **{f"D{i:02d}": (True, False, _PERSONAL) for i in range(1, 11)},
    "S01": (True, True, _ANY),
    "CP01": (True, True, _ANY),
    "CN01": (True, False, ["605"]),
    # P01 was removed in 4.0: no regime accepts it, so it always fails the compatibility rule.
    "P01": (False, False, []),
}



# phpcfdi table -> (our catalog, column mapping). Values of c_TasaOCuota keep their own shape.
PHPCFDI_TABLES = {
    "cfdi_40_formas_pago": "c_FormaPago",
    "cfdi_40_regimenes_fiscales": "c_RegimenFiscal",
    "cfdi_40_usos_cfdi": "c_UsoCFDI",
    "cfdi_40_tipos_relaciones": "c_TipoRelacion",
    "cfdi_40_exportaciones": "c_Exportacion",
    "cfdi_40_impuestos": "c_Impuesto",
    "cfdi_40_metodos_pago": "c_MetodoPago",
    "cfdi_40_monedas": "c_Moneda",
    "cfdi_40_objetos_impuestos": "c_ObjetoImp",
    "cfdi_40_paises": "c_Pais",
}
DEFAULT_PHPCFDI_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sat-catalogs-phpcfdi"
_TAX_NAMES = {"ISR": "001", "IVA": "002", "IVA Crédito aplicado del 50%": "002", "IEPS": "003"}
# Rows SAT's current table no longer lists but invoices dated in their window still use:
# the IEPS Cuota ceiling of the 2022 catCFDI (59.1449), replaced by 72.1605 from 2026-01-01.
TASA_O_CUOTA_HISTORY = [
    {"kind": "Rango", "min": "0.000000", "max": "59.144900", "tax": "003", "factor": "Cuota",
     "transfer": True, "withholding": True, "valid_from": "2022-01-01", "valid_to": "2025-12-31"},
]


def read_phpcfdi(directory: Path) -> sqlite3.Connection:
    """The phpcfdi dump (`<table>.schema.sql` + `<table>.sql`) loaded into an in-memory sqlite."""
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    for schema in sorted(directory.glob("*.schema.sql")):
        conn.executescript(schema.read_text("utf-8"))
        conn.executescript(schema.with_name(schema.name.replace(".schema.sql", ".sql")).read_text("utf-8"))
    return conn


def _validity(row: sqlite3.Row) -> dict[str, object]:
    keys = row.keys()
    return {
        "valid_from": (row["vigencia_desde"] or None) if "vigencia_desde" in keys else None,
        "valid_to": (row["vigencia_hasta"] or None) if "vigencia_hasta" in keys else None,
    }


def _phpcfdi_entry(name: str, row: sqlite3.Row) -> dict[str, object]:
    entry: dict[str, object] = {"code": row["id"], "description": row["texto"]}
    if name == "c_RegimenFiscal":
        entry |= {"fisica": bool(row["aplica_fisica"]), "moral": bool(row["aplica_moral"])}
    elif name == "c_UsoCFDI":
        regimes = [r.strip() for r in row["regimenes_fiscales_receptores"].split(",") if r.strip()]
        entry |= {"fisica": bool(row["aplica_fisica"]), "moral": bool(row["aplica_moral"]), "regimes": regimes}
    elif name == "c_Moneda":
        entry |= {"decimals": int(row["decimales"]), "variation_percent": int(row["porcentaje_variacion"])}
    elif name == "c_Pais":
        entry |= {"tax_id_pattern": row["patron_identidad_tributaria"] or None,
                  "tax_id_check": row["validacion_identidad_tributaria"] or None}
    return entry | _validity(row)


def apply_phpcfdi(directory: Path) -> dict[str, str]:
    """Rewrite the catalogs phpcfdi has from its 4.0 tables; returns {catalog: source and date}."""
    conn = read_phpcfdi(directory)
    sources: dict[str, str] = {}
    try:
        for table, name in PHPCFDI_TABLES.items():
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            current = {str(r["id"]): _phpcfdi_entry(name, r) for r in rows}
            path = CATALOG_DIR / f"{name}.json"
            old = json.loads(path.read_text("utf-8")) if path.exists() else []
            retired = [
                {**r, "retired": True} for r in old if str(r["code"]) not in current
            ]
            _write_catalog(name, sorted(current.values(), key=lambda r: str(r["code"])) + retired)
            dates = [r["vigencia_desde"] for r in rows if "vigencia_desde" in r.keys() and r["vigencia_desde"]]
            sources[name] = f"phpcfdi {table} (vigencia_desde ≤ {max(dates) if dates else 's/f'})"
        tasa = [
            {"kind": r["tipo"], "min": r["minimo"] or r["valor"], "max": r["valor"], "tax": _TAX_NAMES[r["impuesto"]],
             "factor": r["factor"], "transfer": bool(r["traslado"]), "withholding": bool(r["retencion"])}
            | _validity(r)
            for r in conn.execute("SELECT * FROM cfdi_40_reglas_tasa_cuota")
        ]
        _write_catalog("c_TasaOCuota", tasa + TASA_O_CUOTA_HISTORY)
        latest = max(r["valid_from"] for r in tasa if r["valid_from"])
        sources["c_TasaOCuota"] = f"phpcfdi cfdi_40_reglas_tasa_cuota (vigencia_desde ≤ {latest}) + 2022 IEPS cuota row"
    finally:
        conn.close()
    return sources


def _satcfdi_root() -> Path:
    import satcfdi  # test/dev-only dependency; imported only by this script

    return Path(satcfdi.__file__).parent


def _flatten_refs(text: str) -> str:
    """Point xs:import/xsl:include at sibling files (we store each kind in one flat folder)."""
    text = re.sub(r'schemaLocation="[^"]*/([^"/]+)"', r'schemaLocation="\1"', text)
    return re.sub(r'href="[^"]*/([^"/]+)"', r'href="\1"', text)


def copy_schemas(schemas: Path) -> None:
    XSD_DIR.mkdir(parents=True, exist_ok=True)
    for name, rel in _XSD_FILES.items():
        (XSD_DIR / name).write_text(_flatten_refs((schemas / rel).read_text("utf-8")), "utf-8")


def copy_xslts(schemas: Path) -> None:
    XSLT_DIR.mkdir(parents=True, exist_ok=True)
    for old in XSLT_DIR.glob("*.xslt"):
        old.unlink()
    main = schemas / _CADENA_XSLT
    text = main.read_text("utf-8")
    for href in re.findall(r'<xsl:include href="([^"]+)"', text):
        src = (main.parent / href).resolve()
        dst = XSLT_DIR / src.name
        if dst.exists():
            raise RuntimeError(f"two included XSLTs named {src.name}")
        dst.write_text(_flatten_refs(src.read_text("utf-8")), "utf-8")
    (XSLT_DIR / main.name).write_text(_flatten_refs(text), "utf-8")
    tfd = schemas / _TFD_XSLT
    (XSLT_DIR / tfd.name).write_text(_flatten_refs(tfd.read_text("utf-8")), "utf-8")


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[object, object]]:
    out = [(pickle.loads(k), pickle.loads(v)) for k, v in conn.execute(f"SELECT key, value FROM {table}")]
    return sorted(out, key=lambda kv: str(kv[0]))


def _entry(name: str, code: object, value: object) -> dict[str, object]:
    if name == "c_Moneda":
        return {"code": code, "description": value[0], "decimals": value[1]}
    if name == "c_CodigoPostal":
        state, municipality, locality, _border, timezone = value
        return {
            "code": code,
            "description": f"{state} {municipality} {locality}".strip(),
            "state": state,
            "municipality": municipality,
            "locality": locality,
            "timezone": timezone,
        }
    if name == "c_RegimenFiscal":
        fisica, moral = REGIMEN_APPLIES[code]
        return {"code": code, "description": value, "fisica": fisica, "moral": moral}
    if name == "c_UsoCFDI":
        fisica, moral, regimes = USO_CFDI_RULES[code]
        return {"code": code, "description": value, "fisica": fisica, "moral": moral, "regimes": regimes}
    if isinstance(value, (list, tuple)):
        value = value[0]
    return {"code": code, "description": value}


def _write_catalog(name: str, entries: list[dict[str, object]]) -> None:
    data = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if name in _GZIPPED:
        # mtime=0 keeps the output byte-stable across refreshes.
        (CATALOG_DIR / f"{name}.json.gz").write_bytes(gzip.compress(data, 9, mtime=0))
    else:
        text = json.dumps(entries, ensure_ascii=False, indent=0)
        (CATALOG_DIR / f"{name}.json").write_text(text + "\n", "utf-8")


def write_catalogs(root: Path) -> None:
    CATALOG_DIR.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(root / "catalogs" / "catalogs.db")
    try:
        for name, table in _SQLITE_CATALOGS.items():
            _write_catalog(name, [_entry(name, k, v) for k, v in _rows(conn, table)])
    finally:
        conn.close()
    _write_catalog("c_TipoFactor", [{"code": c, "description": c} for c in ("Tasa", "Cuota", "Exento")])
    # c_TasaOCuota comes from SAT's 4.0 table with its validity dates: see apply_phpcfdi.


def _size(path: Path) -> str:
    text = f"{path.stat().st_size / 1024:.0f} KB"
    if path.name.endswith(".gz"):
        text += f" (gzip; {len(gzip.decompress(path.read_bytes())) / 1024 / 1024:.1f} MB uncompressed)"
    return text


def write_sources(schemas: Path, version: str) -> None:
    """resources/SOURCES.md: official SAT URL of every file and the satcfdi version used."""
    sat = "http://www.sat.gob.mx/"
    xsd_rows = [f"| xsd/{name} | {sat}{rel.split('/', 1)[1]} |" for name, rel in _XSD_FILES.items()]
    main_xslt = schemas / _CADENA_XSLT
    xslt_rows = [
        f"| xslt/{main_xslt.name} | {sat}{_CADENA_XSLT.split('/', 1)[1]} |",
        f"| xslt/cadenaoriginal_TFD_1_1.xslt | {sat}{_TFD_XSLT.split('/', 1)[1]} |",
    ]
    for href in re.findall(r'<xsl:include href="([^"]+)"', main_xslt.read_text("utf-8")):
        rel = (main_xslt.parent / href).resolve().relative_to(schemas.resolve() / "www.sat.gob.mx")
        xslt_rows.append(f"| xslt/{rel.name} | {sat}{rel.as_posix()} |")
    cat_rows = [f"| catalogs/{p.name} | {_size(p)} |" for p in sorted(CATALOG_DIR.iterdir())]
    text = SOURCES_TEMPLATE.format(
        version=version, xsd="\n".join(xsd_rows), xslt="\n".join(xslt_rows), catalogs="\n".join(cat_rows)
    )
    (RESOURCES / "SOURCES.md").write_text(text, "utf-8")


_PHPCFDI_MARK = "## CFDI 4.0 tables with validity dates"


def write_phpcfdi_sources(sources: dict[str, str]) -> None:
    """Append (or replace) the section of SOURCES.md naming each phpcfdi-derived catalog's source."""
    path = RESOURCES / "SOURCES.md"
    text = path.read_text("utf-8").split(_PHPCFDI_MARK)[0].rstrip() + "\n\n"
    lines = [
        _PHPCFDI_MARK,
        "",
        "Source 2: SAT's catCFDI 4.0 tables as published by phpcfdi (resources-sat-catalogs, one",
        "`cfdi_40_*.sql` per table, copied in ../shared/data/sat-catalogs-phpcfdi). Each row carries",
        "`valid_from`/`valid_to` (vigencia); rules use the row in force on the invoice date. Codes only",
        'satcfdi lists are kept with `"retired": true` (readable for old documents, refused for 4.0).',
        "",
        "| catalog | source and date |",
        "|---|---|",
        *[f"| {name} | {source} |" for name, source in sorted(sources.items())],
        "",
    ]
    path.write_text(text + "\n".join(lines), "utf-8")


SOURCES_TEMPLATE = """# Sources of `resources/`

Everything here is SAT's public material, copied from the **satcfdi {version}** wheel
(`satcfdi/transform/schemas/www.sat.gob.mx/...` for XSD/XSLT, `satcfdi/catalogs/catalogs.db` for
catalogs), which mirrors SAT's site. Regenerate with:

    python -m sat.cfdi.refresh_resources

The only change made to SAT files: `xs:import/@schemaLocation` and `xsl:include/@href` are
rewritten to sibling file names (everything is stored flat), so nothing is ever fetched from the
network. Sizes: xsd/ ~5 MB (catCFDI.xsd alone is 5 MB of enumerations), xslt/ ~0.25 MB,
catalogs/ ~1.1 MB (c_CodigoPostal and c_ClaveProdServ gzipped).

## XSD (`xsd/`)

| file | official URL |
|---|---|
{xsd}

## XSLT (`xslt/`)

`cadenaoriginal_4_0.xslt` includes the XSLT of every complement SAT publishes (nómina, pagos,
comercio exterior, ...); all are copied so the cadena of any stamped CFDI can be computed.
`utilerias.xslt` (templates Requerido/Opcional/ManejaEspacios) is shared.

| file | official URL |
|---|---|
{xslt}

## Catalogs (`catalogs/`)

Catálogos del CFDI 4.0 — official source: SAT's catCFDI_V_4.xls
(http://omawww.sat.gob.mx/tramitesyservicios/Paginas/documentos/catCFDI_V_4.xls), which satcfdi
converts to sqlite. Each file is a JSON list of `{{"code", "description", ...}}`.

| file | size |
|---|---|
{catalogs}

Columns satcfdi does not ship, transcribed by hand from catCFDI_V_4.xls into
`refresh_resources.py` (constants `REGIMEN_APPLIES`, `USO_CFDI_RULES`), used only for the rows the
4.0 tables below do not have (codes retired from 4.0, kept to display old documents):

- c_RegimenFiscal: `fisica` / `moral` (columns "Física", "Moral").
- c_UsoCFDI: `fisica` / `moral` and `regimes` (column "Régimen Fiscal Receptor").
- c_TasaOCuota: SAT's 4.0 table below, plus the 2022 IEPS Cuota ceiling (59.1449, in force until
  2025-12-31; `TASA_O_CUOTA_HISTORY`) so invoices dated before 2026 are judged by their own row.
- c_TipoFactor: the `c_TipoFactor` enumeration of catCFDI.xsd.
"""


def main() -> None:
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    phpcfdi_dir = Path(args[0]) if args else DEFAULT_PHPCFDI_DIR
    if "--catalogs-only" in sys.argv:
        write_phpcfdi_sources(apply_phpcfdi(phpcfdi_dir))
        print(f"catalogs refreshed from {phpcfdi_dir}")
        return
    root = _satcfdi_root()
    schemas = root / "transform" / "schemas"
    copy_schemas(schemas)
    copy_xslts(schemas)
    write_catalogs(root)
    from satcfdi.__version__ import __version__

    write_sources(schemas, __version__)
    write_phpcfdi_sources(apply_phpcfdi(phpcfdi_dir))
    print(f"resources refreshed from satcfdi {__version__} into {RESOURCES}")


if __name__ == "__main__":
    main()
