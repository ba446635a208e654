"""The approval rules as plain functions: every transition, every refusal, the default policy."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from shared.permissions import ALL_PERMISSIONS, ROLES, permissions_for_role
from subgraphs.expense import approval as ap

S, A = ap.Status, ap.Action
SUBMITTER, FIRST, SECOND, OWNER = (uuid.uuid4() for _ in range(4))


def approver(user, role="APPROVER") -> ap.Approver:
    return ap.Approver(user, role, frozenset(permissions_for_role(role)))


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("action", list(A))
def test_one_transition_table_decides_every_pair(status, action):
    if (status, action) in ap.TRANSITIONS:
        assert ap.transition(status, action) == ap.TRANSITIONS[(status, action)]
    else:
        with pytest.raises(ap.TransitionError):
            ap.transition(status, action)


def test_the_lifecycle_the_issue_describes():
    assert ap.transition(S.DRAFT, A.SUBMIT) == S.SUBMITTED
    assert ap.transition(S.SUBMITTED, A.APPROVE) == S.APPROVED
    assert ap.transition(S.SUBMITTED, A.REJECT) == S.REJECTED
    assert ap.transition(S.REJECTED, A.SUBMIT) == S.SUBMITTED
    assert ap.transition(S.APPROVED, A.REIMBURSE) == S.REIMBURSED
    for refused in [(S.DRAFT, A.APPROVE), (S.REJECTED, A.REIMBURSE), (S.REIMBURSED, A.SUBMIT), (S.APPROVED, A.REJECT)]:
        with pytest.raises(ap.TransitionError):
            ap.transition(*refused)


@pytest.mark.parametrize("amount,levels,owner_last", [
    ("0.01", 1, False), ("5000.00", 1, False), ("5000.01", 2, False), ("50000.00", 2, False), ("50000.01", 3, True),
])
def test_default_policy_chain_by_amount(amount, levels, owner_last):
    chain = ap.required_chain(ap.DEFAULT_POLICY, Decimal(amount), None, "MEMBER")
    assert len(chain) == levels
    assert (chain[-1].role == "OWNER") is owner_last


def test_rules_by_category_and_submitter_role():
    travel = uuid.uuid4()
    policy = ap.Policy((ap.Step(Decimal("0")), ap.Step(Decimal("1000"), categories=frozenset({travel})),
                        ap.Step(Decimal("0"), role="OWNER", submitter_roles=frozenset({"ADMIN"}))))
    assert len(ap.required_chain(policy, Decimal("2000"), travel, "MEMBER")) == 2
    assert len(ap.required_chain(policy, Decimal("2000"), uuid.uuid4(), "MEMBER")) == 1
    assert ap.required_chain(policy, Decimal("10"), None, "ADMIN")[-1].role == "OWNER"
    # No rule matched: somebody still looks at it.
    assert ap.required_chain(ap.Policy((ap.Step(Decimal("100")),)), Decimal("1"), None, None) == (ap.Step(),)


def test_no_self_approval_and_distinct_approvers_per_step():
    chain = ap.required_chain(ap.DEFAULT_POLICY, Decimal("6000"), None, "MEMBER")
    assert ap.approval_refusal(chain, [], approver(SUBMITTER), SUBMITTER).code == "SELF_APPROVAL"
    assert ap.approval_refusal(chain, [], approver(FIRST), SUBMITTER) is None
    assert ap.approve_action(chain, []) == A.APPROVE_STEP
    assert ap.approval_refusal(chain, [FIRST], approver(FIRST), SUBMITTER).code == "ALREADY_APPROVED"
    assert ap.approval_refusal(chain, [FIRST], approver(SECOND), SUBMITTER) is None
    assert ap.approve_action(chain, [FIRST]) == A.APPROVE
    assert ap.approval_refusal(chain, [FIRST, SECOND], approver(OWNER, "OWNER"), SUBMITTER).code == "NOTHING_TO_APPROVE"


def test_owner_step_needs_the_owner_and_approve_needs_the_permission():
    chain = ap.required_chain(ap.DEFAULT_POLICY, Decimal("60000"), None, "MEMBER")
    assert ap.approval_refusal(chain, [FIRST, SECOND], approver(uuid.uuid4(), "ADMIN"), SUBMITTER).code == "NOT_YOUR_STEP"
    assert ap.approval_refusal(chain, [FIRST, SECOND], approver(OWNER, "OWNER"), SUBMITTER) is None
    assert ap.approval_refusal(chain, [], approver(uuid.uuid4(), "MEMBER"), SUBMITTER).code == "NOT_YOUR_STEP"


def test_category_limits_flag_or_block():
    assert ap.check_category_limit(None, Decimal("9")) == ap.LimitCheck()
    flag = ap.check_category_limit(ap.CategoryLimit("Comidas", Decimal("500")), Decimal("500.01"))
    assert flag.blocked is None and flag.flags[0].code == "CATEGORY_LIMIT_EXCEEDED" and "Comidas" in flag.flags[0].message
    block = ap.check_category_limit(ap.CategoryLimit("Comidas", Decimal("500"), ap.LimitAction.BLOCK), Decimal("501"))
    assert block.blocked is not None and not block.flags
    assert ap.check_category_limit(ap.CategoryLimit("Comidas", Decimal("500"), ap.LimitAction.BLOCK), Decimal("500")).blocked is None


def test_amount_in_mxn():
    assert ap.amount_in_mxn(Decimal("10"), "MXN", None) == Decimal("10.00")
    assert ap.amount_in_mxn(Decimal("100.00"), "USD", Decimal("17.123456")) == Decimal("1712.35")
    with pytest.raises(ValueError):
        ap.amount_in_mxn(Decimal("1"), "USD", None)


def test_policy_validation_and_json_round_trip():
    bad = ap.Policy((ap.Step(Decimal("-1"), permission="nope", role="KING", submitter_roles=frozenset({"X"})),))
    assert {p.code for p in ap.policy_problems(bad, ROLES, ALL_PERMISSIONS)} == {"INVALID_AMOUNT", "UNKNOWN_PERMISSION", "UNKNOWN_ROLE"}
    assert ap.policy_problems(ap.Policy(()), ROLES, ALL_PERMISSIONS)[0].code == "REQUIRED"
    assert ap.Policy.from_json(ap.DEFAULT_POLICY.to_json()) == ap.DEFAULT_POLICY
    assert ap.chain_from_json(ap.chain_to_json(ap.DEFAULT_POLICY.steps)) == ap.DEFAULT_POLICY.steps


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2),
       st.sampled_from(ROLES))
def test_a_chain_always_ends_and_never_lets_the_submitter_in(amount, role):
    chain = ap.required_chain(ap.DEFAULT_POLICY, amount, None, role)
    done: list[uuid.UUID] = []
    people = [approver(uuid.uuid4()), approver(uuid.uuid4()), approver(uuid.uuid4(), "OWNER")]
    for person in people:
        if ap.next_step(chain, done) is None:
            break
        assert ap.approval_refusal(chain, done, approver(SUBMITTER, role), SUBMITTER).code == "SELF_APPROVAL"
        assert ap.approval_refusal(chain, done, person, SUBMITTER) is None
        done.append(person.user_id)
    assert ap.next_step(chain, done) is None and len(done) == len(chain)
