"""Circulation rules: which terms apply to a loan, a renewal, a hold or a fine.

A rule's scope is (branch, patron category, item type); a key left NULL matches anything.
Which branch: the branch of the loan (the lending desk's, by default the item's own) for
loans, renewals and fines; the item's own branch for whether a copy may be trapped for a hold;
the pickup branch for hold limits and pick-up time.

Precedence, when several rules match: the rule that names the most keys wins; between rules
naming as many keys, the one naming the branch wins, then the one naming the item type, then
the one naming the patron category. So (branch) beats (item type) beats (category), and
(branch, item type) beats (branch, category) beats (item type, category). The default rule
names no key, matches everything and always exists (seeded by the migration; it cannot be
deleted). There is one rule per scope (a unique index), so the winner is never a tie.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.interfaces import ORMOption

from shelfmark import hotpath
from shelfmark.audit import service as audit
from shelfmark.auth.roles import Actor, require_admin
from shelfmark.catalog import service as catalog_service
from shelfmark.circulation.errors import DefaultRuleProtected, RuleNotFound, RuleScopeTaken
from shelfmark.circulation.models import CirculationRule
from shelfmark.circulation.schemas import RuleCreate, RuleUpdate
from shelfmark.db import flush_or_raise
from shelfmark.errors import InternalError
from shelfmark.patrons import service as patrons_service

PRECEDENCE = (
    "Of the rules whose named keys all match, the one naming the most keys wins; "
    "ties go to the rule naming the branch, then the item type, then the patron category. "
    "The default rule names no key and matches everything."
)
RULE_LOAD: tuple[ORMOption, ...] = (
    joinedload(CirculationRule.branch),
    joinedload(CirculationRule.patron_category),
)
# NULL-able terms: sending null in an update means "no limit" / "no cap" / "no notice".
NULLABLE_TERMS = frozenset({"max_loans", "max_holds", "fine_cap", "due_soon_days"})


Rank = tuple[int, int, int, int]


def rank_of(rule: CirculationRule) -> Rank:
    """(keys named, names branch, names item type, names category): higher wins."""
    return _rank(rule.branch_id, rule.item_type, rule.patron_category_id)


def _rank(branch_id: object, item_type: object, category_id: object) -> Rank:
    branch, of_type, category = (
        int(key is not None) for key in (branch_id, item_type, category_id)
    )
    return (branch + of_type + category, branch, of_type, category)


def pick_rule(
    candidates: Iterable[CirculationRule], *, branch_id: int | None, category_id: int | None,
    item_type: str | None,
) -> CirculationRule:  # fmt: skip
    """The rule `resolve_rule` would choose, from rules already read (all of them, say, for a
    run over many loans: the table is small, the loans are not)."""
    scope = ((branch_id, "branch_id"), (category_id, "patron_category_id"),
             (item_type, "item_type"))  # fmt: skip
    matching = [
        rule
        for rule in candidates
        if all(getattr(rule, key) in {None, value} for value, key in scope)
    ]
    if not matching:
        raise _no_default_rule()
    return max(matching, key=rank_of)


def _no_default_rule() -> InternalError:
    return InternalError("The default circulation rule is missing; run the migrations.")


def matched_on(rule: CirculationRule) -> list[str]:
    """The scope keys a rule names, in precedence order."""
    keys = {"branch": rule.branch_id, "item_type": rule.item_type}
    keys["category"] = rule.patron_category_id
    return [name for name, value in keys.items() if value is not None]


@dataclass(frozen=True, slots=True)
class Resolution:
    rule: CirculationRule
    candidates: Sequence[CirculationRule]  # best first


def _matches(column: Any, name: str, *, given: bool) -> Any:
    if not given:
        return column.is_(None)
    return or_(column.is_(None), column == bindparam(name))


_RULE = hotpath.Loader(CirculationRule, refresh=False)  # as a query without populate_existing


@functools.cache
def _matching_rules(
    *, branch: bool, category: bool, item_type: bool, with_scope: bool
) -> Select[Any]:
    """The rules matching a scope of which the keys flagged are given, built once per shape
    (every checkout resolves a rule; building a statement costs more than running it). With
    their scope, ORM entities; without, `_RULE`'s columns, for the hot path (`hotpath`)."""
    query = select(CirculationRule).options(*RULE_LOAD) if with_scope else select(*_RULE.columns)
    return query.where(
        _matches(CirculationRule.branch_id, "branch_id", given=branch),
        _matches(CirculationRule.patron_category_id, "category_id", given=category),
        _matches(CirculationRule.item_type, "item_type", given=item_type),
    )


async def resolve_rule(
    session: AsyncSession, *, branch_id: int | None, category_id: int | None,
    item_type: str | None,
) -> Resolution:  # fmt: skip
    """The winning rule for a scope and every rule that matched it, best first, with their
    branch and category (for showing them; `rule_for` reads only the winner)."""
    query = _matching_rules(
        branch=branch_id is not None, category=category_id is not None,
        item_type=item_type is not None, with_scope=True,
    )  # fmt: skip
    params = {"branch_id": branch_id, "category_id": category_id, "item_type": item_type}
    matching = (await session.scalars(query, params)).unique().all()
    candidates = sorted(matching, key=rank_of, reverse=True)
    if not candidates:
        raise _no_default_rule()
    return Resolution(rule=candidates[0], candidates=candidates)


def matching_rules(*, branch: bool, category: bool, item_type: bool) -> Select[Any]:
    """The rules matching a scope (its keys bound as `branch_id`, `category_id` and
    `item_type`, those flagged given), as rows of their columns: for a caller that reads
    its rule along with other columns of its own (`best_of` picks the rule)."""
    return _matching_rules(branch=branch, category=category, item_type=item_type, with_scope=False)


def best_of(session: AsyncSession, rows: Iterable[Mapping[str, Any]]) -> CirculationRule:
    """The winning rule of `matching_rules`' rows (only it is loaded)."""
    best = max(rows, key=_rank_of_row, default=None)
    if best is None:
        raise _no_default_rule()
    return _RULE.instance(session, best)


def _rank_of_row(row: Mapping[str, Any]) -> Rank:
    return _rank(row["branch_id"], row["item_type"], row["patron_category_id"])


async def rule_for(
    session: AsyncSession, *, branch_id: int | None, category_id: int | None,
    item_type: str | None,
) -> CirculationRule:  # fmt: skip
    """The winning rule for a scope (as `resolve_rule`), read on the hot path (`hotpath`)."""
    query = matching_rules(
        branch=branch_id is not None, category=category_id is not None,
        item_type=item_type is not None,
    )  # fmt: skip
    params = {"branch_id": branch_id, "category_id": category_id, "item_type": item_type}
    return best_of(session, await hotpath.rows(session, query, params))


async def resolve_by_codes(
    session: AsyncSession, *, branch: str | None, category: str | None, item_type: str | None
) -> Resolution:
    """As `resolve_rule`, for codes as people type them; an unknown code is a 404."""
    branch_id = category_id = None
    if branch is not None:
        branch_id = (await catalog_service.require_branch_by_code(session, branch)).id
    if category is not None:
        category_id = (await patrons_service.require_category_by_code(session, category)).id
    return await resolve_rule(
        session, branch_id=branch_id, category_id=category_id, item_type=item_type
    )


# --- CRUD (admins) ----------------------------------------------------------------------


async def list_rules(
    session: AsyncSession, *, limit: int, after_id: int | None
) -> Sequence[CirculationRule]:
    query = select(CirculationRule).options(*RULE_LOAD).order_by(CirculationRule.id)
    if after_id is not None:
        query = query.where(CirculationRule.id > after_id)
    return (await session.scalars(query.limit(limit + 1))).all()


async def require_rule(session: AsyncSession, rule_id: int) -> CirculationRule:
    rule = await session.get(CirculationRule, rule_id, options=RULE_LOAD)
    if rule is None:
        raise RuleNotFound(f"There is no circulation rule with id {rule_id}.")
    return rule


def _scope_taken() -> RuleScopeTaken:
    return RuleScopeTaken(
        "A rule for this branch, category and item type exists; change that one instead."
    )


async def create_rule(
    session: AsyncSession, *, actor: Actor, data: RuleCreate, now: datetime
) -> CirculationRule:
    """Rules are library policy: admins only."""
    require_admin(actor)
    branch = category = None
    if data.branch is not None:
        branch = await catalog_service.require_branch_by_code(session, data.branch)
    if data.category is not None:
        category = await patrons_service.require_category_by_code(session, data.category)
    rule = CirculationRule(
        **data.model_dump(exclude={"branch", "category"}),
        branch_id=branch.id if branch else None,
        patron_category_id=category.id if category else None,
        created_at=now,
        updated_at=now,
    )
    rule.branch, rule.patron_category = branch, category
    session.add(rule)
    await flush_or_raise(session, _scope_taken())
    await audit.record(
        session, actor=actor, action="rule.create", object_type="circulation_rule",
        object_id=rule.id, changes=data.model_dump(), now=now,
    )  # fmt: skip
    return rule


async def update_rule(
    session: AsyncSession, *, actor: Actor, rule: CirculationRule, data: RuleUpdate,
    now: datetime,
) -> CirculationRule:  # fmt: skip
    require_admin(actor)
    changes = {
        name: value
        for name, value in data.model_dump(exclude_unset=True).items()
        if value is not None or name in NULLABLE_TERMS
    }
    before = {name: getattr(rule, name) for name in changes}
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.updated_at = now
    await session.flush()
    await audit.record(
        session, actor=actor, action="rule.update", object_type="circulation_rule",
        object_id=rule.id, changes=audit.diff(before, changes), now=now,
    )  # fmt: skip
    return rule


async def delete_rule(
    session: AsyncSession, *, actor: Actor, rule: CirculationRule, now: datetime
) -> None:
    require_admin(actor)
    if rule.is_default:
        raise DefaultRuleProtected("The default rule always exists; change its terms instead.")
    await audit.record(
        session, actor=actor, action="rule.delete", object_type="circulation_rule",
        object_id=rule.id, changes={"scope": matched_on(rule)}, now=now,
    )  # fmt: skip
    await session.delete(rule)
    await session.flush()
