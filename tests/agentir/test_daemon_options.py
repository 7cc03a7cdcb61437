"""Job options and list cursors the daemon once let through, probed over real loopback HTTP and WebSocket.

Every bad value is refused at submit (4xx naming the option) and no job is created; what the
daemon answers is strict JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp
import pytest
from test_daemon import _recv, noisy_png, post, started

from agentir.agent_policies.options import JOB_OPTION_NAMES
from agentir.bus.codec import encode
from agentir.daemon.messages import WsAck, WsError, WsSubmit

HUGE = "9" * 400  # an integer with 400 digits, as JSON text


@pytest.fixture(scope="module")
def png() -> bytes:
    """A noisy 256x192 shipped image, PNG-encoded."""
    return noisy_png()


def strict_json(text: str) -> Any:
    """``text`` parsed as strict JSON: a bare NaN, Infinity or -Infinity fails the test."""
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"the daemon answered non-standard JSON token {token}: {text[:200]}"))


async def post_multipart(http: aiohttp.ClientSession, png: bytes, options_text: str) -> tuple[int, Any]:
    """POST ``png`` as multipart with ``options_text`` sent verbatim as the options field."""
    form = aiohttp.FormData()
    form.add_field("image", png, filename="x.png", content_type="image/png")
    form.add_field("options", options_text, content_type="application/json")
    async with http.post("/v1/jobs", data=form) as r:
        return r.status, strict_json(await r.text())


async def post_query(http: aiohttp.ClientSession, png: bytes, options_text: str) -> tuple[int, Any]:
    """POST ``png`` as the body with ``options_text`` sent verbatim in ``?options=``."""
    async with http.post("/v1/jobs", data=png, headers={"Content-Type": "image/png"}, params={"options": options_text}) as r:
        return r.status, strict_json(await r.text())


async def listed(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """The jobs ``GET /v1/jobs`` lists (its body parsed as strict JSON)."""
    async with http.get("/v1/jobs") as r:
        assert r.status == 200
        return strict_json(await r.text())["jobs"]


async def assert_refused(http: aiohttp.ClientSession, png: bytes, options_text: str, option: str, *, status: int = 422) -> str:
    """Both submit forms refuse ``options_text`` with ``status`` and an error naming ``option``; nothing is listed."""
    for send in (post_multipart, post_query):
        got, body = await send(http, png, options_text)
        assert got == status, (send.__name__, options_text[:80], got, body)
        assert set(body) == {"type", "title", "status", "detail", "instance", "error"}, (send.__name__, body)  # RFC 9457
        assert option in body["error"] and "\n" not in body["error"], (send.__name__, body)
    assert await listed(http) == []
    return body["error"]


# ----------------------------------------------------------------------------- integers past any budget
async def test_a_400_digit_max_tool_calls_is_refused_at_submit(tmp_path, png):
    """A 400-digit max_tool_calls (once accepted, then an OverflowError) is 422 naming the option, in multipart and query form."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        error = await assert_refused(http, png, f'{{"max_tool_calls": {HUGE}}}', "max_tool_calls")
        assert HUGE not in error and len(error) < 300  # the number is summarised, not echoed


# ----------------------------------------------------------------------------- non-finite seconds
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_max_seconds_is_refused_and_listings_stay_strict_json(tmp_path, png, token):
    """max_seconds NaN/Infinity/-Infinity (JSON tokens Python's json.loads accepts) is 422, and the job list stays strict JSON."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        await assert_refused(http, png, f'{{"max_seconds": {token}}}', "max_seconds")
        status, body = await post_multipart(http, png, json.dumps({"max_seconds": 60}))
        assert status == 202
        jobs = await listed(http)
        assert [j["id"] for j in jobs] == [body["id"]] and jobs[0]["options"] == {"max_seconds": 60.0}
        async with http.get(f"/v1/jobs/{body['id']}") as r:
            assert r.status == 200 and strict_json(await r.text())["options"]["max_seconds"] == 60.0


# ----------------------------------------------------------------------------- counts that are not whole numbers
@pytest.mark.parametrize("value", ["3.5", "true"])
async def test_a_fractional_or_boolean_max_tool_calls_is_not_a_whole_number(tmp_path, png, value):
    """max_tool_calls 3.5 and true are both 422 with the same 'must be a whole number' message."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        error = await assert_refused(http, png, f'{{"max_tool_calls": {value}}}', "max_tool_calls")
        assert "must be a whole number" in error


# ----------------------------------------------------------------------------- unknown names
async def test_an_unknown_option_is_refused_listing_the_known_ones(tmp_path, png):
    """An unknown option name is 422 naming it and listing every known option."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        error = await assert_refused(http, png, json.dumps({"max_tool_calz": 3}), "max_tool_calz")
        known = error.split("known:", 1)[1]
        assert all(name in known for name in JOB_OPTION_NAMES), error


# ----------------------------------------------------------------------------- list cursors
@pytest.mark.parametrize("before", [HUGE, "0", "-5", "abc"], ids=["400-digits", "zero", "negative", "word"])
async def test_a_bad_before_cursor_is_400_not_500(tmp_path, png, before):
    """GET /v1/jobs?before= a 400-digit number, 0, a negative number or a word is 400 naming 'before' (the 400-digit one was a 500)."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        assert (await post(http, png))[0] == 202
        async with http.get("/v1/jobs", params={"before": before}) as r:
            body = strict_json(await r.text())
        assert r.status == 400, (before[:20], r.status, body)
        assert set(body) == {"type", "title", "status", "detail", "instance", "error"} and "before" in body["error"]


# ----------------------------------------------------------------------------- over the WebSocket
@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"max_seconds": math.nan}, "max_seconds"),  # msgpack carries NaN as a float
        ({"max_seconds": math.inf}, "max_seconds"),
        ({"max_tool_calls": 2**64 - 1}, "max_tool_calls"),  # the largest integer msgpack carries
        ({"max_tool_calls": 3.5}, "max_tool_calls"),
        ({"max_tool_calls": True}, "max_tool_calls"),
        ({"max_tool_calz": 3}, "max_tool_calz"),
    ],
)
async def test_a_bad_option_in_a_websocket_submit_gets_a_422_ws_error(tmp_path, png, options, option):
    """A ws.submit with one bad option gets ws.error status 422 naming it, no job is created, and the socket stays usable."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        async with http.ws_connect("/v1/ws") as ws:
            await ws.send_bytes(encode(WsSubmit(image=png, options=options, watch=False), max_bytes=1 << 22))
            err = (await _recv(ws)).message
            assert isinstance(err, WsError) and err.status == 422 and option in err.error and "\n" not in err.error, err
            assert await listed(http) == []
            await ws.send_bytes(encode(WsSubmit(image=png, options={"max_tool_calls": 4}, watch=False), max_bytes=1 << 22))
            ack = (await _recv(ws)).message
            assert isinstance(ack, WsAck) and ack.state == "queued"
        assert [j["id"] for j in await listed(http)] == [ack.job]
