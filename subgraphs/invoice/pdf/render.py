"""The representación impresa (PDF) of a stamped CFDI 4.0, drawn with fpdf2 core fonts.

Only the PDF core fonts (Helvetica, Courier) are used, so nothing is loaded from disk and it
works on any machine with just the PyPI dependencies. They cover latin-1, which has every
Spanish letter (á é í ó ú ñ ü ¿ ¡); anything else goes through `latin1()` first.

Text is drawn with the low-level `FPDF.text()` and our own line wrapper rather than
`multi_cell`, which keeps a 200-concept invoice fast (see the report / tests for timings).
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import segno
from fpdf import FPDF

from . import catalogs as cat
from .sat import verification_url
from .view import Concepto, InvoiceView, Tax, dec, parse_invoice
from sat.cfdi.words import amount_in_words

# ---------------------------------------------------------------------------------- style
PAGE_FORMAT = "Letter"
MARGIN = 10.0
FOOTER_H = 12.0
ACCENT = (24, 54, 96)  # dark blue
ACCENT_TEXT = (255, 255, 255)
LIGHT = (236, 240, 246)
ZEBRA = (247, 248, 250)
BORDER = (180, 188, 200)
TEXT = (20, 20, 20)
MUTED = (95, 100, 110)

LEGEND = "Este documento es una representación impresa de un CFDI"

TITLES = {
    "I": "FACTURA",
    "E": "NOTA DE CRÉDITO",
    "T": "TRASLADO",
    "N": "RECIBO DE NÓMINA",
    "P": "RECIBO ELECTRÓNICO DE PAGO",
}

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
        "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u2022": "\xb7",
        "\u00a0": " ", "\u2009": " ", "\u200b": "", "\u20ac": "EUR", "\u2122": "(TM)",
        "\u0141": "L", "\u0142": "l", "\u0152": "OE", "\u0153": "oe", "\u0110": "D", "\u0111": "d",
        "\t": " ", "\r": " ",
    }
)


def latin1(text: str | None) -> str:
    """Make `text` drawable with a core font: NFC, common typography mapped, accents kept when
    latin-1 has them, otherwise stripped (NFKD), otherwise '?'."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text).translate(_TRANSLATE)
    try:
        text.encode("latin-1")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        if ord(ch) < 256:
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if ord(c) < 256 and not unicodedata.combining(c))
        out.append(base or "?")
    return "".join(out)


def money(value: str | Decimal | None, *, symbol: bool = True) -> str:
    """`1234.5` -> `$1,234.50`; keeps up to 6 decimals when the XML has them (`8.620690` ->
    `$8.62069`), so the printed amounts are exactly the stamped ones."""
    d = value if isinstance(value, Decimal) else dec(value)
    if d is None or not d.is_finite():
        return ""
    exponent = d.normalize().as_tuple().exponent
    places = min(6, max(2, -exponent if isinstance(exponent, int) else 2))
    text = f"{d:,.{places}f}"
    if symbol:
        return f"-${text[1:]}" if text.startswith("-") else f"${text}"
    return text


def quantity(value: str) -> str:
    d = dec(value)
    if d is None:
        return value
    n = d.normalize()
    return f"{n:f}" if n != n.to_integral() else f"{n.to_integral():f}"


def rate(tax: Tax) -> str:
    if tax.tipo_factor == "Exento":
        return "Exento"
    if tax.tipo_factor == "Local":  # implocal rates are already percentages
        d = dec(tax.tasa_o_cuota)
        return f"{d.normalize():f}% (local)" if d is not None else "(local)"
    d = dec(tax.tasa_o_cuota)
    if d is None:
        return tax.tipo_factor
    if tax.tipo_factor == "Cuota":
        return f"Cuota {d.normalize():f}"
    pct = (d * 100).normalize()
    places = max(2, -pct.as_tuple().exponent if pct.as_tuple().exponent < 0 else 0)
    return f"{pct:.{places}f}%"


def tax_name(code: str) -> str:
    return cat.description("c_Impuesto", code) or code


# ---------------------------------------------------------------------------------- pdf


@dataclass(slots=True)
class _Col:
    title: str
    width: float
    align: str = "L"


class _Doc(FPDF):
    def __init__(self, view: InvoiceView) -> None:
        super().__init__(orientation="P", unit="mm", format=PAGE_FORMAT)
        self.view = view
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(True, margin=FOOTER_H + 4)
        self.content_w = self.w - 2 * MARGIN
        self.set_title(latin1(f"CFDI {view.timbre.uuid if view.timbre else ''}".strip()))
        self.set_creator("facturacion-graph")

    # -- primitives ---------------------------------------------------------------------
    def font(self, size: float, style: str = "", family: str = "helvetica") -> None:
        # set_font() always re-emits the font operator; skip it when nothing changes. Compare
        # with fpdf's own state (add_page() restores fonts behind our back after header()).
        if self.font_family == family and self.font_style == style and self.font_size_pt == size:
            return
        self.set_font(family, style, size)

    def sw(self, text: str) -> float:
        """String width in mm for the current core font: a direct sum over the font's glyph
        widths (same result as `get_string_width`, ~20x faster: no fragment machinery)."""
        cw = self.current_font.cw
        return sum(cw.get(ch, 600) for ch in text) * self.font_size / 1000

    def color(self, rgb: tuple[int, int, int]) -> None:
        self.set_text_color(*rgb)

    def put(self, x: float, top: float, text: str, *, w: float | None = None, align: str = "L") -> None:
        """Draw one line whose box starts at `top` (baseline computed from the font size)."""
        if not text:
            return
        base = top + self.font_size * 0.82
        if align != "L" and w is not None:
            tw = self.sw(text)
            x = x + w - tw if align == "R" else x + (w - tw) / 2
        self.text(x, base, text)

    def wrap(self, text: str, width: float) -> list[str]:
        """Greedy word wrap for the current font; over-long words are broken by characters."""
        text = latin1(text)
        lines: list[str] = []
        sw = self.sw
        space = sw(" ")
        for para in text.split("\n"):
            line = ""
            line_w = 0.0
            for word in para.split():
                ww = sw(word)
                if ww > width:
                    if line:
                        lines.append(line)
                    chunks = self._break_word(word, width)
                    lines.extend(chunks[:-1])
                    line = chunks[-1]
                    line_w = sw(line)
                    continue
                if line and line_w + space + ww <= width:
                    line += " " + word
                    line_w += space + ww
                elif line:
                    lines.append(line)
                    line, line_w = word, ww
                else:
                    line, line_w = word, ww
            lines.append(line)
        while len(lines) > 1 and not lines[-1]:
            lines.pop()
        return lines or [""]

    def wrap_chars(self, text: str, width: float) -> list[str]:
        """Wrap by characters, ignoring spaces: seals and cadenas (base64 is one long token)."""
        text = latin1(" ".join(text.split()))
        return self._break_word(text, width) if text else [""]

    def _break_word(self, word: str, width: float) -> list[str]:
        chunks: list[str] = []
        # Estimate with the average glyph width, then correct: fast for base64 seals.
        sw = self.sw
        avg = sw(word) / len(word)
        start = 0
        while start < len(word):
            n = max(1, int(width / avg))
            while n > 1 and sw(word[start : start + n]) > width:
                n -= 1
            while start + n < len(word) and sw(word[start : start + n + 1]) <= width:
                n += 1
            chunks.append(word[start : start + n])
            start += n
        return chunks

    def lines_at(self, x: float, top: float, lines: Sequence[str], lh: float, *, w: float | None = None, align: str = "L") -> float:
        for i, line in enumerate(lines):
            self.put(x, top + i * lh, line, w=w, align=align)
        return top + len(lines) * lh

    def band(self, x: float, y: float, w: float, h: float, title: str, *, size: float = 7.5) -> None:
        self.set_fill_color(*ACCENT)
        self.rect(x, y, w, h, style="F")
        self.font(size, "B")
        self.color(ACCENT_TEXT)
        self.put(x + 2, y + (h - self.font_size) / 2, latin1(title))
        self.color(TEXT)

    def ensure(self, height: float) -> None:
        """Start a new page unless `height` mm still fit above the footer."""
        if self.get_y() + height > self.page_break_trigger:
            self.add_page()

    # -- fpdf hooks ---------------------------------------------------------------------
    def header(self) -> None:
        if self.page_no() == 1:
            self.set_y(MARGIN)
            return
        v = self.view
        self.font(8, "B")
        self.color(TEXT)
        self.put(MARGIN, MARGIN, latin1(v.emisor_nombre or v.emisor_rfc))
        self.font(7)
        self.color(MUTED)
        right = latin1(" ".join(p for p in (
            f"{TITLES.get(v.tipo_comprobante, 'CFDI')} {serie_folio(v)}".strip(),
            f"Folio fiscal: {v.timbre.uuid}" if v.timbre else "",
        ) if p))
        self.put(MARGIN, MARGIN, right, w=self.content_w, align="R")
        self.set_draw_color(*BORDER)
        self.line(MARGIN, MARGIN + 5, self.w - MARGIN, MARGIN + 5)
        self.color(TEXT)
        self.set_y(MARGIN + 7)

    def footer(self) -> None:
        y = self.h - FOOTER_H
        self.set_draw_color(*BORDER)
        self.line(MARGIN, y, self.w - MARGIN, y)
        self.font(6.5)
        self.color(MUTED)
        self.put(MARGIN, y + 1.5, latin1(f"{LEGEND} {self.view.version or '4.0'}."))
        # cell() (unlike text()) substitutes the total-pages alias "{nb}" at output time.
        self.set_xy(MARGIN, y + 1.0)
        self.cell(self.content_w, self.font_size + 0.4, f"Página {self.page_no()} de {{nb}}", align="R")
        if self.view.timbre:
            self.put(MARGIN, y + 4.5, latin1(f"Folio fiscal: {self.view.timbre.uuid}"))
        self.color(TEXT)


def serie_folio(v: InvoiceView) -> str:
    return "-".join(p for p in (v.serie, v.folio) if p)


# ---------------------------------------------------------------------------------- sections
LH = 3.3  # line height for 7pt text


def _kv_rows(doc: _Doc, x: float, top: float, w: float, rows: Sequence[tuple[str, str]], label_w: float) -> float:
    """Label/value rows; values wrap inside `w - label_w`. Returns the bottom y."""
    y = top
    for label, value in rows:
        if not value:
            continue
        doc.font(7, "B")
        doc.color(MUTED)
        doc.put(x, y, latin1(label))
        doc.font(7)
        doc.color(TEXT)
        lines = doc.wrap(value, w - label_w)
        y = doc.lines_at(x + label_w, y, lines, LH)
    return y


LOGO_MAX_W = 45.0
LOGO_MAX_H = 20.0


def _logo(doc: _Doc, data: bytes, x: float, y: float) -> tuple[float, float] | None:
    """Draw the logo fitted in LOGO_MAX_W x LOGO_MAX_H (aspect kept); returns its (w, h), or
    None when the bytes are not an image (a bad logo must never block the invoice)."""
    try:
        from PIL import Image  # fpdf2's own dependency

        img = Image.open(io.BytesIO(data))
        img.load()
        iw, ih = img.size
        if not iw or not ih:
            return None
        scale = min(LOGO_MAX_W / iw, LOGO_MAX_H / ih)
        w, h = iw * scale, ih * scale
        doc.image(img, x=x, y=y + (LOGO_MAX_H - h) / 2, w=w, h=h)
        return w, h
    except Exception:
        return None


def _header(doc: _Doc, v: InvoiceView, logo_png: bytes | None) -> None:
    top = MARGIN
    box_w = 92.0  # wide enough for the 36-character folio fiscal on one line
    box_x = doc.w - MARGIN - box_w
    left_x = MARGIN
    left_w = box_x - MARGIN - 4
    logo_h = 0.0
    if logo_png:
        lw = _logo(doc, logo_png, MARGIN, top)
        if lw:
            logo_h = LOGO_MAX_H
            left_x = MARGIN + lw[0] + 4
            left_w = box_x - left_x - 4
    # Emisor
    doc.font(11, "B")
    doc.color(ACCENT)
    y = doc.lines_at(left_x, top + 1, doc.wrap(v.emisor_nombre or v.emisor_rfc, left_w), 5)
    doc.color(TEXT)
    rows = [
        ("RFC:", v.emisor_rfc),
        ("Régimen fiscal:", cat.describe("c_RegimenFiscal", v.emisor_regimen)),
        ("Lugar de expedición:", f"C.P. {v.lugar_expedicion}" if v.lugar_expedicion else ""),
    ]
    if v.emisor_fac_atr_adquirente:
        rows.append(("Fac. atr. adquirente:", v.emisor_fac_atr_adquirente))
    y = _kv_rows(doc, left_x, y + 1, left_w, rows, 28)
    left_bottom = max(y, top + logo_h + 1)

    # Document box (right)
    band_h = 6.0
    doc.band(box_x, top, box_w, band_h, TITLES.get(v.tipo_comprobante, "CFDI"), size=9)
    t = v.timbre
    rows = [
        ("Serie y folio:", serie_folio(v) or "-"),
        ("Folio fiscal:", t.uuid if t else "SIN TIMBRAR"),
        ("Fecha de emisión:", v.fecha.replace("T", " ")),
        ("Fecha de certificación:", t.fecha_timbrado.replace("T", " ") if t else ""),
        ("No. de serie CSD emisor:", v.no_certificado),
        ("No. de serie CSD SAT:", t.no_certificado_sat if t else ""),
    ]
    y = _kv_rows(doc, box_x + 2, top + band_h + 1.2, box_w - 3, rows, 31)
    doc.set_draw_color(*BORDER)
    doc.rect(box_x, top, box_w, y + 1 - top)
    doc.set_y(max(left_bottom, y + 1) + 3)


def _parties(doc: _Doc, v: InvoiceView) -> None:
    top = doc.get_y()
    gap = 4.0
    w1 = (doc.content_w - gap) * 0.55
    w2 = doc.content_w - gap - w1
    x2 = MARGIN + w1 + gap
    band_h = 5.0
    doc.band(MARGIN, top, w1, band_h, "RECEPTOR")
    doc.band(x2, top, w2, band_h, "DATOS DEL COMPROBANTE")
    rec = [
        ("Nombre:", v.receptor_nombre),
        ("RFC:", v.receptor_rfc),
        ("Domicilio fiscal:", f"C.P. {v.receptor_domicilio_fiscal}" if v.receptor_domicilio_fiscal else ""),
        ("Régimen fiscal:", cat.describe("c_RegimenFiscal", v.receptor_regimen)),
        ("Uso del CFDI:", cat.describe("c_UsoCFDI", v.receptor_uso_cfdi)),
        ("Residencia fiscal:", v.receptor_residencia_fiscal),
        ("NumRegIdTrib:", v.receptor_num_reg_id_trib),
    ]
    y1 = _kv_rows(doc, MARGIN + 2, top + band_h + 1.2, w1 - 3, rec, 24)
    # XXX ("no currency", used by Pago and Traslado) has a long SAT description that says
    # nothing useful on paper: print the bare code.
    moneda = v.moneda if v.moneda == "XXX" else cat.describe("c_Moneda", v.moneda)
    comp = [
        ("Tipo de comprobante:", cat.describe("c_TipoDeComprobante", v.tipo_comprobante)),
        ("Exportación:", cat.describe("c_Exportacion", v.exportacion)),
        ("Forma de pago:", cat.describe("c_FormaPago", v.forma_pago)),
        ("Método de pago:", cat.describe("c_MetodoPago", v.metodo_pago)),
        ("Moneda:", moneda),
        ("Tipo de cambio:", v.tipo_cambio),
        ("Condiciones de pago:", v.condiciones_pago),
        ("Confirmación:", v.confirmacion),
        ("Versión CFDI:", v.version),
    ]
    y2 = _kv_rows(doc, x2 + 2, top + band_h + 1.2, w2 - 3, comp, 29)
    bottom = max(y1, y2) + 1
    doc.set_draw_color(*BORDER)
    doc.rect(MARGIN, top, w1, bottom - top)
    doc.rect(x2, top, w2, bottom - top)
    doc.set_y(bottom + 3)


def _info_lines(doc: _Doc, v: InvoiceView) -> None:
    """InformacionGlobal and CfdiRelacionados, compact, full width."""
    rows: list[tuple[str, str]] = []
    if v.informacion_global:
        ig = v.informacion_global
        rows.append((
            "Información global:",
            f"Periodicidad: {cat.describe('c_Periodicidad', ig.get('Periodicidad'))}   "
            f"Meses: {cat.describe('c_Meses', ig.get('Meses'))}   Año: {ig.get('Año', '')}",
        ))
    for rel in v.relacionados:
        rows.append((
            "CFDI relacionados:",
            f"Tipo de relación {cat.describe('c_TipoRelacion', rel.tipo_relacion)}: " + ", ".join(rel.uuids),
        ))
    if not rows:
        return
    doc.font(7)
    need = sum(len(doc.wrap(val, doc.content_w - 30)) for _, val in rows) * LH + 4
    doc.ensure(need)
    top = doc.get_y()
    doc.set_fill_color(*LIGHT)
    doc.rect(MARGIN, top, doc.content_w, need - 2, style="F")
    y = _kv_rows(doc, MARGIN + 2, top + 1, doc.content_w - 4, rows, 28)
    doc.set_y(y + 3)


CONCEPT_COLS = (
    _Col("Clave SAT", 16),
    _Col("No. ident.", 18),
    _Col("Cantidad", 16, "R"),
    _Col("Unidad", 20),
    _Col("Descripción", 0),  # flexible
    _Col("Valor unitario", 25, "R"),
    _Col("Descuento", 18, "R"),
    _Col("Importe", 26, "R"),
    _Col("Obj. imp.", 11, "C"),
)


def _concept_layout(doc: _Doc, v: InvoiceView) -> list[tuple[float, float, _Col] | None]:
    """Column boxes; "No. ident." and "Descuento" are dropped (None) when no concept uses
    them, giving the description the room."""
    has_id = any(c.no_identificacion for c in v.conceptos)
    has_disc = any(c.descuento for c in v.conceptos)
    cols = [
        None if (c.title == "No. ident." and not has_id) or (c.title == "Descuento" and not has_disc) else c
        for c in CONCEPT_COLS
    ]
    fixed = sum(c.width for c in cols if c)
    out: list[tuple[float, float, _Col] | None] = []
    x = MARGIN
    for c in cols:
        if c is None:
            out.append(None)
            continue
        w = c.width or (doc.content_w - fixed)
        out.append((x, w, c))
        x += w
    return out


def _concept_header(doc: _Doc, layout) -> None:
    top = doc.get_y()
    h = 5.5
    doc.set_fill_color(*ACCENT)
    doc.rect(MARGIN, top, doc.content_w, h, style="F")
    doc.font(6.5, "B")
    doc.color(ACCENT_TEXT)
    for x, w, c in filter(None, layout):
        doc.put(x + 1, top + (h - doc.font_size) / 2, latin1(c.title), w=w - 2, align=c.align)
    doc.color(TEXT)
    doc.set_y(top + h)


def _tax_text(t: Tax) -> str:
    kind = "Traslado" if t.kind == "T" else "Retención"
    parts = [f"{kind} {tax_name(t.impuesto)} {rate(t)}".strip()]
    if t.base:
        parts.append(f"Base {money(t.base)}")
    if t.importe:
        parts.append(f"Importe {money(t.importe)}")
    return "  ·  ".join(parts)


def _concepts(doc: _Doc, v: InvoiceView) -> None:
    if not v.conceptos:
        return
    layout = _concept_layout(doc, v)
    doc.ensure(5.5 + 8)
    _concept_header(doc, layout)
    lh = 3.0
    sub_lh = 2.7
    sub_x = MARGIN + CONCEPT_COLS[0].width + 1
    sub_w = doc.content_w - (sub_x - MARGIN) - 2
    for i, c in enumerate(v.conceptos):
        doc.font(6.8)
        cells = [(box, text) for box, text in zip(layout, _concept_cells(c)) if box is not None]
        wrapped = [(box, doc.wrap(text, box[1] - 2) if text else [""]) for box, text in cells]
        main_h = max(len(ls) for _, ls in wrapped) * lh
        doc.font(6, "I")
        subs: list[str] = []
        for t in c.taxes:
            subs += doc.wrap(_tax_text(t), sub_w)
        for extra in c.extras:
            subs += doc.wrap(extra, sub_w)
        row_h = main_h + len(subs) * sub_lh + 1.6
        if doc.get_y() + row_h > doc.page_break_trigger:
            doc.add_page()
            _concept_header(doc, layout)
        top = doc.get_y()
        if i % 2:
            doc.set_fill_color(*ZEBRA)
            doc.rect(MARGIN, top, doc.content_w, row_h, style="F")
        doc.font(6.8)
        doc.color(TEXT)
        for (x, w, col), lines in wrapped:
            doc.lines_at(x + 1, top + 0.8, lines, lh, w=w - 2, align=col.align)
        if subs:
            doc.font(6, "I")
            doc.color(MUTED)
            doc.lines_at(sub_x, top + 0.8 + main_h, subs, sub_lh)
            doc.color(TEXT)
        doc.set_draw_color(*BORDER)
        doc.line(MARGIN, top + row_h, doc.w - MARGIN, top + row_h)
        doc.set_y(top + row_h)
    doc.set_y(doc.get_y() + 3)


def _concept_cells(c: Concepto) -> list[str]:
    unidad = " ".join(p for p in (c.clave_unidad, c.unidad) if p)
    return [
        c.clave_prod_serv,
        c.no_identificacion,
        quantity(c.cantidad),
        unidad,
        c.descripcion,
        money(c.valor_unitario),
        money(c.descuento) if c.descuento else "",
        money(c.importe),
        c.objeto_imp,
    ]


def _grouped_taxes(v: InvoiceView) -> tuple[list[tuple[str, Decimal, Decimal | None]], list[tuple[str, Decimal]]]:
    """(traslados, retenciones) grouped for the summary, from the comprobante-level Impuestos
    (what was stamped) or, when absent, summed from the concepts."""
    traslados = list(v.traslados)
    retenciones = list(v.retenciones)
    if not traslados and not retenciones:
        for c in v.conceptos:
            for t in c.taxes:
                (traslados if t.kind == "T" else retenciones).append(t)
    for t in v.impuestos_locales:
        (traslados if t.kind == "T" else retenciones).append(t)
    tras: dict[str, list[Decimal]] = {}
    for t in traslados:
        key = f"{tax_name(t.impuesto)} {rate(t)}".strip()
        acc = tras.setdefault(key, [Decimal(0), Decimal(0)])
        acc[0] += dec(t.base) or 0
        acc[1] += dec(t.importe) or 0
    ret: dict[str, Decimal] = {}
    for t in retenciones:
        key = tax_name(t.impuesto) + (f" {rate(t)}" if t.tasa_o_cuota else "")
        ret[key] = ret.get(key, Decimal(0)) + (dec(t.importe) or 0)
    return [(k, b, i) for k, (b, i) in tras.items()], list(ret.items())


def _totals(doc: _Doc, v: InvoiceView) -> None:
    traslados, retenciones = _grouped_taxes(v)
    gap = 4.0
    right_w = 70.0
    left_w = doc.content_w - right_w - gap
    right_x = MARGIN + left_w + gap

    # Right: totals.
    rows: list[tuple[str, str, bool]] = [("Subtotal", money(v.subtotal), False)]
    if v.descuento and (dec(v.descuento) or 0) != 0:
        rows.append(("Descuento", "-" + money(v.descuento), False))
    for name, _base, imp in traslados:
        if not name.endswith("Exento"):  # exento has a base but no amount
            rows.append((f"{name} trasladado", money(imp), False))
    for name, imp in retenciones:
        rows.append((f"{name} retenido", "-" + money(imp), False))
    rows.append((f"Total {v.moneda}".strip(), money(v.total), True))

    # Left: tax detail + amount in words.
    words = _words(v)
    doc.font(7)
    tax_lines = []
    for name, base, imp in traslados:
        if name.endswith("Exento"):
            tax_lines.append(f"Traslado {name}: base {money(base)}")
        else:
            tax_lines.append(f"Traslado {name}: base {money(base)}, importe {money(imp)}")
    for name, imp in retenciones:
        tax_lines.append(f"Retención {name}: importe {money(imp)}")
    word_lines = doc.wrap(words, left_w - 4) if words else []
    left_h = 5 + len(word_lines) * LH + (5 + len(tax_lines) * LH if tax_lines else 0) + 3
    right_h = len(rows) * 4.6 + 2
    doc.ensure(max(left_h, right_h) + 2)
    top = doc.get_y()

    # totals box
    y = top
    for label, value, strong in rows:
        if strong:
            doc.set_fill_color(*ACCENT)
            doc.rect(right_x, y, right_w, 6, style="F")
            doc.font(9, "B")
            doc.color(ACCENT_TEXT)
            doc.put(right_x + 2, y + 1.3, latin1(label))
            doc.put(right_x, y + 1.3, value, w=right_w - 2, align="R")
            doc.color(TEXT)
            y += 6
        else:
            doc.font(7.5)
            doc.color(MUTED)
            doc.put(right_x + 2, y + 0.8, latin1(label))
            doc.color(TEXT)
            doc.put(right_x, y + 0.8, value, w=right_w - 2, align="R")
            y += 4.2
    doc.set_draw_color(*BORDER)
    doc.rect(right_x, top, right_w, y - top)
    right_bottom = y

    # left box
    y = top
    if word_lines:
        doc.band(MARGIN, y, left_w, 4.6, "IMPORTE CON LETRA", size=6.5)
        doc.font(7.5, "B")
        y = doc.lines_at(MARGIN + 2, y + 5.6, word_lines, LH + 0.3)
    if tax_lines:
        doc.band(MARGIN, y + 1.5, left_w, 4.6, "DESGLOSE DE IMPUESTOS", size=6.5)
        doc.font(7)
        y = doc.lines_at(MARGIN + 2, y + 7.1, tax_lines, LH)
    if word_lines or tax_lines:
        doc.rect(MARGIN, top, left_w, y + 1 - top)
    doc.set_y(max(y + 1, right_bottom) + 4)


def _words(v: InvoiceView) -> str:
    if v.tipo_comprobante == "P" and v.pagos is not None:
        total = dec(v.pagos.totales.get("MontoTotalPagos"))
        if total is not None:
            words = _safe_words(total, "MXN")
            return "Total de pagos: " + words if words else ""
        return ""
    total = dec(v.total)
    if total is None:
        return ""
    return _safe_words(total, v.moneda or "MXN")


def _safe_words(amount: Decimal, currency: str) -> str:
    """Amount in words, or "" when it cannot be said: words refuses ≥ 10^12 (long-scale
    "billón", never reached by a real invoice) and quantize fails beyond 28 digits. A
    representación impresa of an odd XML must still render, just without that line."""
    try:
        return amount_in_words(amount, currency)
    except (ValueError, InvalidOperation):
        return ""


PAGO_COLS = (
    _Col("Documento relacionado (UUID)", 0),
    _Col("Serie-folio", 22),
    _Col("Moneda", 12, "C"),
    _Col("Equiv.", 12, "R"),
    _Col("Parc.", 9, "R"),
    _Col("Saldo anterior", 24, "R"),
    _Col("Importe pagado", 24, "R"),
    _Col("Saldo insoluto", 24, "R"),
    _Col("Obj. imp.", 11, "C"),
)


def _pagos(doc: _Doc, v: InvoiceView) -> None:
    if v.pagos is None:
        return
    p20 = v.pagos
    doc.ensure(30)
    doc.band(MARGIN, doc.get_y(), doc.content_w, 5.5, f"COMPLEMENTO PARA RECEPCIÓN DE PAGOS {p20.version}".strip())
    doc.set_y(doc.get_y() + 6.5)
    if p20.totales:
        doc.font(7)
        labels = {
            "MontoTotalPagos": "Monto total de pagos",
            "TotalTrasladosBaseIVA16": "Base IVA 16%",
            "TotalTrasladosImpuestoIVA16": "IVA 16%",
            "TotalTrasladosBaseIVA8": "Base IVA 8%",
            "TotalTrasladosImpuestoIVA8": "IVA 8%",
            "TotalTrasladosBaseIVA0": "Base IVA 0%",
            "TotalTrasladosImpuestoIVA0": "IVA 0%",
            "TotalTrasladosBaseIVAExento": "Base IVA exento",
            "TotalRetencionesIVA": "IVA retenido",
            "TotalRetencionesISR": "ISR retenido",
            "TotalRetencionesIEPS": "IEPS retenido",
        }
        ordered = sorted(p20.totales.items(), key=lambda kv: kv[0] != "MontoTotalPagos")
        text = "   ".join(f"{labels.get(k, k)}: {money(val)}" for k, val in ordered)
        y = _kv_rows(doc, MARGIN + 2, doc.get_y(), doc.content_w - 4, [("Totales (MXN):", text)], 24)
        doc.set_y(y + 2)
    fixed = sum(c.width for c in PAGO_COLS)
    layout = []
    x = MARGIN
    for c in PAGO_COLS:
        w = c.width or (doc.content_w - fixed)
        layout.append((x, w, c))
        x += w
    for n, pago in enumerate(p20.pagos, 1):
        info = [
            ("Fecha de pago:", pago.fecha_pago.replace("T", " ")),
            ("Forma de pago:", cat.describe("c_FormaPago", pago.forma_de_pago)),
            ("Moneda / T.C.:", " / ".join(p for p in (pago.moneda, pago.tipo_cambio) if p)),
            ("Monto:", money(pago.monto)),
            ("No. operación:", pago.num_operacion),
        ]
        doc.font(7)
        doc.ensure(4 + 5 * LH + 10)
        top = doc.get_y()
        doc.font(7.5, "B")
        doc.color(ACCENT)
        doc.put(MARGIN, top, f"Pago {n}")
        doc.color(TEXT)
        half = doc.content_w / 2
        y1 = _kv_rows(doc, MARGIN + 2, top + 4, half - 4, info[:3], 24)
        y2 = _kv_rows(doc, MARGIN + half, top + 4, half - 2, info[3:], 24)
        if pago.taxes:
            y = max(y1, y2)
            y = _kv_rows(doc, MARGIN + 2, y, doc.content_w - 4,
                         [("Impuestos P:", "; ".join(_tax_text(t) for t in pago.taxes))], 24)
            y1 = y
        doc.set_y(max(y1, y2) + 1.5)
        if not pago.doctos:
            continue
        # doctos table
        doc.ensure(5 + 4)
        htop = doc.get_y()
        doc.set_fill_color(*LIGHT)
        doc.rect(MARGIN, htop, doc.content_w, 4.6, style="F")
        doc.font(6.3, "B")
        for x, w, c in layout:
            doc.put(x + 1, htop + 1, latin1(c.title), w=w - 2, align=c.align)
        doc.set_y(htop + 4.6)
        doc.font(6.8)
        for d in pago.doctos:
            if doc.get_y() + 4 > doc.page_break_trigger:
                doc.add_page()
            top = doc.get_y()
            cells = [
                d.id_documento, "-".join(p for p in (d.serie, d.folio) if p), d.moneda_dr,
                d.equivalencia_dr, d.num_parcialidad, money(d.imp_saldo_ant), money(d.imp_pagado),
                money(d.imp_saldo_insoluto), d.objeto_imp_dr,
            ]
            for (x, w, c), text in zip(layout, cells):
                doc.put(x + 1, top + 0.7, latin1(text), w=w - 2, align=c.align)
            doc.set_draw_color(*BORDER)
            doc.line(MARGIN, top + 4, doc.w - MARGIN, top + 4)
            doc.set_y(top + 4)
        doc.set_y(doc.get_y() + 3)


NOMINA_LABELS = {
    "TipoNomina": "Tipo de nómina:",
    "FechaPago": "Fecha de pago:",
    "FechaInicialPago": "Periodo del:",
    "FechaFinalPago": "Periodo al:",
    "NumDiasPagados": "Días pagados:",
    "TotalPercepciones": "Total percepciones:",
    "TotalDeducciones": "Total deducciones:",
    "TotalOtrosPagos": "Total otros pagos:",
    "RegistroPatronal": "Registro patronal:",
    "RfcPatronOrigen": "RFC patrón origen:",
}
NOMINA_RECEPTOR_LABELS = {
    "NumEmpleado": "No. empleado:",
    "Curp": "CURP:",
    "NumSeguridadSocial": "No. seguridad social:",
    "Puesto": "Puesto:",
    "Departamento": "Departamento:",
    "FechaInicioRelLaboral": "Inicio relación laboral:",
    "Antigüedad": "Antigüedad:",
    "TipoContrato": "Tipo de contrato:",
    "TipoJornada": "Tipo de jornada:",
    "TipoRegimen": "Tipo de régimen:",
    "PeriodicidadPago": "Periodicidad de pago:",
    "RiesgoPuesto": "Riesgo del puesto:",
    "SalarioBaseCotApor": "Salario base cot.:",
    "SalarioDiarioIntegrado": "Salario diario integrado:",
    "ClaveEntFed": "Entidad federativa:",
    "Banco": "Banco:",
    "CuentaBancaria": "Cuenta bancaria:",
}
_MONEY_ATTRS = {"TotalPercepciones", "TotalDeducciones", "TotalOtrosPagos", "SalarioBaseCotApor", "SalarioDiarioIntegrado"}


def _nomina(doc: _Doc, v: InvoiceView) -> None:
    nom = v.nomina
    if nom is None:
        return

    def rows(attrs: dict[str, str], labels: dict[str, str]) -> list[tuple[str, str]]:
        out = []
        for key, label in labels.items():
            val = attrs.get(key, "")
            if key == "TipoNomina":
                val = {"O": "O - Ordinaria", "E": "E - Extraordinaria"}.get(val, val)
            elif key in _MONEY_ATTRS:
                val = money(val)
            out.append((label, val))
        return out

    left = rows({**nom.attrs, **nom.emisor}, NOMINA_LABELS)
    right = rows(nom.receptor, NOMINA_RECEPTOR_LABELS)
    doc.font(7)
    n_rows = max(sum(1 for _, val in left if val), sum(1 for _, val in right if val))
    doc.ensure(6.5 + n_rows * LH + 12)
    top = doc.get_y()
    doc.band(MARGIN, top, doc.content_w, 5.5, f"COMPLEMENTO DE NÓMINA {nom.attrs.get('Version', '')}".strip())
    half = doc.content_w / 2
    y1 = _kv_rows(doc, MARGIN + 2, top + 6.7, half - 4, left, 28)
    y2 = _kv_rows(doc, MARGIN + half, top + 6.7, half - 2, right, 34)
    doc.set_y(max(y1, y2) + 2)
    if not nom.lines:
        return
    cols = [("Tipo", 20, "L"), ("Clave", 14, "L"), ("Concepto", 0, "L"),
            ("Gravado", 26, "R"), ("Exento", 26, "R"), ("Importe", 26, "R")]
    fixed = sum(c[1] for c in cols)
    layout = []
    x = MARGIN
    for title, w, align in cols:
        w = w or doc.content_w - fixed
        layout.append((x, w, title, align))
        x += w

    def head() -> None:
        htop = doc.get_y()
        doc.set_fill_color(*LIGHT)
        doc.rect(MARGIN, htop, doc.content_w, 4.6, style="F")
        doc.font(6.3, "B")
        for x, w, title, align in layout:
            doc.put(x + 1, htop + 1, latin1(title), w=w - 2, align=align)
        doc.set_y(htop + 4.6)

    doc.ensure(4.6 + 4)
    head()
    kinds = {"P": "Percepción", "D": "Deducción", "O": "Otro pago"}
    for line in nom.lines:
        doc.font(6.8)
        concepto = doc.wrap(line.concepto, layout[2][1] - 2)
        h = len(concepto) * 3.0 + 1.2
        if doc.get_y() + h > doc.page_break_trigger:
            doc.add_page()
            head()
        top = doc.get_y()
        doc.font(6.8)
        cells = [f"{kinds[line.kind]} {line.tipo}", line.clave, None,
                 money(line.gravado), money(line.exento), money(line.importe)]
        for (x, w, _t, align), text in zip(layout, cells):
            if text is None:
                doc.lines_at(x + 1, top + 0.6, concepto, 3.0)
            else:
                doc.put(x + 1, top + 0.6, latin1(text), w=w - 2, align=align)
        doc.set_draw_color(*BORDER)
        doc.line(MARGIN, top + h, doc.w - MARGIN, top + h)
        doc.set_y(top + h)
    doc.set_y(doc.get_y() + 3)


def _qr(doc: _Doc, url: str, x: float, y: float, size: float) -> None:
    qr = segno.make(url, error="m", boost_error=False, micro=False)
    matrix = qr.matrix
    n = len(matrix)
    quiet = 2
    module = size / (n + 2 * quiet)
    doc.set_fill_color(0, 0, 0)
    ox, oy = x + quiet * module, y + quiet * module
    rect = doc.rect
    for r, row in enumerate(matrix):
        c = 0
        while c < n:
            if row[c]:
                start = c
                while c < n and row[c]:
                    c += 1
                # Tiny overlap avoids hairline gaps between modules in some viewers.
                rect(ox + start * module, oy + r * module, (c - start) * module + 0.02, module + 0.02, style="F")
            else:
                c += 1


def _stamp(doc: _Doc, v: InvoiceView) -> None:
    t = v.timbre
    qr_size = 34.0  # Anexo 20: the QR must be at least 2.75 cm per side
    text_x = MARGIN + qr_size + 4
    text_w = doc.content_w - qr_size - 4
    blocks: list[tuple[str, list[str]]] = []
    doc.font(5.8, family="courier")
    if t is not None:
        blocks = [
            ("Sello digital del CFDI", doc.wrap_chars(v.sello, text_w)),
            ("Sello digital del SAT", doc.wrap_chars(t.sello_sat, text_w)),
            ("Cadena original del complemento de certificación digital del SAT", doc.wrap_chars(t.cadena, text_w)),
        ]
    else:
        blocks = [("Sello digital del CFDI", doc.wrap_chars(v.sello, text_w))]
    seal_lh = 2.5
    text_h = sum(4 + len(lines) * seal_lh + 1 for _, lines in blocks)
    info_rows: list[tuple[str, str]] = []
    if t is not None:
        info_rows = [
            ("Folio fiscal:", t.uuid),
            ("Fecha de certificación:", t.fecha_timbrado.replace("T", " ")),
            ("RFC del PAC:", t.rfc_prov_certif),
            ("No. de serie CSD SAT:", t.no_certificado_sat),
            ("No. de serie CSD emisor:", v.no_certificado),
        ]
        if t.leyenda:
            info_rows.append(("Leyenda:", t.leyenda))
    info_h = 5 + len(info_rows) * LH + 2 if info_rows else 0
    height = 6 + max(text_h, qr_size) + info_h + 6
    doc.ensure(height)
    top = doc.get_y()
    doc.band(MARGIN, top, doc.content_w, 5, "TIMBRE FISCAL DIGITAL" if t else "SELLO DIGITAL (SIN TIMBRAR)")
    y = top + 6.5
    if info_rows:
        half = doc.content_w / 2
        y1 = _kv_rows(doc, MARGIN + 2, y, half - 4, info_rows[:3], 31)
        y2 = _kv_rows(doc, MARGIN + half, y, half - 2, info_rows[3:], 33)
        y = max(y1, y2) + 2
    if t is not None:
        _qr(doc, verification_url(t.uuid, v.emisor_rfc, v.receptor_rfc, v.total, v.sello), MARGIN, y, qr_size)
    yy = y
    for title, lines in blocks:
        doc.font(6.5, "B")
        doc.color(ACCENT)
        doc.put(text_x, yy, latin1(title))
        doc.color(TEXT)
        doc.font(5.8, family="courier")
        yy = doc.lines_at(text_x, yy + 3.2, lines, seal_lh) + 1.5
    bottom = max(yy, y + qr_size) + 2
    doc.font(7, "B")
    doc.color(MUTED)
    doc.put(MARGIN, bottom, latin1(f"{LEGEND} {v.version or '4.0'}."), w=doc.content_w, align="C")
    doc.color(TEXT)
    doc.set_y(bottom + 5)


def _other_complements(doc: _Doc, v: InvoiceView) -> None:
    names = [n for n in v.complementos]
    if not names:
        return
    doc.font(6.5, "I")
    doc.color(MUTED)
    doc.ensure(5)
    doc.put(MARGIN, doc.get_y(), latin1("Complementos incluidos en el XML: " + ", ".join(names)))
    doc.color(TEXT)
    doc.set_y(doc.get_y() + 4)


# ---------------------------------------------------------------------------------- public


def render_view_pdf(view: InvoiceView, *, logo_png: bytes | None = None, compress: bool = True) -> bytes:
    doc = _Doc(view)
    doc.set_compression(compress)
    doc.add_page()
    doc.color(TEXT)
    _header(doc, view, logo_png)
    _parties(doc, view)
    _info_lines(doc, view)
    _concepts(doc, view)
    _pagos(doc, view)
    _nomina(doc, view)
    _totals(doc, view)
    _other_complements(doc, view)
    _stamp(doc, view)
    return bytes(doc.output())


def render_invoice_pdf(xml: bytes, *, logo_png: bytes | None = None, compress: bool = True) -> bytes:
    """The representación impresa of the stamped CFDI 4.0 `xml`, as PDF bytes.

    `logo_png`: optional issuer logo (PNG/JPEG bytes), drawn top-left at 20 mm height.
    `compress=False` leaves the content streams readable (tests search the raw bytes).
    Raises `UnsafeXmlError` (malformed/hostile XML) or `NotACfdi40Error`.
    """
    return render_view_pdf(parse_invoice(xml), logo_png=logo_png, compress=compress)
