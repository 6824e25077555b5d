"""The browser page in a real browser: Debian's chromium, headless, driven through Selenium, with
the microphone replaced by a WAV file. The gateway and its workers are real; the browser runs in
a thread so the gateway's event loop keeps serving it."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.protocol import AudioFormat
from tests.audio_gen import write_wav
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
# send and receive, so the test can hold them against the published protocol schema.
RECORD_FRAMES = """
window.recordedFrames = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
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
        gateway: Any, browser: Callable[..., Browser], caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
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
        # The picture for the docs: final results, and the growing sentence's interim in grey
        # (or, on a slow machine that missed that moment, all three final results).
        wait_for(driver, lambda s: (s["final"] >= 2 and s["interim_rows"] == 1
                                    and s["speech"] == "speech") or s["final"] >= 3,
                 "results of a sentence in progress")
        shot = tmp_path / "browser.png"
        driver.save_screenshot(str(shot))
        if os.environ.get(SCREENSHOT_ENV):
            shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
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
                  {word: "the", start: 0.5, end: 0.7}, {word: "quick", start: 0.7, end: 1.0},
                  {word: "brown", start: 1.0, end: 1.4}, {word: "fox", start: 1.4, end: 1.8}]},
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
