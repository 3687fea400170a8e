// The duty room's wall display (值班室大屏), opened as /#wall: read-only, for a 1920x1080 screen.
// Uses app.js's helpers (el, t, api, fmtTime, the alarm model). Every text from devices or the
// site file reaches the page as text nodes, never as HTML.
//
// A kiosk opens it with a viewer token in the address's fragment, /#wall?token=TOKEN: the part
// after # is never sent to the server (so it is in no access log or Referer); the page sends the
// token in a POST body to /api/login/token, which sets the session cookie, and takes it out of
// the address bar at once. The token is kept in this tab's sessionStorage, to log in again after
// the gateway restarts (a restart ends every session).
"use strict";

Object.assign(I18N.zh, {
  wall_open: "大屏", wall_title: "parkguard 值班室", wall_criticals: "未确认紧急报警",
  wall_enterprises: "园区企业", wall_chart: "近 24 小时报警数（每小时）",
  wall_connected: "实时连接正常", wall_disconnected: "与网关的连接已中断，正在重连…", wall_since: "自",
  wall_unack: "未确认", wall_none_critical: "没有未确认的紧急报警", wall_more: "另有 {n} 条",
  wall_devices: "设备", wall_sound_on: "声音：开", wall_sound_off: "声音：关",
  wall_token_refused: "大屏令牌无效或不是只读(viewer)令牌：", wall_no_devices: "没有设备",
  wall_hour: "时", wall_total: "合计",
});
Object.assign(I18N.en, {
  wall_open: "Wall", wall_title: "parkguard duty room", wall_criticals: "Unacknowledged critical alarms",
  wall_enterprises: "Enterprises", wall_chart: "Alarms raised per hour, last 24 h",
  wall_connected: "Live", wall_disconnected: "Connection to the gateway lost, reconnecting…", wall_since: "since",
  wall_unack: "Unacknowledged", wall_none_critical: "No unacknowledged critical alarm", wall_more: "{n} more",
  wall_devices: "Devices", wall_sound_on: "Sound: on", wall_sound_off: "Sound: off",
  wall_token_refused: "The wall's token is unknown or not a viewer's:", wall_no_devices: "No devices",
  wall_hour: ":00", wall_total: "total",
});

const WALL_TOKEN = "parkguard.wall.token";
// Unacknowledged criticals shown at most; the rest are counted.
const WALL_CRITICALS_SHOWN = 6;

Object.assign(app.wall, {
  token: null,
  connected: false,
  // When the connection was lost (ms), and how often it was (for tests).
  downSince: null,
  disconnects: 0,
  reconnects: 0,
  retry: null,
  hourly: null,
});

function isWallHash() {
  return /^#wall([?&]|$)/.test(location.hash);
}

// The token in the address (/#wall?token=...), taken out of the address bar at once.
function wallTokenFromHash() {
  const match = /^#wall[?&]token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", `${location.pathname}${location.search}#wall`);
  return decodeURIComponent(match[1]);
}

function startWall() {
  app.wall.on = true;
  document.body.classList.add("wall-mode");
  const token = wallTokenFromHash();
  if (token) sessionStorage.setItem(WALL_TOKEN, token);
  app.wall.token = sessionStorage.getItem(WALL_TOKEN);
  $("wall-lang").addEventListener("click", () => $("lang").click());
  $("wall-sound").addEventListener("click", () => {
    // The click is also the gesture a browser wants before it plays sound.
    $("sound").checked = !$("sound").checked;
    localStorage.setItem("parkguard.sound", $("sound").checked ? "1" : "0");
    if ($("sound").checked) beep();
    renderWallTop();
  });
  applyLanguage();
  wallClock();
  setInterval(wallClock, 1000);
  // A stream can die without a word (a cable pulled): the list is re-read every 10 s, which
  // also notices that the gateway is gone, and back.
  setInterval(wallPoll, 10000);
  // The chart's hours move on; fetched again every 5 minutes and at each new hour.
  setInterval(() => { if (app.me && wallHourOver()) loadHourly(); }, 5000);
  setInterval(() => { if (app.me) loadHourly(); }, 300000);
  wallConnect();
}

// A request that gives up after `ms`: on a dropped network an answer may never come.
async function fetchWithin(path, options, ms) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    return await fetch(path, { credentials: "same-origin", ...options, signal: abort.signal });
  } finally {
    clearTimeout(timer);
  }
}

// Logged in (a session, or the token's), or null when the login form or an error is shown.
// Throws when the gateway cannot be reached.
async function wallSession() {
  let response = await fetchWithin("/api/session", {}, 5000);
  if (response.ok) return response.json();
  if (response.status !== 401) throw new Error(response.statusText);
  if (!app.wall.token) { showLogin(); return null; }
  response = await fetchWithin("/api/login/token", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ token: app.wall.token }),
  }, 5000);
  if (response.ok) return response.json();
  if (response.status === 401 || response.status === 403) {
    const answer = await response.json().catch(() => ({}));
    $("wall-error").hidden = false;
    $("wall-error").textContent = `${t("wall_token_refused")} ${answer.error || response.status}`;
    $("wall").hidden = false;
    document.querySelector("main").hidden = true;
    return null;
  }
  throw new Error(response.statusText);
}

async function wallConnect() {
  clearTimeout(app.wall.retry);
  app.wall.retry = null;
  let me;
  try {
    me = await wallSession();
  } catch (_) {
    wallDisconnected();
    wallRetry(3000);
    return;
  }
  if (me) wallLoggedIn(me);
}

function wallRetry(ms) {
  clearTimeout(app.wall.retry);
  app.wall.retry = setTimeout(wallConnect, ms);
}

// A request was answered 401: the session ended (the gateway restarted, or it expired).
function wallUnauthorized() {
  if (app.events) { app.events.close(); app.events = null; }
  wallDisconnected();
  if (app.wall.token) wallRetry(1000);
  else showLogin();
}

function wallLoggedIn(me) {
  app.me = me;
  $("login-view").hidden = true;
  document.querySelector("main").hidden = true;
  $("wall").hidden = false;
  $("wall-error").hidden = true;
  document.body.dataset.role = me.role;
  openWallEvents();
}

function openWallEvents() {
  if (app.events) app.events.close();
  const source = new EventSource("/api/events");
  app.events = source;
  source.addEventListener("open", () => {
    if (app.events !== source) return;
    if (app.wall.downSince) app.wall.reconnects += 1;
    wallConnected();
    wallReload();
  });
  source.addEventListener("error", () => {
    if (app.events !== source) return;
    wallDisconnected();
    // The browser retries a dropped stream by itself; a refused one (the session is gone after
    // a restart, or too many streams) it does not: log in again and open a new one.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      app.events = null;
      wallRetry(2000);
    }
  });
  source.addEventListener("alarm", (e) => {
    const transition = JSON.parse(e.data);
    const alarm = transition.alarm;
    const before = app.alarms.get(alarm.key);
    applyAlarm(alarm);
    const anew = (transition.action === "raised" && !before) || transition.action === "escalated" || transition.action === "reannunciated";
    if (anew && alarm.severity === "critical" && transition.annunciated) beep();
    if (transition.action === "raised") countRaised(alarm);
    renderWall();
    // The device's latest values (the alarm's unit) and status, shortly after.
    clearTimeout(app.wall.devicesSoon);
    app.wall.devicesSoon = setTimeout(reloadWallDevices, 1000);
  });
  source.addEventListener("device", (e) => {
    const change = JSON.parse(e.data);
    const device = deviceById(change.device);
    if (device) { device.status = change.status; renderWall(); }
  });
  source.addEventListener("resync", () => wallReload());
}

function wallConnected() {
  app.wall.connected = true;
  app.wall.downSince = null;
  document.body.classList.remove("wall-offline");
  renderWallTop();
}

function wallDisconnected() {
  if (app.wall.connected || app.wall.downSince === null) {
    app.wall.disconnects += 1;
    app.wall.downSince = Date.now();
  }
  app.wall.connected = false;
  document.body.classList.add("wall-offline");
  renderWallTop();
}

// Everything again: after (re)connecting, nothing that happened meanwhile is missed.
async function wallReload() {
  try {
    const [alarms, devices] = await Promise.all([api("GET", "/api/alarms"), api("GET", "/api/devices")]);
    if (!Object.keys(app.profiles).length) app.profiles = await api("GET", "/api/profiles");
    app.alarms = new Map(alarms.map((a) => [a.key, a]));
    app.devices = devices;
    app.deviceIndex = new Map(devices.map((d) => [d.id, d]));
  } catch (_) { return; }
  renderWall();
  loadHourly();
}

async function reloadWallDevices() {
  try { app.devices = await api("GET", "/api/devices"); } catch (_) { return; }
  app.deviceIndex = new Map(app.devices.map((d) => [d.id, d]));
  renderWall();
}

async function wallPoll() {
  if (!app.wall.on || !app.me || app.wall.retry) return;
  try {
    const response = await fetchWithin("/api/alarms", {}, 5000);
    if (response.status === 401) { wallUnauthorized(); return; }
    if (!response.ok) throw new Error(response.statusText);
    const list = await response.json();
    if (!app.wall.connected) {
      // Back after a silent drop: a fresh stream (its opening reloads everything).
      openWallEvents();
      return;
    }
    app.alarms = new Map(list.map((a) => [a.key, a]));
    // Devices heard from again (or for the first time) change no alarm: re-read every 30 s.
    app.wall.polls = (app.wall.polls || 0) + 1;
    if (app.wall.polls % 3 === 0) await reloadWallDevices();
    else renderWall();
  } catch (_) {
    if (app.events) { app.events.close(); app.events = null; }
    wallDisconnected();
    wallRetry(3000);
  }
}

// ---- the hourly chart -----------------------------------------------------------------------

async function loadHourly() {
  try { app.wall.hourly = await api("GET", "/api/alarms/hourly?hours=24"); } catch (_) { return; }
  renderWallChart();
}

function wallHourOver() {
  const h = app.wall.hourly;
  if (!h || !h.hours.length) return false;
  const last = h.hours[h.hours.length - 1];
  return Date.now() >= last.at_ms + h.hour_ms;
}

// A raise seen live counts in the current hour at once (as the server counts: no events, tests).
function countRaised(alarm) {
  const h = app.wall.hourly;
  if (!h || !h.hours.length || wallHourOver() || alarm.kind === "event" || alarm.kind === "test") return;
  const last = h.hours[h.hours.length - 1];
  last.raised += 1;
  if (alarm.severity === "critical") last.critical += 1;
  renderWallChart();
}

function renderWallChart() {
  const h = app.wall.hourly;
  const chart = $("wall-chart");
  if (!h) { chart.replaceChildren(); return; }
  const most = Math.max(1, ...h.hours.map((x) => x.raised));
  const total = h.hours.reduce((n, x) => n + x.raised, 0);
  const bars = h.hours.map((x, i) => {
    const hour = new Date(x.at_ms).getHours();
    const column = el("div", { class: "bar", dataset: { at: x.at_ms, raised: x.raised, critical: x.critical } },
      el("span", { class: "bar-n" }, x.raised ? x.raised : ""));
    const stack = el("div", { class: "bar-stack" });
    const other = el("div", { class: "bar-other" });
    const critical = el("div", { class: "bar-critical" });
    // Heights through the CSS object model (the CSP allows no style attributes).
    other.style.height = `${(100 * (x.raised - x.critical)) / most}%`;
    critical.style.height = `${(100 * x.critical) / most}%`;
    stack.append(other, critical);
    column.append(stack, el("span", { class: "bar-hour" }, i % 3 === 0 || i === h.hours.length - 1 ? `${hour}${t("wall_hour")}` : ""));
    return column;
  });
  chart.replaceChildren(el("div", { class: "bars" }, bars), el("div", { class: "chart-total" }, `${t("wall_total")} ${total}`));
}

// ---- rendering ------------------------------------------------------------------------------

function wallClock() {
  const now = new Date();
  const locale = app.lang === "zh" ? "zh-CN" : "en-GB";
  $("wall-clock").textContent = now.toLocaleTimeString(locale, { hour12: false });
  $("wall-date").textContent = now.toLocaleDateString(locale, { year: "numeric", month: "long", day: "numeric", weekday: "long" });
}

function renderWallTop() {
  const conn = $("wall-conn");
  conn.classList.toggle("down", !app.wall.connected);
  conn.textContent = app.wall.connected
    ? `● ${t("wall_connected")}`
    : `● ${t("wall_disconnected")}${app.wall.downSince ? ` (${t("wall_since")} ${fmtTime(app.wall.downSince)})` : ""}`;
  $("wall-sound").textContent = $("sound").checked ? t("wall_sound_on") : t("wall_sound_off");
  $("wall-lang").textContent = app.lang === "zh" ? "English" : "中文";
}

function isActive(a) {
  return !isHidden(a) && (a.state === "unacknowledged" || a.state === "acknowledged");
}

function renderWallCounts() {
  const active = [...app.alarms.values()].filter(isActive);
  const unack = [...app.alarms.values()].filter((a) => !isHidden(a) && (a.state === "unacknowledged" || a.state === "returned_unacknowledged")).length;
  const counts = ["critical", "high", "medium", "low"].map((severity) => {
    const n = active.filter((a) => a.severity === severity).length;
    return el("div", { class: `wall-count sev-${severity}${n ? " some" : ""}`, dataset: { severity, count: n } },
      el("span", { class: "n" }, n), el("span", { class: "label" }, t(`sev_${severity}`)));
  });
  counts.push(el("div", { class: `wall-count unack${unack ? " some" : ""}`, dataset: { severity: "unack", count: unack } },
    el("span", { class: "n" }, unack), el("span", { class: "label" }, t("wall_unack"))));
  $("wall-counts").replaceChildren(...counts);
}

function alarmTime(a) {
  return a.raised_at_ms || a.changed_at_ms;
}

function renderWallCriticals() {
  const list = [...app.alarms.values()]
    .filter((a) => a.severity === "critical" && !isHidden(a) && (a.state === "unacknowledged" || a.state === "returned_unacknowledged"))
    .sort((a, b) => alarmTime(b) - alarmTime(a));
  const rows = list.slice(0, WALL_CRITICALS_SHOWN).map((a) => {
    const d = deviceById(a.device);
    const enterprise = (d && d.enterprise_name) || a.enterprise;
    const location = (d && d.location_name) || a.location;
    const value = a.value === null || a.value === undefined ? "" : ` ${fmtValue(a.value)}${unitOf(a)}`;
    const fire = a.fire && a.fire.verdict === "pending" ? fireText(a.fire) : null;
    return el("div", { class: `wall-alarm ${a.state}${fire ? " fire-pending" : ""}`, dataset: { key: a.key } },
      el("div", { class: "wall-alarm-time" }, fmtTime(alarmTime(a))),
      el("div", { class: "wall-alarm-body" },
        el("div", { class: "wall-alarm-place" }, [enterprise, location].filter(Boolean).join(" / ")),
        el("div", { class: "wall-alarm-what" }, deviceLabel(a.device), " · ", ruleName(a), value,
          a.state === "returned_unacknowledged" ? el("span", { class: "wall-returned" }, ` (${t("st_returned_unacknowledged")})`) : null),
        fire));
  });
  if (list.length > WALL_CRITICALS_SHOWN) {
    rows.push(el("div", { class: "wall-more" }, t("wall_more").replace("{n}", list.length - WALL_CRITICALS_SHOWN)));
  }
  if (!rows.length) rows.push(el("div", { class: "wall-none" }, `✔ ${t("wall_none_critical")}`));
  $("wall-criticals").replaceChildren(...rows);
}

const TILE_ORDER = ["alarm", "fault", "offline"];

function renderWallTiles() {
  const enterprises = new Map();
  for (const d of app.devices) {
    const id = d.enterprise || "-";
    if (!enterprises.has(id)) enterprises.set(id, { name: d.enterprise_name || id, counts: {}, total: 0 });
    const e = enterprises.get(id);
    e.total += 1;
    e.counts[d.status] = (e.counts[d.status] || 0) + 1;
  }
  const tiles = [...enterprises].map(([id, e]) => {
    const worst = TILE_ORDER.find((s) => e.counts[s]) || (e.counts.ok ? "ok" : e.counts.suppressed ? "suppressed" : "unknown");
    const counts = [el("span", {}, `${t("wall_devices")} ${e.total}`)];
    for (const s of TILE_ORDER) {
      if (e.counts[s]) counts.push(el("span", { class: `tile-count ${s}` }, `${t(`status_${s}`)} ${e.counts[s]}`));
    }
    return el("div", { class: `wall-tile status-${worst}`, dataset: { enterprise: id, status: worst } },
      el("div", { class: "tile-name" }, e.name),
      el("div", { class: "tile-status" }, t(`status_${worst}`)),
      el("div", { class: "tile-counts" }, counts));
  });
  if (!tiles.length) tiles.push(el("div", { class: "wall-none" }, t("wall_no_devices")));
  $("wall-tiles").replaceChildren(...tiles);
}

function renderWall() {
  if (!app.wall.on) return;
  renderWallTop();
  renderWallCounts();
  renderWallCriticals();
  renderWallTiles();
  renderWallChart();
  wallClock();
}
