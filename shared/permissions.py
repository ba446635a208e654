"""Roles and the permissions they grant: the one list every subgraph checks against.

Tokens carry permission names (`perms` claim), never roles, so a subgraph needs no knowledge of
roles and an API key can carry any subset.
"""

from __future__ import annotations

from enum import Enum


class Permission(str, Enum):
    ORG_MANAGE = "org:manage"  # organization profile, members, API keys
    MEMBERS_READ = "members:read"
    ISSUER_MANAGE = "issuer:manage"  # issuer profile, CSD upload, series
    CUSTOMER_MANAGE = "customer:manage"
    INVOICE_READ = "invoice:read"
    INVOICE_ISSUE = "invoice:issue"  # create, edit drafts, stamp
    INVOICE_CANCEL = "invoice:cancel"
    EXPENSE_SUBMIT = "expense:submit"
    EXPENSE_READ = "expense:read"  # everybody's expenses, not only one's own
    EXPENSE_APPROVE = "expense:approve"
    NOTIFICATION_MANAGE = "notification:manage"  # organization-wide notification defaults


P = Permission

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "OWNER": frozenset(Permission),
    "ADMIN": frozenset(Permission),
    "ACCOUNTANT": frozenset({
        P.MEMBERS_READ, P.ISSUER_MANAGE, P.CUSTOMER_MANAGE, P.INVOICE_READ, P.INVOICE_ISSUE,
        P.INVOICE_CANCEL, P.EXPENSE_SUBMIT, P.EXPENSE_READ, P.EXPENSE_APPROVE,
    }),
    "APPROVER": frozenset({P.MEMBERS_READ, P.INVOICE_READ, P.EXPENSE_SUBMIT, P.EXPENSE_READ, P.EXPENSE_APPROVE}),
    "MEMBER": frozenset({P.INVOICE_READ, P.EXPENSE_SUBMIT}),
}

ROLES = tuple(ROLE_PERMISSIONS)
ALL_PERMISSIONS = frozenset(p.value for p in Permission)


def permissions_for_role(role: str) -> list[str]:
    return sorted(p.value for p in ROLE_PERMISSIONS[role])
