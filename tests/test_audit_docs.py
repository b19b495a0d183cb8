"""Every InfluxQL query printed in docs/audit.md parses and runs on a real InfluxDB.

The database is the Grafana test's (two sites, breaches, a dismissal, device faults,
gateway health); a query that names no single incident must also return rows, so an
auditor who pastes it sees something.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_grafana import DB, grafana_db, influx_query

__all__ = ["grafana_db"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "audit.md"


def doc_queries() -> list[str]:
    return [q.strip() for q in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)]


def test_docs_hold_the_queries_the_issue_asks_for() -> None:
    text = " ".join(doc_queries())
    for needle in ('"stage" = \'breach\'', "percentile(", 'GROUP BY "site", "tier"',
                   '"device_health"', '"stage" = \'acked\'', '"gateway_health"'):
        assert needle in text, needle


def test_every_documented_query_runs(grafana_db: str) -> None:
    queries = doc_queries()
    assert len(queries) >= 10
    for q in queries:
        if q.upper().startswith(("CREATE", "GRANT")):
            continue  # user management, not a report
        doc = influx_query(grafana_db, q)
        result = doc["results"][0]
        assert "error" not in result, (q, result)
        names_one_incident = re.search(r"'inc-[^']+'", q) is not None
        if not names_one_incident:
            assert result.get("series"), f"no rows for:\n{q}"
    assert DB
