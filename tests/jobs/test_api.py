"""The jobs API and the MARC upload: 202 with the job, sent to the broker after commit."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from background import Broker
from factories import auth, make_branch, make_job, make_patron, make_patron_user, make_user
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.jobs.models import Job
from shelfmark.settings import Settings
from shelfmark.worker import RUN_JOB

DEMO = Path(__file__).resolve().parents[2] / "src" / "shelfmark" / "demo" / "loc-demo.mrc"


@pytest.fixture
async def patron_user(session: AsyncSession) -> User:
    user = await make_patron_user(session, await make_patron(session))
    await session.commit()
    return user


class TestCreateJob:
    async def test_a_librarian_queues_a_job_and_it_is_sent_after_commit(
        self, client: httpx.AsyncClient, librarian: User, broker: Broker
    ) -> None:
        body = {"kind": "marc-import", "params": {"file": "12.mrc", "items_branch": "MAIN"}}
        response = await client.post("/api/v1/jobs", json=body, headers=auth(librarian))
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["kind"] == "marc-import"
        assert job["params"] == {"file": "12.mrc", "items_branch": "MAIN"}
        assert job["status"] == "queued"
        assert job["progress"] == {"done": 0, "total": None}
        assert (job["attempts"], job["result"], job["error"]) == (0, None, None)
        assert job["created_by"] == librarian.id
        assert broker.take() == [(RUN_JOB, [job["id"]])]

    async def test_a_refused_job_sends_nothing(
        self, client: httpx.AsyncClient, librarian: User, broker: Broker
    ) -> None:
        body = {"kind": "marc-import", "params": {"file": "../../etc/passwd"}}
        response = await client.post("/api/v1/jobs", json=body, headers=auth(librarian))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "params.file"
        assert broker.take() == []

    async def test_an_unknown_kind_is_422_naming_the_kinds(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        body = {"kind": "make-coffee", "params": {}}
        response = await client.post("/api/v1/jobs", json=body, headers=auth(librarian))
        assert response.status_code == 422
        assert response.json()["type"] == "/problems/unknown-job-kind"
        assert "marc-import" in response.json()["detail"]

    async def test_a_patron_cannot_start_jobs(
        self, client: httpx.AsyncClient, patron_user: User, broker: Broker
    ) -> None:
        body = {"kind": "marc-import", "params": {"file": "1.mrc"}}
        response = await client.post("/api/v1/jobs", json=body, headers=auth(patron_user))
        assert response.status_code == 403
        assert broker.take() == []

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        body = {"kind": "marc-import", "params": {"file": "1.mrc"}}
        assert (await client.post("/api/v1/jobs", json=body)).status_code == 401


class TestReadJobs:
    async def test_read_one(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        job = await make_job(session, status="failed")
        await session.commit()
        response = await client.get(f"/api/v1/jobs/{job.id}", headers=auth(librarian))
        assert response.status_code == 200
        assert response.json()["status"] == "failed"
        assert response.json()["error"] == "it broke"
        assert response.json()["attempts"] == 1
        assert response.json()["finished_at"] is not None

    async def test_unknown_is_404(self, client: httpx.AsyncClient, librarian: User) -> None:
        response = await client.get("/api/v1/jobs/999999", headers=auth(librarian))
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/job-not-found"

    async def test_list_newest_first_filtered_and_paged(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        queued = [await make_job(session) for _ in range(3)]
        failed = await make_job(session, status="failed")
        await session.commit()
        headers = auth(librarian)

        first = await client.get("/api/v1/jobs?status=queued&limit=2", headers=headers)
        assert [j["id"] for j in first.json()["items"]] == [queued[2].id, queued[1].id]
        cursor = first.json()["next_cursor"]
        second = await client.get(
            f"/api/v1/jobs?status=queued&limit=2&cursor={cursor}", headers=headers
        )
        assert [j["id"] for j in second.json()["items"]] == [queued[0].id]
        assert second.json()["next_cursor"] is None

        everything = await client.get("/api/v1/jobs?kind=marc-import", headers=headers)
        assert everything.json()["items"][0]["id"] == failed.id
        none = await client.get("/api/v1/jobs?kind=report", headers=headers)
        assert none.json()["items"] == []

    async def test_a_patron_sees_no_jobs(
        self, client: httpx.AsyncClient, session: AsyncSession, patron_user: User
    ) -> None:
        job = await make_job(session)
        await session.commit()
        assert (await client.get("/api/v1/jobs", headers=auth(patron_user))).status_code == 403
        response = await client.get(f"/api/v1/jobs/{job.id}", headers=auth(patron_user))
        assert response.status_code == 403


class TestRetryJob:
    async def test_a_failed_job_is_queued_again_and_sent(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User, broker: Broker
    ) -> None:
        job = await make_job(session, status="failed")
        await session.commit()
        response = await client.post(f"/api/v1/jobs/{job.id}/retry", headers=auth(librarian))
        assert response.status_code == 202, response.text
        retried = response.json()
        assert (retried["status"], retried["error"], retried["attempts"]) == ("queued", None, 0)
        assert retried["finished_at"] is None
        assert broker.take() == [(RUN_JOB, [job.id])]

    @pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
    async def test_only_a_failed_job_is_retried(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        librarian: User,
        broker: Broker,
        status: str,
    ) -> None:
        job = await make_job(session, status=status)
        await session.commit()
        response = await client.post(f"/api/v1/jobs/{job.id}/retry", headers=auth(librarian))
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/job-not-retryable"
        assert status in response.json()["detail"]
        assert broker.take() == []

    async def test_a_patron_cannot_retry(
        self, client: httpx.AsyncClient, session: AsyncSession, patron_user: User
    ) -> None:
        job = await make_job(session, status="failed")
        await session.commit()
        response = await client.post(f"/api/v1/jobs/{job.id}/retry", headers=auth(patron_user))
        assert response.status_code == 403


class TestMarcUpload:
    async def test_the_upload_is_kept_under_the_job_id_and_the_job_sent(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        librarian: User,
        broker: Broker,
        settings: Settings,
    ) -> None:
        branch = await make_branch(session)
        await session.commit()
        response = await client.post(
            "/api/v1/imports/marc",
            files={"file": ("catalog.mrc", DEMO.read_bytes(), "application/marc")},
            data={"items_branch": branch.code},
            headers=auth(librarian),
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["job_id"] == accepted["id"]
        assert accepted["kind"] == "marc-import"
        assert accepted["status"] == "queued"
        assert accepted["params"] == {"filename": "catalog.mrc", "items_branch": branch.code}
        kept = settings.shelfmark_home / "uploads" / f"{accepted['job_id']}.mrc"
        assert kept.read_bytes() == DEMO.read_bytes()
        assert broker.take() == [(RUN_JOB, [accepted["job_id"]])]
        job = await client.get(f"/api/v1/jobs/{accepted['job_id']}", headers=auth(librarian))
        assert job.json()["status"] == "queued"

    async def test_too_large_is_413_and_leaves_nothing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        session: AsyncSession,
        librarian: User,
        broker: Broker,
        settings: Settings,
    ) -> None:
        app.state.settings = settings.model_copy(update={"upload_max_bytes": 1000})
        uploads = settings.shelfmark_home / "uploads"
        before = sorted(uploads.iterdir()) if uploads.exists() else []
        response = await client.post(
            "/api/v1/imports/marc",
            files={"file": ("big.mrc", DEMO.read_bytes(), "application/marc")},
            headers=auth(librarian),
        )
        assert response.status_code == 413
        assert response.json()["type"] == "/problems/payload-too-large"
        assert sorted(uploads.iterdir()) == before
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
        assert broker.take() == []

    async def test_an_empty_file_is_422(self, client: httpx.AsyncClient, librarian: User) -> None:
        response = await client.post(
            "/api/v1/imports/marc", files={"file": ("empty.mrc", b"")}, headers=auth(librarian)
        )
        assert response.status_code == 422
        assert "empty" in response.json()["detail"]

    async def test_an_unknown_branch_is_404(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        response = await client.post(
            "/api/v1/imports/marc",
            files={"file": ("c.mrc", DEMO.read_bytes())},
            data={"items_branch": "NOWHERE"},
            headers=auth(librarian),
        )
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/branch-not-found"

    async def test_a_patron_cannot_import(
        self, client: httpx.AsyncClient, session: AsyncSession, broker: Broker
    ) -> None:
        user = await make_user(session, Role.PATRON)
        await session.commit()
        response = await client.post(
            "/api/v1/imports/marc", files={"file": ("c.mrc", b"x")}, headers=auth(user)
        )
        assert response.status_code == 403
        assert broker.take() == []
