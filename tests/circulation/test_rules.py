from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, make_branch, make_category, make_rule, make_user, unique
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.circulation import rules
from shelfmark.circulation.models import CirculationRule


@dataclass
class World:
    """Branches A, A2, A3, B; categories K, K2; item types T, T2; and one rule per scope
    named below (plus the default)."""

    branches: dict[str, int]
    categories: dict[str, int]
    types: dict[str, str]
    rules: dict[str, int]


SCOPES = {
    "branch": ("A", None, None),
    "type": (None, None, "T"),
    "category": (None, "K", None),
    "branch+category": ("A2", "K", None),
    "branch+type": ("A2", None, "T"),
    "type+category": (None, "K", "T"),
    "all three": ("A3", "K", "T"),
}


@pytest.fixture
async def world(session: AsyncSession) -> World:
    branches = {name: await make_branch(session) for name in ("A", "A2", "A3", "B")}
    categories = {name: await make_category(session) for name in ("K", "K2")}
    types = {name: unique(name.lower()) for name in ("T", "T2")}
    made: dict[str, int] = {}
    for name, (branch, category, item_type) in SCOPES.items():
        rule = await make_rule(
            session,
            branch=branches[branch] if branch else None,
            category=categories[category] if category else None,
            item_type=types[item_type] if item_type else None,
        )
        made[name] = rule.id
    default = await session.scalar(
        select(CirculationRule.id).where(
            CirculationRule.branch_id.is_(None),
            CirculationRule.patron_category_id.is_(None),
            CirculationRule.item_type.is_(None),
        )
    )
    assert default is not None
    made["default"] = default
    return World(
        branches={k: v.id for k, v in branches.items()},
        categories={k: v.id for k, v in categories.items()},
        types=types,
        rules=made,
    )


RESOLUTION_TABLE = [
    # (branch, category, item type) -> the rule that wins
    ((None, None, None), "default"),
    (("B", "K2", "T2"), "default"),
    (("A", "K2", "T2"), "branch"),
    (("B", "K2", "T"), "type"),
    (("B", "K", "T2"), "category"),
    (("A", "K2", "T"), "branch"),  # one key each: branch beats item type
    (("A", "K", "T2"), "branch"),  # one key each: branch beats category
    (("B", "K", "T"), "type+category"),  # two keys beat one
    (("A", "K", "T"), "type+category"),  # two keys beat the branch alone
    (("A2", "K", "T2"), "branch+category"),
    (("A2", "K2", "T"), "branch+type"),
    (("A2", "K", "T"), "branch+type"),  # two keys each: branch+type, branch+cat, type+cat
    (("A3", "K", "T"), "all three"),
    (("A3", "K2", "T"), "type"),
]


class TestResolveRule:
    @pytest.mark.parametrize(
        ("scope", "winner"), RESOLUTION_TABLE, ids=[f"{s}->{w}" for s, w in RESOLUTION_TABLE]
    )
    async def test_the_most_specific_rule_wins(
        self,
        session: AsyncSession,
        world: World,
        scope: tuple[str | None, str | None, str | None],
        winner: str,
    ) -> None:
        branch, category, item_type = scope
        resolution = await rules.resolve_rule(
            session,
            branch_id=world.branches[branch] if branch else None,
            category_id=world.categories[category] if category else None,
            item_type=world.types[item_type] if item_type else None,
        )
        assert resolution.rule.id == world.rules[winner]
        assert resolution.candidates[0] is resolution.rule
        hot = await rules.rule_for(
            session,
            branch_id=world.branches[branch] if branch else None,
            category_id=world.categories[category] if category else None,
            item_type=world.types[item_type] if item_type else None,
        )
        assert hot is resolution.rule  # the hot path's winner is the same rule
        assert resolution.candidates[-1].id == world.rules["default"]
        ranks = [rules.rank_of(rule) for rule in resolution.candidates]
        assert ranks == sorted(ranks, reverse=True)
        assert len(set(ranks)) == len(ranks), "two candidates of one rank: ambiguous"

    async def test_resolve_route_shows_the_winner_and_why(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        branch = await make_branch(session)
        category = await make_category(session)
        item_type = unique("dvd")
        by_branch = await make_rule(session, branch=branch, loan_period=7)
        by_type = await make_rule(session, item_type=item_type, loan_period=3)
        await session.commit()
        response = await client.get(
            "/api/v1/rules/resolve",
            params={"branch": branch.code, "category": category.code, "item_type": item_type},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["rule"]["id"] == by_branch.id
        assert body["rule"]["loan_period"] == 7
        assert "branch" in body["precedence"]
        candidates = body["candidates"]
        assert [c["rule"]["id"] for c in candidates][:2] == [by_branch.id, by_type.id]
        assert candidates[0] | {"rule": None} == {
            "rule": None, "matched_on": ["branch"], "rank": [1, 1, 0, 0], "chosen": True,
        }  # fmt: skip
        assert candidates[1]["matched_on"] == ["item_type"]
        assert candidates[-1]["rule"]["is_default"] is True
        assert [c["chosen"] for c in candidates].count(True) == 1

    async def test_unknown_codes_are_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/rules/resolve", params={"branch": "NOWHERE"})
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/branch-not-found"
        response = await client.get("/api/v1/rules/resolve", params={"category": "NOBODY"})
        assert response.json()["type"] == "/problems/patron-category-not-found"


@pytest.fixture
async def admin(session: AsyncSession) -> User:
    user = await make_user(session, Role.ADMIN)
    await session.commit()
    return user


class TestRuleRoutes:
    async def test_create_read_update_delete(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        body = {
            "branch": branch.code, "item_type": "dvd", "loan_period": 48, "period_unit": "hours",
            "fine_per_day": "1.00", "fine_cap": "5.00",
        }  # fmt: skip
        created = await client.post("/api/v1/rules", json=body, headers=auth(admin))
        assert created.status_code == 201, created.text
        rule = created.json()
        assert (rule["branch"], rule["category"], rule["item_type"]) == (branch.code, None, "dvd")
        assert rule["fine_per_day"] == "1.00"
        assert rule["is_default"] is False
        url = f"/api/v1/rules/{rule['id']}"
        patched = await client.patch(
            url, json={"loan_period": 24, "fine_cap": None}, headers=auth(admin)
        )
        assert patched.status_code == 200, patched.text
        assert (patched.json()["loan_period"], patched.json()["fine_cap"]) == (24, None)
        assert patched.json()["period_unit"] == "hours"
        assert (await client.get(url)).json()["loan_period"] == 24
        listed = await client.get("/api/v1/rules", params={"limit": 500})
        assert rule["id"] in [r["id"] for r in listed.json()["items"]]
        assert (await client.delete(url, headers=auth(admin))).status_code == 204
        assert (await client.get(url)).json()["type"] == "/problems/rule-not-found"

    async def test_a_scope_has_one_rule(
        self, client: httpx.AsyncClient, session: AsyncSession, admin: User
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        body = {"branch": branch.code, "loan_period": 7}
        assert (await client.post("/api/v1/rules", json=body, headers=auth(admin))).is_success
        again = await client.post("/api/v1/rules", json=body, headers=auth(admin))
        assert again.status_code == 409
        assert again.json()["type"] == "/problems/rule-scope-taken"
        default = await client.post("/api/v1/rules", json={"loan_period": 7}, headers=auth(admin))
        assert default.json()["type"] == "/problems/rule-scope-taken"

    async def test_the_default_rule_always_exists(
        self, client: httpx.AsyncClient, admin: User
    ) -> None:
        resolved = (await client.get("/api/v1/rules/resolve")).json()["rule"]
        assert resolved["is_default"] is True
        response = await client.delete(f"/api/v1/rules/{resolved['id']}", headers=auth(admin))
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/default-rule-protected"
        patched = await client.patch(
            f"/api/v1/rules/{resolved['id']}", json={"loan_period": 28}, headers=auth(admin)
        )
        assert patched.json()["loan_period"] == 28

    async def test_only_admins_change_rules(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        librarian = await make_user(session, Role.LIBRARIAN)
        await session.commit()
        response = await client.post(
            "/api/v1/rules", json={"item_type": "x", "loan_period": 7}, headers=auth(librarian)
        )
        assert response.status_code == 403

    async def test_invalid_terms_are_422(self, client: httpx.AsyncClient, admin: User) -> None:
        response = await client.post(
            "/api/v1/rules", json={"loan_period": 0, "period_unit": "weeks"}, headers=auth(admin)
        )
        assert response.status_code == 422
        fields = {e["field"] for e in response.json()["errors"]}
        assert fields == {"loan_period", "period_unit"}
