"""The browser page in a real browser: Debian's chromium, headless, driven through Selenium, with
the microphone replaced by a WAV file. The gateway and its workers are real; the browser runs in
a thread so the gateway's event loop keeps serving it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.gateway.auth import hash_key, new_key
from streamer.protocol import AudioFormat
from tests.audio_gen import write_wav
from tests.conftest import wait_until
from tests.schema import problems

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "speech_3_sentences.wav"  # 16 kHz mono, 3 sentences, 6.25 s
with wave.open(str(SPEECH)) as _speech:
    SPEECH_SAMPLES = _speech.getnframes()  # 16 kHz: what the gateway counts, resampled or not
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TRACE_UI = "http://127.0.0.1:16686/trace/{trace_id}"
# Where to copy the screenshot of the page with results (the one in doc/img is made this way).
SCREENSHOT_ENV = "BROWSER_TEST_SCREENSHOT"
# As root in a container, and with no network beyond loopback: no sandbox, no GPU, none of the
# browser's own background traffic, a fresh profile per browser.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1100,680"]
MISSING_HELP = "apt-get install -y chromium chromium-driver; pip install selenium"

Browser = Any  # selenium's WebDriver, imported only when a browser is there
# Run in every page before its own scripts: keeps each JSON text frame the page's websockets
# send and receive, so the test can hold them against the published protocol schema, and the
# address and subprotocols each websocket was opened with.
RECORD_FRAMES = """
window.recordedFrames = [];
window.recordedSockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    window.recordedSockets.push({url: String(args[0]), protocols: args[1] ?? null});
    this.addEventListener("message", (event) => {
      if (typeof event.data === "string") window.recordedFrames.push(["received", event.data]);
    });
  }
  send(data) {
    if (typeof data === "string") window.recordedFrames.push(["sent", data]);
    return super.send(data);
  }
};
"""


def missing_parts() -> list[str]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return missing


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Browser]]:
    """``browser(fake_audio=WAV)`` -> a started headless chromium; quit at the end."""
    missing = missing_parts()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the page in a browser; missing: {', '.join(missing)} "
                        f"(.ci/run installs them: {MISSING_HELP})")
        pytest.skip(f"no browser to test the page in: missing {', '.join(missing)} "
                    f"({MISSING_HELP})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_downloads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Selenium Manager was asked for a driver; it must use "
                             f"{CHROMEDRIVER} and {CHROMIUM}")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    drivers: list[Browser] = []

    def start(fake_audio: Path | None = None, flags: tuple[str, ...] = ()) -> Browser:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, *flags):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path / f'profile{len(drivers)}'}")
        # A microphone that plays the WAV once, and no permission prompt.
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument("--use-fake-device-for-media-stream")
        if fake_audio is not None:
            options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        drivers.append(driver)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_FRAMES})
        return driver

    yield start
    for driver in drivers:
        driver.quit()


# ---- reading the page ----------------------------------------------------------------------

def element(driver: Browser, id_: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, id_)


# One round trip per look, so a state the page passes through is read as a whole.
READ_STATE = """
const $ = (id) => document.getElementById(id);
const counts = $("results").dataset;
return {state: document.body.dataset.state, speech: $("speech").dataset.speech,
        status: $("status").textContent, error: $("error").hidden ? "" : $("error").textContent,
        final: Number(counts.final || 0), interim: Number(counts.interim || 0),
        failed: Number(counts.failed || 0),
        interim_rows: document.querySelectorAll("#rows tr.interim").length};
"""


def page_state(driver: Browser) -> dict[str, Any]:
    """What a person sees at a glance, and the counters the page keeps on its results table."""
    return driver.execute_script(READ_STATE)


def wait_for(driver: Browser, check: Callable[[dict[str, Any]], bool], what: str,
             within: float = 30.0) -> dict[str, Any]:
    """Poll the page until ``check(page_state)`` holds; fail saying what the page showed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, within, poll_frequency=0.05).until(
            lambda d: (lambda s: s if check(s) else None)(page_state(d)))
    except TimeoutException:
        raise AssertionError(f"page never showed {what} within {within} s; it shows "
                             f"{page_state(driver)}") from None


def console(driver: Browser) -> list[dict[str, Any]]:
    return driver.get_log("browser")


def protocol_problems(driver: Browser) -> tuple[int, list[str]]:
    """How many JSON frames the page exchanged, and each one the protocol schema rejects."""
    frames = driver.execute_script("return window.recordedFrames;")
    found = []
    for direction, text in frames:
        for problem in problems("ClientMessage" if direction == "sent" else "ServerEvent", text):
            found.append(f"{direction} {text[:200]}: {problem}")
    return len(frames), found


def severe(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["level"] == "SEVERE"]


# The rows as a person reads them: channel, audio times, the model's fields, latency.
READ_ROWS = """
return Array.from(document.querySelectorAll("#rows tr"), (row) => ({
  kind: row.className, channel: row.cells[0].textContent, time: row.cells[1].textContent,
  result: row.cells[2].textContent, latency: row.cells[3].textContent,
  fields: Object.fromEntries(Array.from(row.cells[2].querySelectorAll(".field"),
    (f) => [f.dataset.field, f.querySelector(".value").textContent])),
}));
"""


def result_rows(driver: Browser) -> list[dict[str, Any]]:
    return driver.execute_script(READ_ROWS)


def choose(driver: Browser, endpoint: str | None = None, file: Path | None = None) -> None:
    from selenium.webdriver.support.ui import Select

    if endpoint is not None:
        Select(element(driver, "endpoint")).select_by_value(endpoint)
    if file is not None:
        element(driver, "source-file").click()
        element(driver, "file").send_keys(str(file))


def open_page(driver: Browser, url: str, model: str) -> None:
    driver.get(url)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: element(d, "model").text == model)


# ---- tests ---------------------------------------------------------------------------------

async def test_microphone_on_segmented_shows_speech_activity_and_the_models_fields(
        gateway: Any, browser: Callable[..., Browser], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamer.gateway.session")
    server = await gateway(workers=1, model__name="features", server__trace_ui_url=TRACE_UI)
    url = str(server.make_url("/"))

    def drive() -> dict[str, Any]:
        driver = browser(fake_audio=SPEECH)
        open_page(driver, url, "features")
        assert page_state(driver)["state"] == "idle"
        element(driver, "start").click()
        wait_for(driver, lambda s: s["state"] == "streaming", "the stream running")
        # The speech indicator follows active/inactive: on for the first sentence, then off.
        wait_for(driver, lambda s: s["speech"] == "speech", "speech")
        wait_for(driver, lambda s: s["speech"] == "silence", "silence after the first sentence")
        # Each of the three sentences ends as one final result; interims came before them.
        seen = wait_for(driver, lambda s: s["final"] >= 3 and s["speech"] == "silence",
                        "three final results")
        assert seen["interim"] >= 1 and seen["failed"] == 0, seen
        element(driver, "start").click()  # now "Stop"
        done = wait_for(driver, lambda s: s["state"] == "stopped", "the stream stopped")
        trace = element(driver, "trace").find_element("tag name", "a")
        return {"done": done, "rows": result_rows(driver), "format": element(driver, "format").text,
                "trace": trace.text, "href": trace.get_attribute("href"),
                "console": console(driver), "protocol": protocol_problems(driver)}

    page = await asyncio.to_thread(drive)
    rows = page["rows"]
    assert page["done"]["error"] == "" and page["done"]["speech"] == "off"
    assert page["done"]["status"] == f"Stopped: {len(rows)} results."
    assert len(rows) == page["done"]["final"] >= 3
    for row in rows:
        # Every interim row was replaced by the final result of its segment.
        assert row["kind"] == "final" and row["channel"] == "0", row
        assert re.fullmatch(r"\d+\.\d\d–\d+\.\d\d s", row["time"]), row
        assert re.fullmatch(r"\d+ ms", row["latency"]), row
        fields = row["fields"]
        assert set(fields) == {"rms_dbfs", "peak_dbfs", "voiced_ratio", "median_pitch_hz",
                               "spectral_centroid_hz", "zero_crossing_rate"}, row
        assert -60 < float(fields["rms_dbfs"]) < 0 and 0 < float(fields["voiced_ratio"]) <= 1
        assert 60 < float(fields["median_pitch_hz"]) < 400, row  # a voice, not a hum or hiss
    starts = [float(r["time"].split("–")[0]) for r in rows]
    assert starts == sorted(starts) and starts[0] < 1.0
    # One trace from the browser to the gateway: the page's traceparent is the session's trace.
    assert re.fullmatch(r"[0-9a-f]{32}", page["trace"])
    assert page["href"] == TRACE_UI.format(trace_id=page["trace"])
    rate = re.search(r"(\d+) Hz float32", page["format"])
    assert rate, page["format"]
    started = [r.getMessage() for r in caplog.records if "started on /api/v1/segmented" in
               r.getMessage()]
    assert len(started) == 1 and f"trace {page['trace']}]" in started[0], started
    assert f"1 ch, {rate.group(1)} Hz, 32-bit float" in started[0]
    assert severe(page["console"]) == [], page["console"]
    frames, wrong = page["protocol"]  # start, stop and the events, as the schema says
    assert frames > 2 and wrong == [], wrong


async def test_a_chosen_file_streams_at_real_time_on_simple(
        gateway: Any, browser: Callable[..., Browser]) -> None:
    server = await gateway(workers=1, model__name="counter")
    url = str(server.make_url("/"))

    def drive() -> dict[str, Any]:
        driver = browser()
        open_page(driver, url, "counter")
        choose(driver, endpoint="/api/v1/simple", file=SPEECH)
        element(driver, "start").click()
        # Paced, not sent in one burst: results come back while the file is still playing.
        wait_for(driver, lambda s: s["state"] == "streaming" and s["final"] >= 2,
                 "results while the file streams")
        done = wait_for(driver, lambda s: s["state"] == "stopped", "the end of the file")
        return {"done": done, "rows": result_rows(driver), "format": element(driver, "format").text,
                "console": console(driver), "protocol": protocol_problems(driver)}

    page = await asyncio.to_thread(drive)
    rows = page["rows"]
    assert page["done"]["error"] == "" and page["done"]["speech"] == "off"
    assert "speech_3_sentences.wav (6.2 s, 1 ch)" in page["format"]
    assert all(set(r["fields"]) == {"count"} and r["kind"] == "final" for r in rows), rows
    assert [r["time"].split("–")[0] for r in rows][:3] == ["0.00", "0.50", "1.00"]
    # Every sample of the file arrived, through the browser's and the gateway's resampling.
    total = sum(int(r["fields"]["count"]) for r in rows)
    assert abs(total - SPEECH_SAMPLES) <= 16, total
    assert severe(page["console"]) == [], page["console"]
    frames, wrong = page["protocol"]  # start, stop and the events, as the schema says
    assert frames > 2 and wrong == [], wrong


async def test_a_close_code_is_shown_with_its_meaning_and_reason(
        gateway: Any, browser: Callable[..., Browser]) -> None:
    server = await gateway(workers=1, session__max_stream_seconds=1)
    url = str(server.make_url("/"))

    def drive() -> dict[str, Any]:
        driver = browser()
        open_page(driver, url, "counter")
        choose(driver, endpoint="/api/v1/simple", file=SPEECH)
        element(driver, "start").click()
        done = wait_for(driver, lambda s: s["state"] == "failed", "the stream ended by the server")
        return {"done": done, "console": console(driver), "protocol": protocol_problems(driver)}

    page = await asyncio.to_thread(drive)
    assert page["done"]["error"] == ("connection closed with code 1008 (policy violation): "
                                     "stream longer than the maximum of 1 s of audio")
    assert page["done"]["final"] >= 2  # the results before the limit were shown
    assert severe(page["console"]) == [], page["console"]
    frames, wrong = page["protocol"]  # start, stop and the events, as the schema says
    assert frames > 2 and wrong == [], wrong


async def test_a_refused_session_is_shown_with_the_gateways_reason(
        gateway: Any, browser: Callable[..., Browser], nats_server: Any) -> None:
    # Workers through NATS, and none there: the gateway is up but no worker is ready.
    server = await gateway(workers=0, pool__nats_url=nats_server.url)
    url = str(server.make_url("/"))

    def drive() -> dict[str, Any]:
        driver = browser(fake_audio=SPEECH)
        open_page(driver, url, "counter")
        element(driver, "start").click()
        done = wait_for(driver, lambda s: s["state"] == "failed", "the refusal")
        return {"done": done, "button": element(driver, "start").text,
                "console": console(driver)}

    page = await asyncio.to_thread(drive)
    assert page["done"]["error"] == (
        "the gateway refused the session (HTTP 503): no worker is ready yet (starting up or "
        "restarting); try again shortly; try again in 2 s")
    assert page["done"]["speech"] == "off" and page["button"] == "Start"
    # The browser itself reports the refused upgrade and the 503 it then read (network
    # messages); the page's own script raised nothing.
    errors = severe(page["console"])
    assert errors and all(e["source"] == "network" and "503" in e["message"] for e in errors)
    assert not [e for e in page["console"] if e.get("source") == "javascript"], page["console"]


async def test_on_plain_http_away_from_localhost_the_page_says_why_and_a_file_still_streams(
        gateway: Any, browser: Callable[..., Browser], tmp_path: Path) -> None:
    # A name for 127.0.0.1 that the browser does not count as localhost: not a secure context.
    # The gateway takes websockets from its own origin under such a name only when told to.
    server = await gateway(workers=1, auth__allow_anonymous=True)
    url = f"http://gateway.test:{server.port}/"
    stereo = write_wav(tmp_path / "stereo.wav", AudioFormat(2, 22050, 16, False), 1.0)

    def drive() -> dict[str, Any]:
        driver = browser(fake_audio=SPEECH,
                         flags=("--host-resolver-rules=MAP gateway.test 127.0.0.1",))
        open_page(driver, url, "counter")
        element(driver, "start").click()
        refused = wait_for(driver, lambda s: s["state"] == "failed", "no microphone")
        choose(driver, endpoint="/api/v1/simple", file=stereo)
        element(driver, "start").click()
        done = wait_for(driver, lambda s: s["state"] == "stopped", "the file streamed")
        return {"refused": refused, "done": done, "rows": result_rows(driver),
                "format": element(driver, "format").text, "console": console(driver),
                "protocol": protocol_problems(driver)}

    page = await asyncio.to_thread(drive)
    assert page["refused"]["error"] == (
        "the microphone is only available to pages served over https:// or from localhost, "
        f"and this page is http://gateway.test:{server.port}; stream a file instead, or open "
        "the page through https")
    assert page["done"]["error"] == ""
    assert "stereo.wav (1.0 s, 2 ch)" in page["format"]
    for channel in ("0", "1"):
        counts = [int(r["fields"]["count"]) for r in page["rows"] if r["channel"] == channel]
        assert abs(sum(counts) - 16000) <= 2, (channel, counts)
    assert severe(page["console"]) == [], page["console"]
    frames, wrong = page["protocol"]  # start, stop and the events, as the schema says
    assert frames > 2 and wrong == [], wrong


# A transcription model's events, as the page receives them: interims with text, then the final
# text and its words. Fed to the page's own result table, in the browser.
SHOW_TEXT_EVENTS = """
const done = arguments[arguments.length - 1];
import("/static/results.js").then(({ Results }) => {
  const row = (tr) => ({kind: tr.className, text: tr.cells[2].querySelector(".text")?.textContent,
                        words: Array.from(tr.cells[2].querySelectorAll(".word"),
                                          (w) => w.textContent),
                        tips: Array.from(tr.cells[2].querySelectorAll(".word"),
                                         (w) => [w.title, w.classList.contains("unsure")]),
                        color: getComputedStyle(tr.cells[2]).color,
                        result: tr.cells[2].textContent, latency: tr.cells[3].textContent});
  const results = new Results(document.getElementById("rows"));
  results.show({type: "segment", channel: 0, start_time: 0.5, end_time: 1.0, is_final: false,
                text: "the quick"}, 41);
  const interim = row(document.querySelector("#rows tr"));
  results.show({type: "segment", channel: 0, start_time: 0.5, end_time: 1.5, is_final: false,
                text: "the quick brown"}, 40);
  results.show({type: "segment", channel: 0, start_time: 0.5, end_time: 1.8, is_final: true,
                text: "The quick brown fox.", words: [
                  {word: "the", start_time: 0.5, end_time: 0.7, confidence: 1.0},
                  {word: "quick", start_time: 0.7, end_time: 1.0, confidence: 0.9},
                  {word: "brown", start_time: 1.0, end_time: 1.4, confidence: 0.4},
                  {word: "fox", start_time: 1.4, end_time: 1.8, confidence: 1.0}]},
               620);
  results.show({type: "error", channel: 1, start_time: 0.5, end_time: 1.8, is_final: true,
                message: "inference failed: worker 0 crashed (tried 3 times)"}, 700);
  done({interim, rows: Array.from(document.querySelectorAll("#rows tr"), row)});
}).catch((err) => done({error: String(err)}));
"""


async def test_text_results_interim_in_grey_replaced_by_the_final_text_and_its_words(
        gateway: Any, browser: Callable[..., Browser]) -> None:
    server = await gateway(workers=1, pool="inline")
    url = str(server.make_url("/"))

    def drive() -> dict[str, Any]:
        driver = browser()
        open_page(driver, url, "counter")
        shown = driver.execute_async_script(SHOW_TEXT_EVENTS)
        assert "error" not in shown, shown
        return {**shown, "state": page_state(driver), "console": console(driver)}

    page = await asyncio.to_thread(drive)
    interim = page["interim"]
    assert interim["kind"] == "interim" and interim["text"] == "the quick"
    final, failed = page["rows"]  # the interims' row now holds the final result
    assert final["kind"] == "final" and final["text"] == "The quick brown fox."
    assert interim["color"] == "rgb(122, 131, 140)" != final["color"]  # grey, then not
    assert final["words"] == ["the0.50–0.70 s", "quick0.70–1.00 s", "brown1.00–1.40 s",
                              "fox1.40–1.80 s"]
    assert final["tips"] == [["confidence 1.00", False], ["confidence 0.90", False],
                             ["confidence 0.40", True], ["confidence 1.00", False]]
    assert final["latency"] == "620 ms"
    assert failed["kind"] == "failed"
    assert failed["result"] == "error: inference failed: worker 0 crashed (tried 3 times)"
    assert page["state"]["final"] == 1 and page["state"]["interim"] == 2
    assert page["state"]["failed"] == 1
    assert severe(page["console"]) == [], page["console"]


async def test_an_origin_the_gateway_refuses_is_shown_in_words(
        gateway: Any, browser: Callable[..., Browser]) -> None:
    # No keys and no --allow-anonymous: the gateway takes its own page only under a loopback
    # name, and refuses the upgrade (403) before any handler, where the page cannot read why.
    server = await gateway(workers=1)
    url = f"http://gateway.test:{server.port}/"

    def drive() -> dict[str, Any]:
        driver = browser(flags=("--host-resolver-rules=MAP gateway.test 127.0.0.1",))
        open_page(driver, url, "counter")
        choose(driver, file=SPEECH)
        element(driver, "start").click()
        done = wait_for(driver, lambda s: s["state"] == "failed", "the refusal")
        return {"done": done, "console": console(driver)}

    page = await asyncio.to_thread(drive)
    assert page["done"]["error"] == (
        "the gateway refused the websocket upgrade to /api/v1/segmented (the browser does not "
        "say why; the gateway's log does: for example this page's origin is not in "
        "auth.allowed_origins)")
    errors = severe(page["console"])
    assert errors and all(e["source"] == "network" for e in errors), page["console"]


# ---- a gateway with API keys -------------------------------------------------------------

KEY, OTHER_KEY = new_key(), new_key()
WRONG_KEY = new_key()  # well formed, configured nowhere


def key_config(**limits: Any) -> list[dict[str, Any]]:
    return [{"name": "alice", "hash": hash_key(KEY), **limits}]


def enter_key(driver: Browser, secret: str) -> None:
    field = element(driver, "token")
    field.clear()
    field.send_keys(secret)


def sockets(driver: Browser) -> list[dict[str, Any]]:
    return driver.execute_script("return window.recordedSockets;")


def nowhere_but_the_field(secret: str, page: dict[str, Any], logs: str) -> None:
    """A key goes to /api/v1/token in a header only: not in a websocket's address or
    subprotocols, not in the console, not in the gateway's log."""
    for opened in page["sockets"]:
        assert secret not in json.dumps(opened) and "?" not in opened["url"], opened
    assert secret not in json.dumps(page["console"]) and secret not in logs


async def test_a_gateway_with_keys_asks_for_one_refuses_a_wrong_one_in_words_then_streams(
        gateway: Any, browser: Callable[..., Browser], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamer")
    server = await gateway(workers=1, auth__keys=key_config())
    url = str(server.make_url("/"))

    def drive() -> dict[str, Any]:
        from selenium.webdriver.support.ui import WebDriverWait

        driver = browser()
        open_page(driver, url, "counter")
        WebDriverWait(driver, 10).until(lambda d: element(d, "credentials").is_displayed())
        asked = {"hint": element(driver, "credentials-hint").text,
                 "type": element(driver, "token").get_attribute("type")}
        choose(driver, endpoint="/api/v1/simple", file=SPEECH)
        element(driver, "start").click()  # no key yet: nothing is sent
        wait_for(driver, lambda s: s["error"] != "", "that a key is needed")
        asked["error"] = page_state(driver)["error"]
        enter_key(driver, WRONG_KEY)
        element(driver, "start").click()
        wrong = wait_for(driver, lambda s: s["state"] == "failed", "the wrong key refused")
        opened_with_wrong = len(sockets(driver))
        enter_key(driver, KEY)
        element(driver, "start").click()
        wait_for(driver, lambda s: s["state"] == "streaming" and s["final"] >= 2,
                 "results once the key is entered")
        done = wait_for(driver, lambda s: s["state"] == "stopped", "the end of the file")
        return {"asked": asked, "wrong": wrong, "opened_with_wrong": opened_with_wrong,
                "done": done, "rows": result_rows(driver), "sockets": sockets(driver),
                "console": console(driver), "protocol": protocol_problems(driver)}

    page = await asyncio.to_thread(drive)
    assert page["asked"] == {
        "hint": "This gateway needs an API key (or a token made from one).", "type": "password",
        "error": "this gateway needs an API key or token: enter it under Access"}
    assert page["wrong"]["error"] == ("the gateway refused the API key (HTTP 401): the API key "
                                      "is not valid; check the key and enter it again")
    assert page["opened_with_wrong"] == 0  # refused at /api/v1/token, before any websocket
    assert page["done"]["error"] == "" and page["done"]["failed"] == 0
    total = sum(int(r["fields"]["count"]) for r in page["rows"])
    assert abs(total - SPEECH_SAMPLES) <= 16, total
    # One websocket, with a fresh token as a subprotocol beside the protocol's name.
    (opened,) = page["sockets"]
    assert opened["url"] == f"ws://127.0.0.1:{server.port}/api/v1/simple"
    assert opened["protocols"][0] == "streamer.v1"
    assert re.fullmatch(r"streamer\.token\.st1\.[\w-]+\.[\w-]+", opened["protocols"][1])
    nowhere_but_the_field(KEY, page, caplog.text)
    nowhere_but_the_field(WRONG_KEY, page, caplog.text)
    # The browser reports the refused token request (a network message); no script error.
    errors = severe(page["console"])
    assert errors and all(e["source"] == "network" and "401" in e["message"] for e in errors)
    frames, wrong = page["protocol"]
    assert frames > 2 and wrong == [], wrong


async def test_a_key_at_its_session_limit_and_an_expired_token_are_explained(
        gateway: Any, browser: Callable[..., Browser]) -> None:
    server = await gateway(workers=1, auth__keys=key_config(max_sessions=1), auth__token_ttl=1)
    url = str(server.make_url("/"))
    async with aiohttp.ClientSession() as http:
        async with http.post(server.make_url("/api/v1/token"),
                             headers={"Authorization": f"Bearer {KEY}"}) as resp:
            issued = await resp.json()
        old_token = issued["token"]
        await wait_until(lambda: time.time() > issued["expires_at"] + 0.1, within=5.0)
        # The key's one session, held open from here while the page tries for a second.
        async with http.ws_connect(server.make_url("/api/v1/simple"),
                                   headers={"Authorization": f"Bearer {KEY}"}):

            def drive() -> dict[str, Any]:
                driver = browser()
                open_page(driver, url, "counter")
                choose(driver, endpoint="/api/v1/simple", file=SPEECH)
                enter_key(driver, "st1.half a token")
                element(driver, "start").click()
                torn = wait_for(driver, lambda s: s["state"] == "failed", "a torn token")
                enter_key(driver, KEY)
                element(driver, "start").click()
                # Each attempt ends failed again, with its own words.
                limit = wait_for(driver, lambda s: s["state"] == "failed" and
                                 s["error"] != torn["error"], "the key's limit")
                enter_key(driver, old_token)
                element(driver, "start").click()
                expired = wait_for(driver, lambda s: s["state"] == "failed" and
                                   s["error"] != limit["error"], "the old token")
                return {"torn": torn, "limit": limit, "expired": expired,
                        "sockets": sockets(driver), "console": console(driver)}

            page = await asyncio.to_thread(drive)
    assert page["torn"]["error"] == (
        "that is not a whole token (a token is st1. followed by two parts joined by a dot, as "
        "/api/v1/token gives it); enter the API key or a fresh token")
    assert len(page["sockets"]) == 2  # none for the torn token
    assert page["limit"]["error"] == (
        "the gateway accepted the API key but refused the connection: the key may be at its "
        "limit of concurrent sessions or of audio per minute (HTTP 429; wait and try again), "
        "or this page's origin may not connect (HTTP 403); the gateway's log says which")
    assert re.fullmatch(r"the gateway refused the token: it expired at .+ \(tokens last at "
                        r"most 1 s\); enter the API key, or a fresh token",
                        page["expired"]["error"]), page["expired"]
    assert not [e for e in page["console"] if e.get("source") == "javascript"], page["console"]


# ---- speech to text ------------------------------------------------------------------------

MORE_SPEECH = ROOT / "tests" / "data" / "speech_3_more_sentences.wav"
GRAMMAR = ROOT / "tests" / "data" / "sentences.gram"
MORE_SENTENCES = ["the red cat runs over the fence", "please text me later tonight",
                  "have a great day"]
GREY = "rgb(122, 131, 140)"
# Every state each row of the table passes through, recorded as it changes.
WATCH_ROWS = """
window.rowHistory = [];
const rows = document.getElementById("rows");
new MutationObserver(() => {
  Array.from(rows.rows).forEach((tr, i) => {
    const seen = {kind: tr.className, text: tr.cells[2].querySelector(".text")?.textContent,
                  color: getComputedStyle(tr.cells[2]).color};
    const last = window.rowHistory.findLast((h) => h.row === i);
    if (!last || last.kind !== seen.kind || last.text !== seen.text) {
      window.rowHistory.push({row: i, ...seen});
    }
  });
}).observe(rows, {childList: true, subtree: true, characterData: true});
"""
READ_WORDS = """
return Array.from(document.querySelectorAll("#rows tr"), (tr) => ({
  text: tr.cells[2].querySelector(".text").textContent,
  words: Array.from(tr.cells[2].querySelectorAll(".word"),
                    (w) => [w.firstChild.textContent, w.querySelector(".at").textContent])}));
"""


async def test_speech_to_text_interim_grey_text_is_replaced_by_the_final_words(
        gateway: Any, browser: Callable[..., Browser], tmp_path: Path) -> None:
    server = await gateway(workers=1, model__name="transcribe", model__grammar=str(GRAMMAR))
    url = str(server.make_url("/"))

    def drive() -> dict[str, Any]:
        driver = browser(fake_audio=MORE_SPEECH)
        open_page(driver, url, "transcribe")
        driver.execute_script(WATCH_ROWS)
        element(driver, "start").click()
        # The picture for the docs: final text, and the growing sentence's interim in grey
        # (or, on a slow machine that missed that moment, all three final results).
        wait_for(driver, lambda s: (s["final"] >= 2 and s["interim_rows"] == 1) or
                 s["final"] >= 3, "text of a sentence in progress", within=60)
        shot = tmp_path / "browser.png"
        driver.save_screenshot(str(shot))
        if os.environ.get(SCREENSHOT_ENV):
            shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
        wait_for(driver, lambda s: s["final"] >= 3 and s["speech"] == "silence",
                 "three final results", within=60)
        element(driver, "start").click()  # now "Stop"
        done = wait_for(driver, lambda s: s["state"] == "stopped", "the stream stopped")
        return {"done": done, "rows": driver.execute_script(READ_WORDS),
                "history": driver.execute_script("return window.rowHistory;"),
                "console": console(driver), "protocol": protocol_problems(driver)}

    page = await asyncio.to_thread(drive)
    assert page["done"]["error"] == "" and page["done"]["failed"] == 0
    rows = page["rows"]
    # on a mismatch, show every text each row showed, in order (interims, finals)
    assert [r["text"] for r in rows] == MORE_SENTENCES, page["history"]
    previous_end = 0.0
    for row, sentence in zip(rows, MORE_SENTENCES, strict=True):
        assert [w for w, _ in row["words"]] == sentence.split(), row
        for _, at in row["words"]:
            times = re.fullmatch(r"(\d+\.\d\d)–(\d+\.\d\d) s", at)
            assert times, at
            start, end = float(times.group(1)), float(times.group(2))
            assert previous_end - 0.01 <= start <= end, row  # in order on the timeline
            previous_end = end
    for i, sentence in enumerate(MORE_SENTENCES):
        seen = [h for h in page["history"] if h["row"] == i]
        interims = [h for h in seen if h["kind"] == "interim"]
        # Grey interim text, each a beginning of the sentence, then the final text, black.
        assert interims and all(h["color"] == GREY for h in interims), seen
        assert all(sentence.startswith(h["text"].rstrip("…")) for h in interims), seen
        assert seen[-1]["kind"] == "final" and seen[-1]["text"] == sentence, seen
        assert seen[-1]["color"] != GREY
        assert "final" not in [h["kind"] for h in seen[:-1]], seen  # nothing after the final
    assert severe(page["console"]) == [], page["console"]
    frames, wrong = page["protocol"]
    assert frames > 2 and wrong == [], wrong
