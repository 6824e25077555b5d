// The results table: one row per segment, interim results replaced by the final one.

// Event fields shown in their own columns; everything else a model returns is its output.
const ENVELOPE_FIELDS = new Set(["type", "channel", "start_time", "end_time", "is_final", "seq",
  "from_finalize"]);

function formatNumber(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return typeof value === "string" ? value : JSON.stringify(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(3);
}

// Below this a word is marked as unsure (dotted underline); its confidence is in its tooltip.
const UNSURE = 0.6;

function seconds(value) {
  return typeof value === "number" ? value.toFixed(2) : "?";
}

/** One recognised word as the transcribe model sends it: {word, start_time, end_time,
 *  confidence}, times in seconds on the stream's timeline, confidence from 0 to 1. */
function renderWord(w) {
  const word = document.createElement("span");
  word.className = "word";
  word.textContent = w.word;
  const at = document.createElement("span");
  at.className = "at";
  at.textContent = `${seconds(w.start_time)}–${seconds(w.end_time)} s`;
  word.append(at);
  if (typeof w.confidence === "number") {
    word.title = `confidence ${w.confidence.toFixed(2)}`;
    if (w.confidence < UNSURE) word.classList.add("unsure");
  }
  return word;
}

/** A model's output: its text if it has one (and under it the words with their times, which a
 *  final transcription carries), else its fields by name. */
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
      words.append(...event.words.map(renderWord));
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

export class Results {
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
