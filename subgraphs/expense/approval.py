"""Expense approval as data: the status machine, the organization's policy, who may act next.

Pure functions, no I/O: the service loads the facts (policy, roles, prior approvals) and asks.

- One transition table decides every status change.
- A policy is an ordered list of steps; a step applies when the expense's MXN amount is above its
  threshold (and, optionally, only for some categories or submitter roles). The chain of an
  expense is the steps that apply, fixed when it is submitted; each step needs one distinct
  approver holding the step's permission (and role, when the step names one).
- Nobody approves their own expense, and nobody approves twice in one round; a resubmission
  starts a new round, so earlier approvals no longer count.
- Category limits either flag the expense (approvers see why) or block its submission.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any

from shared.permissions import Permission


class Status(str, Enum):
    DRAFT = "DRAFT"
    SUBMITTED = "SUBMITTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    REIMBURSED = "REIMBURSED"


class Action(str, Enum):
    SUBMIT = "SUBMIT"
    APPROVE_STEP = "APPROVE_STEP"  # an approval that leaves further steps to go
    APPROVE = "APPROVE"  # the approval that completes the chain
    REJECT = "REJECT"
    REIMBURSE = "REIMBURSE"


S, A = Status, Action
TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (S.DRAFT, A.SUBMIT): S.SUBMITTED,
    (S.REJECTED, A.SUBMIT): S.SUBMITTED,  # resubmission after changes: a new round
    (S.SUBMITTED, A.APPROVE_STEP): S.SUBMITTED,
    (S.SUBMITTED, A.APPROVE): S.APPROVED,
    (S.SUBMITTED, A.REJECT): S.REJECTED,
    (S.APPROVED, A.REIMBURSE): S.REIMBURSED,
}
EDITABLE = frozenset({S.DRAFT, S.REJECTED})


class TransitionError(ValueError):
    def __init__(self, status: Status, action: Action):
        super().__init__(f"No se puede {ACTION_VERBS[action]} un gasto en estado {STATUS_NAMES[status]}.")
        self.status, self.action = status, action


ACTION_VERBS = {A.SUBMIT: "enviar", A.APPROVE_STEP: "aprobar", A.APPROVE: "aprobar", A.REJECT: "rechazar",
                A.REIMBURSE: "reembolsar"}
STATUS_NAMES = {S.DRAFT: "borrador", S.SUBMITTED: "enviado", S.APPROVED: "aprobado", S.REJECTED: "rechazado",
                S.REIMBURSED: "reembolsado"}


def transition(status: Status, action: Action) -> Status:
    try:
        return TRANSITIONS[(Status(status), Action(action))]
    except KeyError:
        raise TransitionError(Status(status), Action(action)) from None


# --- policy -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One approval the chain needs when the expense is above `above_mxn`."""

    above_mxn: Decimal = Decimal("0")
    permission: str = Permission.EXPENSE_APPROVE.value
    role: str | None = None  # e.g. OWNER: only a member with this role may approve the step
    categories: frozenset[uuid.UUID] = frozenset()  # empty: every category
    submitter_roles: frozenset[str] = frozenset()  # empty: whoever submitted

    def applies(self, amount_mxn: Decimal, category_id: uuid.UUID | None, submitter_role: str | None) -> bool:
        if amount_mxn <= self.above_mxn:
            return False
        if self.categories and category_id not in self.categories:
            return False
        return not self.submitter_roles or submitter_role in self.submitter_roles


@dataclass(frozen=True)
class Policy:
    steps: tuple[Step, ...]

    def to_json(self) -> dict[str, Any]:
        return {"steps": [{"aboveMxn": str(s.above_mxn), "permission": s.permission, "role": s.role,
                           "categories": sorted(str(c) for c in s.categories),
                           "submitterRoles": sorted(s.submitter_roles)} for s in self.steps]}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Policy":
        if not data:
            return DEFAULT_POLICY
        return cls(tuple(Step(above_mxn=Decimal(s["aboveMxn"]), permission=s["permission"], role=s.get("role"),
                              categories=frozenset(uuid.UUID(c) for c in s.get("categories", [])),
                              submitter_roles=frozenset(s.get("submitterRoles", []))) for s in data["steps"]))


# Up to 5,000 MXN one approver; above that a second one; above 50,000 also the OWNER.
DEFAULT_POLICY = Policy((
    Step(Decimal("0")),
    Step(Decimal("5000")),
    Step(Decimal("50000"), role="OWNER"),
))


@dataclass(frozen=True)
class PolicyProblem:
    field: list[str]
    code: str
    message: str


def policy_problems(policy: Policy, known_roles: Iterable[str], known_permissions: Iterable[str]) -> list[PolicyProblem]:
    roles, perms = set(known_roles), set(known_permissions)
    out: list[PolicyProblem] = []
    if not policy.steps:
        out.append(PolicyProblem(["input", "steps"], "REQUIRED", "La política necesita al menos un paso de aprobación."))
    for i, s in enumerate(policy.steps):
        at = ["input", "steps", str(i)]
        if s.above_mxn < 0:
            out.append(PolicyProblem([*at, "aboveMxn"], "INVALID_AMOUNT", "El umbral no puede ser negativo."))
        if s.permission not in perms:
            out.append(PolicyProblem([*at, "permission"], "UNKNOWN_PERMISSION", f"Permiso desconocido: {s.permission}."))
        if s.role is not None and s.role not in roles:
            out.append(PolicyProblem([*at, "role"], "UNKNOWN_ROLE", f"Rol desconocido: {s.role}."))
        for r in s.submitter_roles - roles:
            out.append(PolicyProblem([*at, "submitterRoles"], "UNKNOWN_ROLE", f"Rol desconocido: {r}."))
    return out


def required_chain(policy: Policy, amount_mxn: Decimal, category_id: uuid.UUID | None,
                   submitter_role: str | None) -> tuple[Step, ...]:
    chain = tuple(s for s in policy.steps if s.applies(amount_mxn, category_id, submitter_role))
    # Every submitted expense is looked at by somebody, even when no rule matched it.
    return chain or (Step(),)


# --- who may approve ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Approver:
    user_id: uuid.UUID
    role: str | None
    permissions: frozenset[str]


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def next_step(chain: Sequence[Step], approvals_this_round: Sequence[uuid.UUID]) -> Step | None:
    done = len(approvals_this_round)
    return chain[done] if done < len(chain) else None


def may_act_on(step: Step, approver: Approver) -> bool:
    return step.permission in approver.permissions and (step.role is None or approver.role == step.role)


def approval_refusal(chain: Sequence[Step], approvals_this_round: Sequence[uuid.UUID], approver: Approver,
                     submitter_id: uuid.UUID) -> Refusal | None:
    """Why `approver` may not approve (or reject) now, or None when they may."""
    if approver.user_id == submitter_id:
        return Refusal("SELF_APPROVAL", "No puedes aprobar ni rechazar tus propios gastos.")
    if approver.user_id in approvals_this_round:
        return Refusal("ALREADY_APPROVED", "Ya aprobaste este gasto; el siguiente paso requiere a otra persona.")
    step = next_step(chain, approvals_this_round)
    if step is None:
        return Refusal("NOTHING_TO_APPROVE", "El gasto no tiene aprobaciones pendientes.")
    if not may_act_on(step, approver):
        needs = f"el rol {step.role}" if step.role else f"el permiso {step.permission}"
        return Refusal("NOT_YOUR_STEP", f"El siguiente paso de aprobación requiere {needs}.")
    return None


def approve_action(chain: Sequence[Step], approvals_this_round: Sequence[uuid.UUID]) -> Action:
    """APPROVE when this approval completes the chain, APPROVE_STEP when steps remain."""
    return A.APPROVE if len(approvals_this_round) + 1 >= len(chain) else A.APPROVE_STEP


# --- category limits ----------------------------------------------------------------------------

class LimitAction(str, Enum):
    FLAG = "FLAG"  # submitted anyway; approvers see the flag
    BLOCK = "BLOCK"  # cannot be submitted


@dataclass(frozen=True)
class CategoryLimit:
    name: str
    limit_mxn: Decimal | None
    action: LimitAction = LimitAction.FLAG


@dataclass(frozen=True)
class LimitCheck:
    flags: tuple[Refusal, ...] = ()
    blocked: Refusal | None = None


def check_category_limit(category: CategoryLimit | None, amount_mxn: Decimal) -> LimitCheck:
    if category is None or category.limit_mxn is None or amount_mxn <= category.limit_mxn:
        return LimitCheck()
    problem = Refusal("CATEGORY_LIMIT_EXCEEDED",
                      f"El gasto de ${amount_mxn:,.2f} MXN supera el límite de ${category.limit_mxn:,.2f} MXN "
                      f"de la categoría «{category.name}».")
    if category.action == LimitAction.BLOCK:
        return LimitCheck(blocked=problem)
    return LimitCheck(flags=(problem,))


# --- money --------------------------------------------------------------------------------------

CENT = Decimal("0.01")


def amount_in_mxn(amount: Decimal, currency: str, exchange_rate: Decimal | None) -> Decimal:
    if currency == "MXN":
        return amount.quantize(CENT)
    if exchange_rate is None or exchange_rate <= 0:
        raise ValueError("exchange rate required")
    return (amount * exchange_rate).quantize(CENT, rounding=ROUND_HALF_UP)


# The chain is stored on the expense when it is submitted, so a later policy change never
# rewrites what an expense in flight needs.
def chain_to_json(chain: Sequence[Step]) -> list[dict[str, Any]]:
    return Policy(tuple(chain)).to_json()["steps"]


def chain_from_json(data: list[dict[str, Any]] | None) -> tuple[Step, ...]:
    return Policy.from_json({"steps": data}).steps if data else ()
