"""Report jobs over HTTP: asked for with `POST /api/v1/jobs`, downloaded from
`GET /api/v1/jobs/{id}/download` by staff only, with problem+json for every refusal."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from background import Broker
from factories import auth, make_job, make_patron, make_patron_user, make_user
from reports.conftest import Library, run_report
from shelfmark.auth.models import User
from shelfmark.auth.roles import Role
from shelfmark.jobs.runner import execute_job
from shelfmark.settings import Settings
from shelfmark.worker import RUN_JOB

PROBLEM = "application/problem+json"


@pytest.fixture
async def librarian(session: AsyncSession) -> User:
    user = await make_user(session, Role.LIBRARIAN)
    await session.commit()
    return user


class TestAskForAReport:
    async def test_a_librarian_asks_runs_and_downloads_it(
        self, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings, librarian: User, library: Library, broker: Broker,
    ) -> None:  # fmt: skip
        body = {"kind": "report", "params": {"report": "collection", "format": "csv"}}
        asked = await client.post("/api/v1/jobs", json=body, headers=auth(librarian))
        assert asked.status_code == 202, asked.text
        job_id = asked.json()["id"]
        assert broker.take() == [(RUN_JOB, [job_id])]

        waiting = await client.get(f"/api/v1/jobs/{job_id}/download", headers=auth(librarian))
        assert (waiting.status_code, waiting.headers["content-type"]) == (409, PROBLEM)
        assert waiting.json()["type"] == "/problems/report-not-ready"

        await execute_job(sessionmaker, job_id, settings=settings, last_try=False)
        got = await client.get(f"/api/v1/jobs/{job_id}/download", headers=auth(librarian))
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "text/csv; charset=utf-8"
        assert (
            got.headers["content-disposition"] == f'attachment; filename="collection-{job_id}.csv"'
        )
        rows = list(csv.reader(io.StringIO(got.content.decode("utf-8-sig"))))
        assert rows[0][:2] == ["Material type", "Language"]
        assert len(rows) == 5

    async def test_xlsx_has_the_spreadsheet_type(
        self, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings, librarian: User, library: Library,
    ) -> None:  # fmt: skip
        job, _ = await run_report(sessionmaker, settings, report="overdue", format="xlsx")
        got = await client.get(f"/api/v1/jobs/{job.id}/download", headers=auth(librarian))
        assert got.status_code == 200
        assert got.headers["content-type"] == (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        assert got.headers["content-disposition"] == f'attachment; filename="overdue-{job.id}.xlsx"'
        assert got.content.startswith(b"PK")  # a zip, as every XLSX is

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"report": "weather"}, "params.report"),
            ({"report": "overdue", "format": "pdf"}, "params.format"),
            ({"report": "overdue", "from_date": "2026-01-01"}, "params"),
            ({"report": "collection", "limit": 5}, "params"),
            ({"report": "most-borrowed", "limit": 0}, "params.limit"),
            ({"report": "most-borrowed", "from_date": "2026-02-01", "to_date": "2026-01-01"},
             "params"),
            ({"report": "overdue", "colour": "blue"}, "params.colour"),
        ],
    )  # fmt: skip
    async def test_parameters_that_do_not_fit_are_422_and_queue_nothing(
        self, client: httpx.AsyncClient, librarian: User, broker: Broker,
        params: dict[str, object], field: str,
    ) -> None:  # fmt: skip
        body = {"kind": "report", "params": params}
        refused = await client.post("/api/v1/jobs", json=body, headers=auth(librarian))
        assert (refused.status_code, refused.headers["content-type"]) == (422, PROBLEM)
        assert refused.json()["errors"][0]["field"] == field
        assert broker.take() == []


class TestDownloadRefusals:
    async def test_anonymous_is_401_and_a_patron_403(
        self, client: httpx.AsyncClient, session: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, library: Library,
    ) -> None:  # fmt: skip
        job, _ = await run_report(sessionmaker, settings, report="collection")
        reader = await make_patron_user(session, await make_patron(session))
        await session.commit()
        anonymous = await client.get(f"/api/v1/jobs/{job.id}/download")
        assert (anonymous.status_code, anonymous.headers["content-type"]) == (401, PROBLEM)
        patron = await client.get(f"/api/v1/jobs/{job.id}/download", headers=auth(reader))
        assert (patron.status_code, patron.json()["type"]) == (403, "/problems/forbidden")

    async def test_no_such_job_a_job_without_a_file_and_a_file_gone_are_404(
        self, client: httpx.AsyncClient, session: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
        librarian: User, library: Library,
    ) -> None:  # fmt: skip
        headers = auth(librarian)
        missing = await client.get("/api/v1/jobs/999999/download", headers=headers)
        assert (missing.status_code, missing.json()["type"]) == (404, "/problems/job-not-found")

        imported = await make_job(session, status="succeeded")  # a marc-import
        await session.commit()
        no_file = await client.get(f"/api/v1/jobs/{imported.id}/download", headers=headers)
        assert (no_file.status_code, no_file.json()["type"]) == (
            404, "/problems/report-file-not-found",
        )  # fmt: skip

        job, path = await run_report(sessionmaker, settings, report="collection")
        path.unlink()
        gone = await client.get(f"/api/v1/jobs/{job.id}/download", headers=headers)
        assert (gone.status_code, gone.headers["content-type"]) == (404, PROBLEM)
        assert "run the report again" in gone.json()["detail"]

    async def test_a_failed_report_is_409(
        self, client: httpx.AsyncClient, session: AsyncSession, librarian: User
    ) -> None:
        failed = await make_job(session, kind="report", params={"report": "overdue"},
                                status="failed")  # fmt: skip
        await session.commit()
        refused = await client.get(f"/api/v1/jobs/{failed.id}/download", headers=auth(librarian))
        assert (refused.status_code, refused.json()["type"]) == (409, "/problems/report-not-ready")

    async def test_an_id_that_is_not_one_is_422(
        self, client: httpx.AsyncClient, librarian: User
    ) -> None:
        refused = await client.get("/api/v1/jobs/0/download", headers=auth(librarian))
        assert (refused.status_code, refused.headers["content-type"]) == (422, PROBLEM)
