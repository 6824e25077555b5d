// Reaching the gateway, and saying in words why a connection failed or ended.

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

/** The websocket address of an endpoint on this gateway. Authentication hook: when the gateway
 *  asks for a key or token, this is the one place that attaches it (the hidden #credentials
 *  field in index.html is where a person would enter it). */
export function connectUrl(endpoint) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${endpoint}`;
}

/** Why a websocket never opened. Browsers hide the HTTP answer to a failed upgrade, so ask the
 *  same route again over plain HTTP: a refusal (503) carries the gateway's reason as JSON. */
export async function explainFailedConnect(endpoint) {
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
  // Refusals before admission (origin, key, a key's limits) answer only a real upgrade.
  let auth = null;
  try {
    const info = await fetch("/api/v1/auth", { cache: "no-store" });
    if (info.ok) auth = await info.json();
  } catch (err) {
    auth = null;
  }
  if (auth && auth.required) {
    return "the gateway refused the connection: it needs an API key or token, which this " +
      "page does not send";
  }
  return `the gateway refused the websocket upgrade to ${endpoint} (the browser does not ` +
    "say why; the gateway's log does: for example this page's origin is not in " +
    "auth.allowed_origins)";
}

export function describeClose(event) {
  const name = CLOSE_CODES[event.code] || "unknown code";
  return `connection closed with code ${event.code} (${name})` +
    (event.reason ? `: ${event.reason}` : "");
}
