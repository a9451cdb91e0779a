"""The simulator's Flex Web Service: ``/flex/SendRequest`` and ``/flex/GetStatement`` (v3 XML).

Point ``IBKR_FLEX_URL`` at ``http://<simulator>/flex``. GetStatement answers the statement
:func:`ibkr_tasks.sim.flex.statement_xml` builds for the requested period (default: the last complete
business day), once the knobs let it through.

Knobs (``POST /sim/flex`` with a JSON object, ``GET /sim/flex`` shows them): ``token`` (the token to
accept; empty = any), ``token_error`` (answer every request with 1012, 1013, 1015 ...),
``in_progress_polls`` (GetStatement answers 1019 this many times first), ``min_poll_seconds``
(GetStatement faster than this after the previous one answers 1018), ``date_format`` /
``time_format`` / ``separator`` (the query's format settings) and ``query_ids`` (accepted ids; empty
= any numeric id).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response

from ibkr_tasks.sim.flex import FlexRequest, FlexSim, statement_xml
from ibkr_tasks.sim.flex_xml import EASTERN, MAX_RANGE_DAYS
from ibkr_tasks.sim.state import SimState

__all__ = ["flex_control", "flex_endpoint"]

# IBKR's v3 error messages by code.
_MESSAGES = {
    "1001": "Statement could not be generated at this time. Please try again shortly.",
    "1003": "Statement is not available.",
    "1004": "Statement is incomplete at this time. Please try again shortly.",
    "1005": "Settlement data is not ready at this time. Please try again shortly.",
    "1006": "FIFO P/L data is not ready at this time. Please try again shortly.",
    "1007": "MTM P/L data is not ready at this time. Please try again shortly.",
    "1008": "MTM and FIFO P/L data is not ready at this time. Please try again shortly.",
    "1009": "The server is under heavy load. Statement could not be generated at this time. "
    "Please try again shortly.",
    "1010": "Legacy Flex Queries are no longer supported. Please convert over to Activity Flex.",
    "1011": "Service account is inactive.",
    "1012": "Token has expired.",
    "1013": "IP restriction.",
    "1014": "Query is invalid.",
    "1015": "Token is invalid.",
    "1016": "Account is invalid.",
    "1017": "Reference code is invalid.",
    "1018": "Too many requests have been made from this token. Please try again shortly.",
    "1019": "Statement generation in progress. Please try again shortly.",
    "1020": "Invalid request or unable to validate request.",
    "1021": "Statement could not be retrieved at this time. Please try again shortly.",
}


def _xml(body: str) -> Response:
    return Response(body, media_type="text/xml")


def _envelope(st: SimState, inner: str) -> Response:
    stamp = st.clock.now().astimezone(EASTERN)
    text = stamp.strftime("%d %B, %Y %I:%M %p ") + (stamp.tzname() or "EST")
    return _xml(f"<FlexStatementResponse timestamp='{text}'>{inner}</FlexStatementResponse>")


def _fail(st: SimState, code: str, status: str = "Fail") -> Response:
    message = _MESSAGES.get(code, "Error.")
    return _envelope(
        st,
        f"<Status>{status}</Status><ErrorCode>{code}</ErrorCode><ErrorMessage>{escape(message)}</ErrorMessage>",
    )


def _yyyymmdd(text: str | None) -> date | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC).date()


def _token_problem(flex: FlexSim, token: str | None) -> str | None:
    if flex.token_error:
        return flex.token_error
    if not token:
        return "1020"
    if flex.token and token != flex.token:
        return "1015"
    return None


async def flex_endpoint(st: SimState, request: Request, path: str) -> Response:
    """``/flex/SendRequest`` and ``/flex/GetStatement`` (v3)."""
    flex = st.flex
    params = request.query_params
    problem = _token_problem(flex, params.get("t"))
    if path.rstrip("/") == "/SendRequest":
        if problem:
            return _fail(st, problem)
        query = params.get("q") or ""
        if not query.isdigit() or (flex.query_ids and query not in flex.query_ids):
            return _fail(st, "1014")
        try:
            start, end = _yyyymmdd(params.get("fd")), _yyyymmdd(params.get("td"))
        except ValueError:
            return _fail(st, "1020")
        if (start is None) != (end is None) or (
            start is not None and end is not None and not 0 <= (end - start).days < MAX_RANGE_DAYS
        ):
            return _fail(st, "1003")
        flex.counter += 1
        reference = f"{7_000_000_000 + flex.counter}"
        flex.requests[reference] = FlexRequest(query, start, end)
        url = f"{request.url.scheme}://{request.url.netloc}{request.url.path.rsplit('/', 1)[0]}/GetStatement"
        return _envelope(
            st, f"<Status>Success</Status><ReferenceCode>{reference}</ReferenceCode><Url>{escape(url)}</Url>"
        )
    if path.rstrip("/") == "/GetStatement":
        if problem:
            return _fail(st, problem)
        pending = flex.requests.get(params.get("q") or "")
        if pending is None:
            return _fail(st, "1017")
        now = st.clock.mono()
        flex.polls += 1
        too_fast = flex.last_poll is not None and now - flex.last_poll < flex.min_poll_seconds
        flex.last_poll = now
        if too_fast:
            return _fail(st, "1018", "Warn")
        pending.polls += 1
        if pending.polls <= flex.in_progress_polls:
            return _fail(st, "1019", "Warn")
        if pending.body is None:
            pending.body = statement_xml(
                st.book, st.clock.now(), flex.format, from_date=pending.from_date, to_date=pending.to_date
            )
        return Response(pending.body, media_type="text/xml")
    return _xml(
        "<FlexStatementResponse><Status>Fail</Status><ErrorCode>1020</ErrorCode></FlexStatementResponse>"
    )


async def flex_control(st: SimState, request: Request) -> Response:
    """``GET /sim/flex`` (the knobs) and ``POST /sim/flex`` (change them)."""
    flex = st.flex
    if request.method == "POST":
        body = await request.json()
        for key, value in (body or {}).items():
            if key not in {
                "token",
                "token_error",
                "in_progress_polls",
                "min_poll_seconds",
                "date_format",
                "time_format",
                "separator",
                "query_ids",
            }:
                return Response(
                    json.dumps({"error": f"unknown Flex knob {key!r}"}), 400, media_type="application/json"
                )
            setattr(flex, key, value)
        flex.format  # noqa: B018 - validates the format settings
    return Response(json.dumps(flex.knobs()), media_type="application/json")
