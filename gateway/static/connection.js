// Reaching the gateway with the credential it asks for, and saying in words why a connection
// failed or ended. A key is only ever sent in an Authorization header to /api/v1/token; the
// websocket carries a short-lived token as a subprotocol, never in its URL.

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

// What /api/v1/auth answers when it cannot be asked (an older gateway without keys).
const NO_AUTH = { required: false, token_path: "/api/v1/token", subprotocol: "streamer.v1",
                  token_subprotocol_prefix: "streamer.token.", token_ttl: 60 };
const TOKEN_PREFIX = "st1.";
// What a token and a key can be made of: a token is "st1." and two base64url parts; a key goes
// in an HTTP header, so printable ASCII without spaces.
const TOKEN_SHAPE = /^st1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const KEY_SHAPE = /^[\x21-\x7e]+$/;

/** Whether the gateway needs a key or token, and how to present one. */
export async function authInfo() {
  try {
    const response = await fetch("/api/v1/auth", { cache: "no-store" });
    if (response.ok) return { ...NO_AUTH, ...(await response.json()) };
  } catch (err) {
    // Unreachable now: the connection attempt says so in its own words.
  }
  return NO_AUTH;
}

/** What a person typed into the access field: a token (used as is) or an API key. */
export function credentialKind(secret) {
  return secret.startsWith(TOKEN_PREFIX) ? "token" : "key";
}

/** A refusal of a credential, explained: the page's own words, then the gateway's. */
export class Refusal extends Error {}

async function reasonOf(response) {
  try {
    const body = await response.json();
    return body.message || body.reason || "";
  } catch (err) {
    return "";
  }
}

/** A fresh token for one connection: the entered token itself, or one the key buys from the
 *  gateway. Throws a Refusal that says why the gateway would not issue it. */
export async function tokenFor(secret, auth) {
  // Checked here so that neither the browser's own error (which would quote it) nor a request
  // carries a mistyped secret.
  if (credentialKind(secret) === "token") {
    if (TOKEN_SHAPE.test(secret)) return secret;
    throw new Refusal("that is not a whole token (a token is st1. followed by two parts " +
      "joined by a dot, as /api/v1/token gives it); enter the API key or a fresh token");
  }
  if (!KEY_SHAPE.test(secret)) {
    throw new Refusal("an API key has no spaces and no characters beyond ASCII; check the key " +
      "and enter it again");
  }
  let response;
  try {
    response = await fetch(auth.token_path, {
      method: "POST", cache: "no-store", headers: { Authorization: `Bearer ${secret}` },
    });
  } catch (err) {
    throw new Refusal(`cannot reach the gateway at ${location.host} (${err.message})`);
  }
  if (response.ok) return (await response.json()).token;
  const reason = await reasonOf(response);
  if (response.status === 401) {
    throw new Refusal(`the gateway refused the API key (HTTP 401): ${reason || "not valid"}; ` +
      "check the key and enter it again");
  }
  throw new Refusal(`the gateway would not issue a token (HTTP ${response.status}): ` +
    (reason || "no reason given"));
}

/** The websocket address of an endpoint on this gateway (no credential in it). */
function connectUrl(endpoint) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${endpoint}`;
}

/** A websocket to an endpoint, offering the token as a subprotocol beside the protocol's own
 *  name (the gateway selects that one; a browser fails a handshake where none is selected). */
export function openSocket(endpoint, token, auth) {
  const url = connectUrl(endpoint);
  if (!token) return new WebSocket(url);
  return new WebSocket(url, [auth.subprotocol, auth.token_subprotocol_prefix + token]);
}

/** When an entered token expires (Unix seconds), read from its signed payload; null if the
 *  token cannot be read (the gateway is the judge of its signature either way). */
function tokenExpiry(token) {
  try {
    const payload = token.slice(TOKEN_PREFIX.length).split(".")[0];
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : null;
  } catch (err) {
    return null;
  }
}

/** Why a credential that went out with the upgrade was refused (401, 403 or 429: the browser
 *  hides which). A key is asked about again at /api/v1/token; a token's expiry is in it. */
async function explainRefusedCredential(secret, auth) {
  if (credentialKind(secret) === "key") {
    try {
      await tokenFor(secret, auth);
    } catch (err) {
      return err.message; // the key itself is refused now
    }
    return "the gateway accepted the API key but refused the connection: the key may be at " +
      "its limit of concurrent sessions or of audio per minute (HTTP 429; wait and try again), " +
      "or this page's origin may not connect (HTTP 403); the gateway's log says which";
  }
  const expires = tokenExpiry(secret);
  if (expires !== null && expires * 1000 <= Date.now()) {
    return `the gateway refused the token: it expired at ` +
      `${new Date(expires * 1000).toLocaleTimeString()} (tokens last at most ` +
      `${auth.token_ttl} s); enter the API key, or a fresh token`;
  }
  return "the gateway refused the token: it is not valid here (forged, for another gateway, " +
    "or its key was removed), or its key is at its limit of concurrent sessions or of audio " +
    "per minute; enter the API key, or a fresh token";
}

/** Why a websocket never opened. Browsers hide the HTTP answer to a failed upgrade, so ask the
 *  same route again over plain HTTP: a refusal (503) carries the gateway's reason as JSON.
 *  `secret` is the key or token that went with the upgrade (empty if none). */
export async function explainFailedConnect(endpoint, secret = "") {
  let response;
  try {
    response = await fetch(endpoint, { cache: "no-store" });
  } catch (err) {
    return `cannot reach the gateway at ${location.host} (${err.message})`;
  }
  if (response.status === 503) {
    const reason = await reasonOf(response);
    const retry = response.headers.get("Retry-After");
    return `the gateway refused the session (HTTP 503): ${reason || "no reason given"}` +
      (retry ? `; try again in ${retry} s` : "");
  }
  // Refusals before admission (origin, key, a key's limits) answer only a real upgrade.
  const auth = await authInfo();
  if (auth.required && !secret) {
    return "this gateway needs an API key or token: enter it under Access and press Start";
  }
  if (auth.required) return explainRefusedCredential(secret, auth);
  return `the gateway refused the websocket upgrade to ${endpoint} (the browser does not ` +
    "say why; the gateway's log does: for example this page's origin is not in " +
    "auth.allowed_origins)";
}

export function describeClose(event) {
  const name = CLOSE_CODES[event.code] || "unknown code";
  return `connection closed with code ${event.code} (${name})` +
    (event.reason ? `: ${event.reason}` : "");
}
