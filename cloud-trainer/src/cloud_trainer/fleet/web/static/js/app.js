// The page shell: hash routes, sign-in, the live event stream and the alert badge.
// Every read needs a token, so the page asks for one before showing anything; a viewer
// token shows everything with the action buttons disabled.
import { api, session } from "./api.js";
import { el, clear } from "./dom.js";
import { mountFleet } from "./views/fleet.js";
import { mountDevice } from "./views/device.js";
import { mountReleases } from "./views/releases.js";
import { mountAlerts } from "./views/alerts.js";
import { mountGovernance } from "./views/governance.js";
import { mountLabelling } from "./views/labelling.js";

const VIEWS = { fleet: mountFleet, device: mountDevice, releases: mountReleases, alerts: mountAlerts, governance: mountGovernance, labelling: mountLabelling };
const root = document.getElementById("view");
let current = null;
let caps = { release_actions: false, commands: false };
let live = null;
const READ_ONLY = "Signed in with a viewer token: it may read but not change the fleet.";

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const name = VIEWS[parts[0]] ? parts[0] : "fleet";
  return { name, arg: parts[1] ? decodeURIComponent(parts[1]) : null, params: new URLSearchParams(query || "") };
}

function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  const item = el("div", { class: `toast ${kind}`, text: message });
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

const login = document.getElementById("login");
let loginWaiters = [];

function showSession() {
  const name = session.name;
  const viewer = session.role === "viewer";
  document.getElementById("who").textContent =
    name ? `signed in as ${name}${viewer ? " (viewer)" : ""}` : "";
  document.getElementById("sign-in").hidden = Boolean(name);
  document.getElementById("sign-out").hidden = !name;
  document.body.classList.toggle("signed-in", Boolean(name));
  document.body.classList.toggle("viewer", viewer);
  markReadOnly();
}

// Action buttons (data-acts) are disabled, with the reason as their title, for a viewer.
function markReadOnly() {
  const viewer = session.role === "viewer";
  root.querySelectorAll("button[data-acts]").forEach((button) => {
    button.disabled = viewer;
    if (viewer) button.title = READ_ONLY;
    else if (button.title === READ_ONLY) button.removeAttribute("title");
  });
}
new MutationObserver(markReadOnly).observe(root, { childList: true, subtree: true });

// Resolves true once signed in (asking for a token if needed), false if the user cancels.
function requireLogin() {
  if (session.token) return Promise.resolve(true);
  document.getElementById("login-error").textContent = "";
  document.getElementById("token").value = "";
  if (!login.open) login.showModal();
  return new Promise((resolve) => loginWaiters.push(resolve));
}

function finishLogin(ok) {
  login.close();
  const waiters = loginWaiters;
  loginWaiters = [];
  waiters.forEach((resolve) => resolve(ok));
  showSession();
  if (ok) signedIn();
}

// After a sign-in: the view (until now a prompt) loads, and so do the badge and live stream.
async function signedIn() {
  await render();
  await refreshAlertBadge();
  connectLive();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  try {
    const who = await api("/api/session", { method: "POST", token });
    session.save(token, who.name, who.role);
    toast(`Signed in as ${who.name}`);
    finishLogin(true);
  } catch (err) {
    document.getElementById("login-error").textContent =
      err.status === 401 ? "That token is not valid for this fleet service." : err.message;
  }
});
document.getElementById("login-cancel").addEventListener("click", () => finishLogin(false));
login.addEventListener("cancel", () => finishLogin(false));
document.getElementById("sign-in").addEventListener("click", () => requireLogin());
document.getElementById("sign-out").addEventListener("click", async () => {
  session.clear();
  disconnectLive();
  showSession();
  await render();
  try {
    await api("/api/session", { method: "DELETE", token: "" });  // forgets the live cookie
  } catch (err) {
    console.warn("sign out", err);
  }
});
window.addEventListener("fleet:signed-out", () => {
  disconnectLive();
  showSession();
  toast("The token was refused; sign in again.", "error");
  render();
});

async function refreshAlertBadge() {
  if (!session.token) return;
  try {
    const data = await api("/api/alerts?unacknowledged=true&limit=1000");
    const badge = document.getElementById("alert-badge");
    badge.textContent = String(data.count);
    badge.hidden = data.count === 0;
  } catch (err) {
    console.warn("alert count", err);
  }
}

async function render() {
  const r = route();
  if (current) current.view.destroy?.();
  document.querySelectorAll("[data-nav]").forEach((a) => {
    a.classList.toggle("active", a.dataset.nav === (r.name === "device" ? "fleet" : r.name));
  });
  clear(root);
  current = null;
  if (!session.token) {
    root.append(el("div", { class: "signed-out-note" },
      el("p", { text: "The fleet's data needs a token: sign in with a viewer or operator token." }),
      el("button", { type: "button", class: "primary", onclick: () => requireLogin(), text: "Sign in" })));
    return;
  }
  const ctx = {
    caps, toast, requireLogin,
    signedIn: () => Boolean(session.token),
    canAct: () => session.role === "operator",
  };
  const view = await VIEWS[r.name](root, r, ctx);
  current = { route: r, view };
}

// EventSource cannot send a bearer header: the stream is authorised by the HttpOnly
// cookie that signing in sets (derived from the token, valid for the stream and images only).
function connectLive() {
  if (live || !session.token) return;
  const indicator = document.getElementById("live");
  const source = new EventSource("/api/events");
  live = source;
  source.addEventListener("open", () => {
    indicator.textContent = "live";
    indicator.className = "live on";
  });
  source.addEventListener("error", () => {
    indicator.textContent = "reconnecting…";
    indicator.className = "live off";
  });
  for (const kind of ["devices", "alerts", "releases", "commands"]) {
    source.addEventListener(kind, (event) => {
      const data = JSON.parse(event.data);
      document.body.dataset.lastLive = `${kind}:${Date.now()}`;
      if (kind === "alerts") refreshAlertBadge();
      if (current && current.view.onLive) current.view.onLive(kind, data);
    });
  }
}

function disconnectLive() {
  if (live) live.close();
  live = null;
  const indicator = document.getElementById("live");
  indicator.textContent = "not signed in";
  indicator.className = "live off";
}

async function start() {
  try {
    caps = await api("/api/session");
  } catch (err) {
    toast(err.message, "error");
  }
  if (session.token) {
    // A reload: check the token again, which also renews the cookie of the live stream.
    try {
      const who = await api("/api/session", { method: "POST", token: session.token });
      session.save(session.token, who.name, who.role);
    } catch (err) {
      if (err.status === 401) session.clear();
      else toast(err.message, "error");
    }
  }
  showSession();
  window.addEventListener("hashchange", render);
  await render();
  if (session.token) {
    await refreshAlertBadge();
    connectLive();
  } else {
    disconnectLive();
  }
  document.body.dataset.ready = "true";
  if (!session.token) requireLogin();
}

start();
