// The streamer browser page: capture audio (microphone through an AudioWorklet, or a file
// paced at real time), stream it to the gateway over a websocket as float32 frames at the
// AudioContext's own rate (the gateway resamples), and show the events as they come back.
// Plain JavaScript, no build step. The page's state is on <body data-state>, for people and
// for the browser test: idle, connecting, streaming, stopping, stopped, failed.
"use strict";

const FRAME_MS = 40; // audio per binary frame
const CLOSE_CODES = {
  1000: "normal closure",
  1001: "going away",
  1003: "unsupported data",
  1006: "connection lost",
  1007: "invalid payload",
  1008: "policy violation",
  1009: "message too big",
  1011: "server error",
  1013: "try again later",
};
// Event fields shown in their own columns; everything else a model returns is its output.
const ENVELOPE_FIELDS = new Set(["type", "channel", "start_time", "end_time", "is_final"]);

const $ = (id) => document.getElementById(id);
let pageConfig = { model: "?", version: "", trace_ui_url: null };
let session = null;

// ---- trace context ----------------------------------------------------------------------

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomHex(nbytes) {
  // W3C trace context forbids an all-zero trace or span id.
  for (;;) {
    const bytes = crypto.getRandomValues(new Uint8Array(nbytes));
    if (bytes.some((b) => b !== 0)) return hex(bytes);
  }
}

/** A new W3C traceparent (version 00, sampled): the stream's trace starts in the browser. */
function newTraceparent() {
  const traceId = randomHex(16);
  return { traceId, traceparent: `00-${traceId}-${randomHex(8)}-01` };
}

function showTrace(traceId) {
  const box = $("trace");
  box.textContent = "";
  const template = pageConfig.trace_ui_url;
  if (template) {
    const link = document.createElement("a");
    link.href = template.split("{trace_id}").join(traceId);
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = traceId;
    box.append(link);
  } else {
    box.textContent = traceId;
  }
}

// ---- connection -------------------------------------------------------------------------

/** The websocket address of an endpoint on this gateway. Authentication hook: when the gateway
 *  asks for a key or token, this is the one place that attaches it (the hidden #credentials
 *  field in index.html is where a person would enter it). */
function connectUrl(endpoint) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${endpoint}`;
}

/** Why a websocket never opened. Browsers hide the HTTP answer to a failed upgrade, so ask the
 *  same route again over plain HTTP: a refusal (503) carries the gateway's reason as JSON. */
async function explainFailedConnect(endpoint) {
  let response;
  try {
    response = await fetch(endpoint, { cache: "no-store" });
  } catch (err) {
    return `cannot reach the gateway at ${location.host} (${err.message})`;
  }
  if (response.status === 503) {
    let reason = "";
    try {
      const body = await response.json();
      reason = body.message || body.reason || "";
    } catch (err) {
      reason = "";
    }
    const retry = response.headers.get("Retry-After");
    return `the gateway refused the session (HTTP 503): ${reason || "no reason given"}` +
      (retry ? `; try again in ${retry} s` : "");
  }
  return `the websocket connection to ${endpoint} failed; a plain request to it now gets ` +
    `HTTP ${response.status} ${response.statusText}`.trimEnd();
}

function describeClose(event) {
  const name = CLOSE_CODES[event.code] || "unknown code";
  return `connection closed with code ${event.code} (${name})` +
    (event.reason ? `: ${event.reason}` : "");
}

// ---- audio sources ----------------------------------------------------------------------

// Browsers give the microphone (and AudioWorklet) only to secure contexts: https:// pages and
// pages on localhost. A file still streams from a plain http:// page.
const NO_MICROPHONE = `the microphone is only available to pages served over https:// or from ` +
  `localhost, and this page is ${location.origin}; stream a file instead, or open the page ` +
  `through https`;

function microphoneAllowed() {
  return window.isSecureContext && !!(navigator.mediaDevices &&
    navigator.mediaDevices.getUserMedia);
}

/** The microphone, through an AudioWorklet that hands over ~40 ms float32 frames (mono). */
async function startMicrophone(ctx, onFrame) {
  if (!microphoneAllowed()) throw new Error(NO_MICROPHONE);
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
             autoGainControl: false },
  });
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  const input = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "capture-processor", {
    numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: "explicit",
    processorOptions: { frameMs: FRAME_MS },
  });
  // A silent path to the destination keeps the node rendering without playing the voice back.
  const mute = new GainNode(ctx, { gain: 0 });
  let flushed = null;
  let stopped = false;
  node.port.onmessage = (event) => {
    if (event.data.samples) onFrame(event.data.samples);
    if (event.data.flushed && flushed) flushed();
  };
  input.connect(node).connect(mute).connect(ctx.destination);
  return {
    channels: 1,
    label: stream.getAudioTracks()[0].label || "microphone",
    async stop() {
      if (stopped) return;
      stopped = true;
      // Take the samples still in the worklet before letting go of the microphone.
      await new Promise((resolve) => {
        flushed = resolve;
        node.port.postMessage("flush");
        setTimeout(resolve, 500);
      });
      node.port.postMessage("stop");
      stream.getTracks().forEach((track) => track.stop());
      input.disconnect();
      node.disconnect();
    },
  };
}

/** A file, decoded at the context's rate and sent at real time, interleaved float32. */
async function startFile(ctx, file, onFrame, onEnd) {
  const audio = await ctx.decodeAudioData(await file.arrayBuffer());
  const channels = Math.min(audio.numberOfChannels, 8);
  const data = Array.from({ length: channels }, (_, c) => audio.getChannelData(c));
  const frame = Math.round((audio.sampleRate * FRAME_MS) / 1000);
  const t0 = performance.now();
  let sent = 0;
  let timer = null;
  let done = false;
  const tick = () => {
    // Send what real time has reached, one frame ahead; timers drift, the clock does not.
    const due = Math.min(audio.length,
      Math.ceil(((performance.now() - t0) / 1000) * audio.sampleRate) + frame);
    while (sent < due) {
      const n = Math.min(frame, due - sent);
      const out = new Float32Array(n * channels);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < channels; c++) out[i * channels + c] = data[c][sent + i];
      }
      sent += n;
      onFrame(out);
    }
    if (sent >= audio.length) {
      done = true;
      onEnd();
    } else {
      timer = setTimeout(tick, FRAME_MS / 2);
    }
  };
  // The first frames go out once the caller has sent 'start'.
  timer = setTimeout(tick, 0);
  return {
    channels,
    label: `${file.name} (${audio.duration.toFixed(1)} s, ${channels} ch)`,
    async stop() {
      if (!done) clearTimeout(timer);
      done = true;
    },
  };
}

// ---- results ----------------------------------------------------------------------------

function formatNumber(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return typeof value === "string" ? value : JSON.stringify(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(3);
}

/** A word's times, whatever the model calls them: start/end or start_time/end_time. */
function wordTimes(w) {
  const start = w.start ?? w.start_time;
  const end = w.end ?? w.end_time;
  return typeof start === "number" && typeof end === "number"
    ? `${start.toFixed(2)}–${end.toFixed(2)} s` : "";
}

/** A model's output: its text if it has one (and its words with their times, if given), else
 *  its fields by name. */
function renderOutput(cell, event) {
  cell.textContent = "";
  if (typeof event.text === "string") {
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = event.text || "…";
    cell.append(text);
    if (Array.isArray(event.words) && event.words.length) {
      const words = document.createElement("div");
      words.className = "words";
      for (const w of event.words) {
        const word = document.createElement("span");
        word.className = "word";
        const spelled = typeof w === "string" ? w : w.word ?? w.text ?? JSON.stringify(w);
        const times = typeof w === "object" && w !== null ? wordTimes(w) : "";
        word.textContent = spelled;
        if (times) {
          const at = document.createElement("span");
          at.className = "at";
          at.textContent = times;
          word.append(at);
        }
        words.append(word);
      }
      cell.append(words);
    }
    return;
  }
  for (const [name, value] of Object.entries(event)) {
    if (ENVELOPE_FIELDS.has(name) || name === "message") continue;
    const field = document.createElement("span");
    field.className = "field";
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const shown = document.createElement("span");
    shown.className = "value";
    shown.textContent = formatNumber(value);
    field.append(label, shown);
    field.dataset.field = name;
    cell.append(field);
  }
}

class Results {
  constructor(tbody) {
    this.tbody = tbody;
    this.rows = new Map();
    this.counts = { interim: 0, final: 0, failed: 0 };
  }

  clear() {
    this.tbody.textContent = "";
    this.rows.clear();
    this.counts = { interim: 0, final: 0, failed: 0 };
    this.publishCounts();
  }

  /** How many results of each kind arrived, on the table (people see rows; tests read this). */
  publishCounts() {
    Object.assign(this.tbody.parentElement.dataset, this.counts);
  }

  /** One row per segment: interims of a stretch of speech share its start, so each replaces
   *  the one before, and the final result replaces the last interim. */
  show(event, latencyMs) {
    const key = `${event.channel}:${event.start_time}`;
    let row = this.rows.get(key);
    if (!row) {
      row = document.createElement("tr");
      for (const name of ["channel", "time", "result", "latency"]) {
        const cell = document.createElement("td");
        cell.className = name;
        row.append(cell);
      }
      this.rows.set(key, row);
      this.tbody.append(row);
    }
    const [channel, time, result, latency] = row.cells;
    const interim = event.is_final === false;
    row.className = event.type === "error" ? "failed" : interim ? "interim" : "final";
    this.counts[row.className] += 1;
    this.publishCounts();
    row.dataset.final = String(!interim);
    channel.textContent = String(event.channel);
    time.textContent = `${event.start_time.toFixed(2)}–${event.end_time.toFixed(2)} s`;
    if (event.type === "error") {
      result.textContent = `error: ${event.message}`;
    } else {
      renderOutput(result, event);
    }
    latency.textContent = latencyMs === null ? "" : `${Math.round(latencyMs)} ms`;
    row.scrollIntoView({ block: "nearest" });
  }
}

// ---- one streaming session --------------------------------------------------------------

class Session {
  constructor(options) {
    this.endpoint = options.endpoint;
    this.interim = options.interim;
    this.useFile = options.file !== null;
    this.file = options.file;
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

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(connectUrl(this.endpoint));
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        this.opened = true;
        this.ws = ws;
        resolve();
      };
      ws.onmessage = (event) => this.onMessage(event);
      ws.onclose = (event) => {
        if (!this.opened) {
          explainFailedConnect(this.endpoint).then((why) => reject(new Error(why)));
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
  session = new Session({ endpoint: $("endpoint").value, interim: $("interim").checked, file });
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
}

init();
