"""Circulation rule routes: reading and resolving them is public, changing them is admin's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from shelfmark.circulation import rules
from shelfmark.circulation.models import CirculationRule
from shelfmark.circulation.schemas import (
    RuleCandidate,
    RuleCreate,
    RuleRead,
    RuleResolution,
    RuleUpdate,
)
from shelfmark.db import utcnow
from shelfmark.deps import ActorDep, SessionDep
from shelfmark.deps import PathId as Id
from shelfmark.pagination import (
    Page,
    PageDep,
    decode_int_cursor,
    next_cursor_of,
)

router = APIRouter(tags=["rules"])


def rule_read(rule: CirculationRule) -> RuleRead:
    return RuleRead(
        id=rule.id, branch=rule.branch.code if rule.branch else None,
        category=rule.patron_category.code if rule.patron_category else None,
        item_type=rule.item_type, is_default=rule.is_default, loan_period=rule.loan_period,
        period_unit=rule.period_unit, renewals_allowed=rule.renewals_allowed,
        max_loans=rule.max_loans, max_holds=rule.max_holds, fine_per_day=rule.fine_per_day,
        fine_cap=rule.fine_cap, grace_days=rule.grace_days, holdable=rule.holdable,
        renew_from=rule.renew_from, hold_pickup_days=rule.hold_pickup_days,
        due_soon_days=rule.due_soon_days, overdue_notice_days=rule.overdue_notice_days,
        created_at=rule.created_at, updated_at=rule.updated_at,
    )  # fmt: skip


@router.get("/rules", response_model=Page[RuleRead])
async def list_rules(session: SessionDep, page: PageDep) -> Page[RuleRead]:
    rows = await rules.list_rules(
        session, limit=page.limit, after_id=decode_int_cursor(page.cursor)
    )
    return Page(
        items=[rule_read(r) for r in rows[: page.limit]],
        next_cursor=next_cursor_of(rows, page.limit),
    )


@router.get("/rules/resolve", response_model=RuleResolution)
async def resolve_rule(
    session: SessionDep,
    branch: Annotated[str | None, Query(description="Branch code")] = None,
    category: Annotated[str | None, Query(description="Patron category code")] = None,
    item_type: Annotated[str | None, Query()] = None,
) -> RuleResolution:
    """The rule that applies to a branch, patron category and item type, and why: every
    matching rule, best first, with the rank that decided."""
    resolution = await rules.resolve_by_codes(
        session, branch=branch, category=category, item_type=item_type
    )
    candidates = [
        RuleCandidate(
            rule=rule_read(rule),
            matched_on=rules.matched_on(rule),
            rank=list(rules.rank_of(rule)),
            chosen=rule is resolution.rule,
        )
        for rule in resolution.candidates
    ]
    return RuleResolution(
        branch=branch, category=category, item_type=item_type,
        rule=rule_read(resolution.rule), precedence=rules.PRECEDENCE, candidates=candidates,
    )  # fmt: skip


@router.post("/rules", response_model=RuleRead, status_code=status.HTTP_201_CREATED)
async def create_rule(session: SessionDep, actor: ActorDep, data: RuleCreate) -> RuleRead:
    return rule_read(await rules.create_rule(session, actor=actor, data=data, now=utcnow()))


@router.get("/rules/{rule_id}", response_model=RuleRead)
async def get_rule(session: SessionDep, rule_id: Id) -> RuleRead:
    return rule_read(await rules.require_rule(session, rule_id))


@router.patch("/rules/{rule_id}", response_model=RuleRead)
async def update_rule(
    session: SessionDep, actor: ActorDep, rule_id: Id, data: RuleUpdate
) -> RuleRead:
    """Change a rule's terms (admins); its scope stays."""
    rule = await rules.require_rule(session, rule_id)
    rule = await rules.update_rule(session, actor=actor, rule=rule, data=data, now=utcnow())
    return rule_read(rule)


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(session: SessionDep, actor: ActorDep, rule_id: Id) -> Response:
    """Delete a rule (admins); the default rule stays."""
    rule = await rules.require_rule(session, rule_id)
    await rules.delete_rule(session, actor=actor, rule=rule, now=utcnow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
