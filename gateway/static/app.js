// The streamer browser page: capture audio (microphone through an AudioWorklet, or a file
// paced at real time), stream it to the gateway over a websocket as float32 frames at the
// AudioContext's own rate (the gateway resamples), and show the events as they come back.
// Plain JavaScript, no build step. The page's state is on <body data-state>, for people and
// for the browser test: idle, connecting, streaming, stopping, stopped, failed.

import { authInfo, describeClose, explainFailedConnect, openSocket, tokenFor }
  from "./connection.js";
import { Results } from "./results.js";
import { microphoneAllowed, NO_MICROPHONE, startFile, startMicrophone } from "./sources.js";
import { newTraceparent, traceUrl } from "./trace.js";

const $ = (id) => document.getElementById(id);
let pageConfig = { model: "?", version: "", trace_ui_url: null };
// What /api/v1/auth said at load: whether to ask for a key or token, and how to send it.
let auth = { required: false };
let session = null;

function showTrace(traceId) {
  const box = $("trace");
  box.textContent = "";
  const template = pageConfig.trace_ui_url;
  if (template) {
    const link = document.createElement("a");
    link.href = traceUrl(template, traceId);
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = traceId;
    box.append(link);
  } else {
    box.textContent = traceId;
  }
}

// ---- one streaming session --------------------------------------------------------------

class Session {
  constructor(options) {
    this.endpoint = options.endpoint;
    this.interim = options.interim;
    this.useFile = options.file !== null;
    this.file = options.file;
    this.secret = options.secret; // the key or token entered, "" if none; never logged
    this.results = new Results($("rows"));
    this.active = new Set(); // channels in speech
    this.sentSeconds = 0;
    this.marks = []; // [audio seconds sent, performance.now()] per frame, for latency
    this.source = null;
    this.ws = null;
    this.opened = false;
    this.started = false;
    this.ended = false; // failed or closed: later socket events change nothing
  }

  async start() {
    // The context must be made before the first await: browsers allow audio on a click only.
    this.ctx = new AudioContext();
    this.ctx.resume();
    if (!this.useFile && !microphoneAllowed()) return this.fail(NO_MICROPHONE);
    const { traceId, traceparent } = newTraceparent();
    showTrace(traceId);
    this.results.clear();
    setSpeech("off");
    setState("connecting", `Connecting to ${this.endpoint}…`);
    try {
      await this.connect();
    } catch (err) {
      return this.fail(err.message);
    }
    // Frames captured before 'start' went out wait for it.
    const pending = [];
    const onFrame = (samples) => (this.started ? this.send(samples) : pending.push(samples));
    try {
      this.source = this.useFile
        ? await startFile(this.ctx, this.file, onFrame, () => this.stop())
        : await startMicrophone(this.ctx, onFrame);
    } catch (err) {
      this.fail(`cannot capture audio: ${err.message}`);
      this.ws.close(1000, "no audio");
      return;
    }
    const format = { channels: this.source.channels, sample_rate: this.ctx.sampleRate,
                     bit_depth: 32, is_float: true };
    this.ws.send(JSON.stringify({ request: "start", format, interim_results: this.interim,
                                  trace_id: traceparent }));
    this.started = true;
    $("format").textContent = `${this.source.label}: ${this.ctx.sampleRate} Hz float32`;
    pending.forEach((samples) => this.send(samples));
    setSpeech(this.endpoint.endsWith("/segmented") ? "silence" : "off");
    if (this.state !== "stopping") setState("streaming", "Streaming: results appear below.");
  }

  /** A fresh token for this connection when the gateway wants one, then the websocket. */
  async connect() {
    const token = auth.required && this.secret ? await tokenFor(this.secret, auth) : null;
    return this.open(token);
  }

  open(token) {
    return new Promise((resolve, reject) => {
      const ws = openSocket(this.endpoint, token, auth);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        this.opened = true;
        this.ws = ws;
        resolve();
      };
      ws.onmessage = (event) => this.onMessage(event);
      ws.onclose = (event) => {
        if (!this.opened) {
          explainFailedConnect(this.endpoint, this.secret).then((why) => reject(new Error(why)));
        } else {
          this.onClose(event);
        }
      };
    });
  }

  send(samples) {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(samples.buffer);
    this.sentSeconds += samples.length / this.channelsOr1() / this.ctx.sampleRate;
    this.marks.push([this.sentSeconds, performance.now()]);
  }

  channelsOr1() {
    return this.source ? this.source.channels : 1;
  }

  /** Milliseconds since the audio up to `seconds` had been sent (null if not yet known). */
  latencySince(seconds) {
    const marks = this.marks;
    let lo = 0;
    let hi = marks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (marks[mid][0] + 1e-3 < seconds) lo = mid + 1;
      else hi = mid;
    }
    return lo < marks.length ? performance.now() - marks[lo][1] : null;
  }

  onMessage(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (err) {
      return showError(`the gateway sent something that is not JSON: ${message.data}`);
    }
    switch (event.type) {
      case "segment":
        this.results.show(event, this.latencySince(event.end_time));
        break;
      case "error":
        if (typeof event.start_time === "number") {
          this.results.show(event, this.latencySince(event.end_time));
        } else {
          showError(`the gateway reports: ${event.message}`);
        }
        break;
      case "active":
        this.active.add(event.channel);
        setSpeech("speech");
        break;
      case "inactive":
        this.active.delete(event.channel);
        if (this.active.size === 0) setSpeech("silence");
        break;
      case "stopped":
        this.active.delete(event.channel);
        break;
      default:
        break; // events this page does not know yet are not an error
    }
  }

  async stop() {
    if (this.ended || this.state === "stopping" || !this.ws) return;
    this.state = "stopping";
    setState("stopping", "Stopping: waiting for the last results…");
    if (this.source) await this.source.stop();
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ request: "stop", disconnect: true }));
    }
  }

  onClose(event) {
    if (this.ended) return;
    if (event.code !== 1000) return this.fail(describeClose(event));
    this.release();
    setState("stopped", `Stopped: ${this.results.rows.size} results.`);
  }

  fail(message) {
    if (this.ended) return;
    this.release();
    showError(message);
    setState("failed", "Failed.");
  }

  release() {
    this.ended = true;
    setSpeech("off");
    if (this.source) this.source.stop();
    if (this.ctx && this.ctx.state !== "closed") this.ctx.close();
    if (session === this) session = null;
    updateButton();
  }
}

// ---- page -------------------------------------------------------------------------------

function setState(state, text) {
  if (session) session.state = state;
  document.body.dataset.state = state;
  $("status").textContent = text;
  updateButton();
}

function setSpeech(state) {
  const box = $("speech");
  box.dataset.speech = state;
  box.textContent = { speech: "speech", silence: "silence", off: "no audio" }[state];
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function updateButton() {
  const button = $("start");
  const running = session !== null;
  button.textContent = running ? "Stop" : "Start";
  button.disabled = running && ["connecting", "stopping"].includes(session.state);
  // The choices apply to the next stream; they cannot change a running one.
  for (const fieldset of $("controls").querySelectorAll("fieldset")) fieldset.disabled = running;
}

async function onSubmit(event) {
  event.preventDefault();
  if (session) return session.stop();
  const useFile = $("source-file").checked;
  const file = useFile ? $("file").files[0] || null : null;
  $("error").hidden = true;
  if (useFile && !file) return showError("choose an audio file first");
  const secret = $("token").value.trim();
  if (auth.required && !secret) {
    return showError("this gateway needs an API key or token: enter it under Access");
  }
  session = new Session({ endpoint: $("endpoint").value, interim: $("interim").checked, file,
                          secret });
  updateButton();
  await session.start();
}

async function loadConfig() {
  try {
    const response = await fetch("/page-config.json", { cache: "no-store" });
    if (response.ok) pageConfig = await response.json();
  } catch (err) {
    // An older gateway without the endpoint still streams; only the trace link is missing.
  }
  $("model").textContent = pageConfig.model;
  $("version").textContent = pageConfig.version ? `(streamer ${pageConfig.version})` : "";
}

/** Ask for a key or token only when the gateway needs one. */
async function loadAuth() {
  auth = await authInfo();
  $("credentials").hidden = !auth.required;
}

function init() {
  $("controls").addEventListener("submit", onSubmit);
  for (const radio of document.querySelectorAll("input[name=source]")) {
    radio.addEventListener("change", () => { $("file").disabled = !$("source-file").checked; });
  }
  $("endpoint").addEventListener("change", () => {
    // /simple cuts fixed chunks and never sends interim results.
    $("interim").disabled = !$("endpoint").value.endsWith("/segmented");
  });
  loadConfig();
  loadAuth();
}

init();
