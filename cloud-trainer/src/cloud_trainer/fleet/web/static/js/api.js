// Fetches the fleet API; the sign-in token lives in sessionStorage and goes out as a bearer
// on every request (reads need a viewer or operator token, changes an operator's).
const TOKEN = "fleet.token";
const NAME = "fleet.name";
const ROLE = "fleet.role";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  get name() { return sessionStorage.getItem(NAME); },
  get role() { return sessionStorage.getItem(ROLE); },
  save(token, name, role) {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(NAME, name);
    sessionStorage.setItem(ROLE, role);
  },
  clear() { [TOKEN, NAME, ROLE].forEach((key) => sessionStorage.removeItem(key)); },
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function describe(detail) {
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return detail ? String(detail) : "";
}

export async function api(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const bearer = token ?? session.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `the fleet service cannot be reached (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) {
    if (response.status === 401 && token === undefined) {
      session.clear();
      window.dispatchEvent(new CustomEvent("fleet:signed-out"));
    }
    throw new ApiError(response.status, describe(data && data.detail) || response.statusText);
  }
  return data;
}

export function sendCommand(deviceId, action, args = {}) {
  return api(`/api/devices/${encodeURIComponent(deviceId)}/commands`, {
    method: "POST", body: { action, args },
  });
}
