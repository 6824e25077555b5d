// W3C trace context made in the browser, so a stream's trace starts where the audio does.

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
export function newTraceparent() {
  const traceId = randomHex(16);
  return { traceId, traceparent: `00-${traceId}-${randomHex(8)}-01` };
}

/** The trace viewer's address for a trace: the template holds {trace_id}. */
export function traceUrl(template, traceId) {
  return template.split("{trace_id}").join(traceId);
}
