"""Who hears about what: the pure decision functions, one event type and preference at a time."""

from __future__ import annotations

import uuid

import pytest

from shared.events import (
    InvoiceCancellationRejected, InvoiceCancelled, InvoiceStampFailed, MemberInvited,
    MemberRemoved, MfaDisabled, MfaEnabled, PasswordChanged, PasswordResetRequested, SignUpRequested, UserRegistered, make_event,
)
from subgraphs.notification.decisions import (
    DIGEST_TEMPLATE, EMAIL, IN_APP, NOTHING, Facts, Preferences, RecipientInfo, decide, idempotency_key, is_locked,
    outgoing,
)
from tests.events.helpers import invoice_stamp_failed, invoice_stamped, verification_requested

ORG = uuid.uuid4()
ANA = uuid.uuid4()
ANA_INFO = RecipientInfo(ANA, "ana@example.mx", "Ana López", "es-MX")


def ev(payload, org=ORG):
    return make_event(payload, organization_id=org, actor_id=None)


def facts(prefs: Preferences | None = None, *, send_cfdi=False, locale="es-MX") -> Facts:
    info = RecipientInfo(ANA, ANA_INFO.email, ANA_INFO.full_name, locale)
    return Facts(recipients={ANA: info}, preferences=prefs or Preferences(), send_cfdi_to_customer=send_cfdi)


def test_links_are_named_never_written():
    """Issue #7: a mail row names its single-use link; auth mints it when the mail is sent."""
    p = verification_requested(locale="en")
    d = decide(ev(p), Facts())
    assert d.in_app == ()
    (mail,) = d.emails
    assert (mail.to_address, mail.template, mail.locale, mail.user_id) == (p.email, "verify_email", "en", p.user_id)
    assert mail.context["link"] == {"kind": "verify_email", "ref": str(p.verification_ref)} and mail.context["welcome"] is False
    assert not any("http" in str(v) for v in mail.context.values())


def test_sign_up_mails_the_address_a_link_to_finish():
    p = SignUpRequested(sign_up_id=uuid.uuid4(), email="nueva@example.mx", full_name="Nueva", locale="es-MX")
    (mail,) = decide(ev(p), Facts()).emails
    assert (mail.to_address, mail.template, mail.user_id) == ("nueva@example.mx", "verify_email", None)
    assert mail.context["link"] == {"kind": "sign_up", "ref": str(p.sign_up_id)} and mail.context["welcome"] is True


def test_user_registered_only_projects_the_recipient():
    p = UserRegistered(user_id=ANA, email="ana@example.mx", full_name="Ana", locale="es-MX")
    assert decide(ev(p), Facts()) == NOTHING


def test_password_reset_is_sent_even_when_the_user_turned_email_off():
    prefs = Preferences(user={(ANA, "security", EMAIL): False}, org_defaults={("security", EMAIL): False})
    p = PasswordResetRequested(request_id=uuid.uuid4(), email="ana@example.mx")
    (mail,) = decide(ev(p), facts(prefs)).emails
    assert mail.template == "password_reset" and mail.context["link"] == {"kind": "reset_password", "ref": str(p.request_id)}


def test_member_invited_mails_the_invited_address():
    p = MemberInvited(invitation_id=uuid.uuid4(), email="nuevo@example.mx", role="MEMBER", organization_name="Tacos SA",
                      invited_by_name="Ana")
    (mail,) = decide(ev(p), Facts()).emails
    assert (mail.to_address, mail.template, mail.user_id) == ("nuevo@example.mx", "member_invited", None)
    assert mail.context["link"] == {"kind": "invitation", "ref": str(p.invitation_id)}


@pytest.mark.parametrize("payload_cls,kind", [(MfaEnabled, "mfa_enabled"), (MfaDisabled, "mfa_disabled"),
                                              (PasswordChanged, "password_changed")])
def test_security_changes_always_mail_the_user(payload_cls, kind):
    prefs = Preferences(user={(ANA, "security", EMAIL): False})
    (mail,) = decide(ev(payload_cls(user_id=ANA, email="ana@example.mx")), facts(prefs, locale="en")).emails
    assert mail.template == "security_notice" and mail.context["kind"] == kind and mail.locale == "en"


def test_locked_category_cannot_be_turned_off():
    assert is_locked("security") and not is_locked("invoicing")
    prefs = Preferences(user={(ANA, "security", EMAIL): False, (ANA, "security", IN_APP): False})
    assert prefs.allows(ANA, "security", EMAIL) and prefs.allows(ANA, "security", IN_APP)


def test_preferences_resolve_user_then_organization_default_then_on():
    prefs = Preferences(user={(ANA, "invoicing", EMAIL): True}, org_defaults={("invoicing", EMAIL): False,
                                                                             ("invoicing", IN_APP): False})
    other = uuid.uuid4()
    assert prefs.allows(ANA, "invoicing", EMAIL)  # own choice wins
    assert not prefs.allows(other, "invoicing", EMAIL)  # organization default
    assert prefs.allows(other, "account", EMAIL)  # nothing said: on


def test_invoice_stamped_notifies_the_creator_in_app_and_by_email():
    d = decide(ev(invoice_stamped(created_by=ANA)), facts())
    (n,) = d.in_app
    assert n.user_id == ANA and n.type == "invoice.stamped" and n.title == "Factura A-123 timbrada"
    assert "$1,160.00 MXN" in n.body and n.data["label"] == "A-123"
    assert [(m.to_address, m.template) for m in d.emails] == [("ana@example.mx", "invoice_status")]


def test_email_off_means_in_app_only():
    prefs = Preferences(user={(ANA, "invoicing", EMAIL): False})
    d = decide(ev(invoice_stamped(created_by=ANA)), facts(prefs))
    assert len(d.in_app) == 1 and d.emails == ()


def test_in_app_off_and_email_on():
    prefs = Preferences(org_defaults={("invoicing", IN_APP): False})
    d = decide(ev(invoice_stamped(created_by=ANA)), facts(prefs))
    assert d.in_app == () and len(d.emails) == 1


def test_english_recipient_gets_english_texts():
    (n,) = decide(ev(invoice_stamped(created_by=ANA)), facts(locale="en")).in_app
    assert n.title == "Invoice A-123 stamped"


def test_customer_gets_the_cfdi_only_when_the_organization_opted_in():
    p = invoice_stamped(created_by=ANA, customer_email="cliente@example.mx")
    assert all(m.template != "cfdi_to_customer" for m in decide(ev(p), facts()).emails)
    mails = {m.template: m for m in decide(ev(p), facts(send_cfdi=True)).emails}
    customer = mails["cfdi_to_customer"]
    assert customer.to_address == "cliente@example.mx" and customer.user_id is None
    assert [(a.path, a.content_type) for a in customer.attachments] == [(p.xml_path, "application/xml"),
                                                                         (p.pdf_path, "application/pdf")]
    assert customer.attachments[0].filename == f"{p.uuid}.xml"


def test_no_customer_email_means_no_customer_mail():
    p = invoice_stamped(created_by=ANA, customer_email=None)
    assert all(m.template != "cfdi_to_customer" for m in decide(ev(p), facts(send_cfdi=True)).emails)


def test_customer_mail_does_not_depend_on_the_creators_preferences():
    prefs = Preferences(user={(ANA, "invoicing", EMAIL): False, (ANA, "invoicing", IN_APP): False})
    d = decide(ev(invoice_stamped(created_by=ANA)), facts(prefs, send_cfdi=True))
    assert d.in_app == () and [m.template for m in d.emails] == ["cfdi_to_customer"]


def _ref(**extra):
    return dict(invoice_id=uuid.uuid4(), series=None, folio=7, invoice_type="I", total="100.00", currency="MXN",
                customer_name="Cliente", customer_rfc="XAXX010101000", created_by=ANA, **extra)


@pytest.mark.parametrize("payload,title", [
    (InvoiceStampFailed(**_ref(code="CFDI40102", message="RFC inválido")), "No se pudo timbrar la factura 7"),
    (InvoiceCancelled(**_ref(uuid="ABC", reason="02")), "Factura 7 cancelada"),
    (InvoiceCancellationRejected(**_ref(uuid="ABC")), "Cancelación rechazada: factura 7"),
])
def test_other_invoice_outcomes_reach_the_creator(payload, title):
    d = decide(ev(payload), facts())
    assert [n.title for n in d.in_app] == [title]
    assert [m.template for m in d.emails] == ["invoice_status"]


def test_unknown_creator_gets_in_app_but_no_email():
    # No recipient row yet (the projection has not seen the user): no address to write to.
    d = decide(ev(invoice_stamped(created_by=ANA)), Facts())
    assert len(d.in_app) == 1 and d.emails == ()


def test_events_nobody_needs_to_hear_about_decide_nothing():
    d = decide(ev(MemberRemoved(user_id=ANA)), facts())
    assert d.in_app == () and d.emails == ()


def test_idempotency_key_is_event_recipient_template():
    p = verification_requested()
    e = ev(p)
    (mail,) = decide(e, Facts()).emails
    assert idempotency_key([e.id], mail) == f"{e.id}:{p.email}:verify_email"


# --- digests: the status mails of one batch, per recipient ----------------------------------------

BEA = uuid.uuid4()


def _mails(*events, send_cfdi=False, locales=None):
    """(event, intent) of every e-mail the events decide, in order, as the service collects them."""
    locales = locales or {}
    recipients = {u: RecipientInfo(u, f"{n}@example.mx", n.title(), locales.get(u, "es-MX"))
                  for u, n in ((ANA, "ana"), (BEA, "bea"))}
    f = Facts(recipients=recipients, send_cfdi_to_customer=send_cfdi)
    return [(e, m) for e in events for m in decide(e, f).emails]


def test_a_lone_status_mail_stays_the_single_mail():
    e = ev(invoice_stamped(created_by=ANA))
    ((_, mail),) = _mails(e)
    (out,) = outgoing(_mails(e))
    assert out.events == (e,) and out.intent == mail and out.intent.template == "invoice_status"
    assert out.idempotency_key == f"{e.id}:ana@example.mx:invoice_status"


def test_two_or_more_stamps_for_one_recipient_become_one_digest_listing_each():
    events = [ev(invoice_stamped(created_by=ANA, customer_email=None, folio=n, total=f"{n}00.00")) for n in (1, 2, 3)]
    (out,) = outgoing(_mails(*events))
    assert out.events == tuple(events)
    assert (out.intent.template, out.intent.to_address, out.intent.user_id) == (DIGEST_TEMPLATE, "ana@example.mx", ANA)
    assert out.intent.context == {"full_name": "Ana", "kind": "invoice.stamped", "count": 3, "invoices": [
        {"label": f"A-{n}", "customer": "Cliente Ejemplo SA de CV", "total": f"${n}00.00 MXN", "uuid": e.payload["uuid"]}
        for n, e in zip((1, 2, 3), events)]}


def test_digests_are_per_recipient_organization_language_and_kind_and_leave_other_mail_alone():
    other_org = uuid.uuid4()
    a1, a2 = (ev(invoice_stamped(created_by=ANA)) for _ in range(2))  # customer mails too (send_cfdi)
    b1, b2 = (ev(invoice_stamped(created_by=BEA, customer_email=None)) for _ in range(2))
    lone = ev(invoice_stamped(created_by=ANA, customer_email=None), org=other_org)
    f1, f2 = (ev(invoice_stamp_failed(created_by=ANA)) for _ in range(2))
    out = outgoing(_mails(a1, b1, lone, a2, f1, b2, f2, send_cfdi=True, locales={BEA: "en"}))
    summary = [(o.intent.template, o.intent.to_address, [e.id for e in o.events]) for o in out]
    assert summary == [
        (DIGEST_TEMPLATE, "ana@example.mx", [a1.id, a2.id]),  # where its first mail was
        ("cfdi_to_customer", "cliente@example.mx", [a1.id]),
        (DIGEST_TEMPLATE, "bea@example.mx", [b1.id, b2.id]),
        ("invoice_status", "ana@example.mx", [lone.id]),  # another organization
        ("cfdi_to_customer", "cliente@example.mx", [a2.id]),
        (DIGEST_TEMPLATE, "ana@example.mx", [f1.id, f2.id]),
    ]
    assert out[2].intent.locale == "en" and out[5].intent.context["kind"] == "invoice.stamp_failed"
    assert out[5].intent.context["invoices"][0]["message"] == "RFC del receptor inválido"


def test_status_mails_of_other_kinds_are_never_digested():
    events = [ev(InvoiceCancelled(**_ref(uuid="ABC", reason="02"))) for _ in range(2)]
    assert [o.intent.template for o in outgoing(_mails(*events))] == ["invoice_status", "invoice_status"]


def test_a_digest_key_depends_only_on_the_events_it_covers():
    events = [ev(invoice_stamped(created_by=ANA, customer_email=None)) for _ in range(3)]
    (out,) = outgoing(_mails(*events))
    (again,) = outgoing(_mails(*events))
    assert out.idempotency_key == again.idempotency_key == idempotency_key([e.id for e in reversed(events)], out.intent)
    (fewer,) = outgoing(_mails(*events[:2]))
    assert fewer.idempotency_key != out.idempotency_key
    assert out.idempotency_key.endswith(f":ana@example.mx:{DIGEST_TEMPLATE}")


def test_a_digest_lists_at_most_the_cap_and_counts_all(monkeypatch):
    from subgraphs.notification import decisions

    monkeypatch.setattr(decisions, "DIGEST_MAX_LINES", 2)
    (out,) = outgoing(_mails(*(ev(invoice_stamped(created_by=ANA, customer_email=None)) for _ in range(3))))
    assert out.intent.context["count"] == 3 and len(out.intent.context["invoices"]) == 2 and len(out.events) == 3
