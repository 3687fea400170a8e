// parkguard operator UI. Plain script, no build step. Every text that comes from devices or
// configuration reaches the page through text nodes (el/textContent), never as HTML.
"use strict";

const I18N = {
  zh: {
    tab_board: "报警", tab_devices: "设备", tab_journal: "日志", tab_commissioning: "调试",
    device: "设备", address: "地址", count: "数量", base: "起始编号", read: "读取", profile_test: "按型号测试",
    signoff_title: "调试签字", firmware: "固件版本", notes: "备注", signoff: "签字确认",
    signed_off: "已调试签字", flags_set: "已置位状态", failures: "读取失败", all_plausible: "全部读数合理", sound: "声音", logout: "退出",
    login_title: "登录 parkguard", user: "用户名", password: "密码", login: "登录",
    login_failed: "用户名或密码错误", live_title: "实时连接",
    col_severity: "级别", col_state: "状态", col_time: "时间", col_place: "位置", col_device: "设备",
    col_rule: "规则", col_value: "数值", col_actions: "操作", col_action: "动作", col_operator: "操作员",
    col_comment: "备注", col_message: "信息",
    no_alarms: "当前没有报警", quantity: "测量量", range: "时间范围", search: "搜索",
    search_placeholder: "报警、设备、规则或信息", duration: "时长", reason: "原因", comment: "备注",
    cancel: "取消", confirm: "确定",
    ack: "确认", shelve: "搁置", unshelve: "取消搁置", reset: "复位",
    ack_title: "确认报警", shelve_title: "搁置报警", reset_title: "复位报警", unshelve_title: "取消搁置",
    sev_critical: "紧急", sev_high: "高", sev_medium: "中", sev_low: "低",
    st_unacknowledged: "未确认", st_acknowledged: "已确认", st_returned_unacknowledged: "已恢复未确认", st_normal: "正常",
    shelved: "已搁置", suppressed: "已屏蔽", out_of_service: "停用", latched: "锁存", silenced: "现场已消音", maintenance: "设备维护中",
    status_ok: "正常", status_alarm: "报警", status_fault: "故障", status_offline: "离线",
    status_suppressed: "屏蔽", status_unknown: "无数据",
    summary_unack: "未确认", summary_active: "活动", summary_total: "全部",
    filter_all_enterprises: "全部企业", filter_all_status: "全部状态", filter_all_kinds: "全部类型",
    device_search: "搜索设备", role_measurement: "测量值", role_status: "状态", role_setting: "设定值",
    role_counter: "计数", role_other: "其他", no_devices: "没有符合条件的设备",
    detail_alarms: "当前报警", detail_journal: "最近日志", detail_link: "连接", detail_signoff: "调试签字",
    last_seen: "最后上报", not_signed: "尚未调试签字", none: "无",
    never: "从未", threshold: "阈值", show_hidden: "显示搁置/屏蔽", return_to_service: "恢复使用",
    until: "至",
    act_raised: "报警", act_escalated: "升级", act_de_escalated: "降级", act_condition_cleared: "条件消失",
    act_cleared: "恢复", act_acknowledged: "确认", act_shelved: "搁置", act_unshelved: "取消搁置",
    act_suppressed: "屏蔽", act_unsuppressed: "取消屏蔽", act_removed_from_service: "停用",
    act_returned_to_service: "恢复使用", act_reset: "复位", act_chatter_flagged: "频繁报警", act_chatter_cleared: "不再频繁", act_retired: "规则移除",
    act_silenced: "现场消音", act_reannunciated: "再次报警",
    act_unacknowledged: "超时升级", act_reminder: "提醒",
    pushes: "推送", no_pushes: "没有推送记录", push_pending: "待发送", push_delivered: "已送达", push_failed: "已放弃",
    tab_outputs: "联动输出",
    outputs_note: "联动输出：燃气紧急切断阀、排风机、声光报警器等的当前状态。状态以设备回读为准。",
    col_output: "输出", col_kind: "类型", col_confirmed: "最近确认", col_holders: "保持原因",
    no_outputs: "本站没有配置联动输出", reason_required: "原因（必填，记入日志）",
    kind_gas_valve: "燃气紧急切断阀", kind_fan: "排风机", kind_sounder: "声光报警器", kind_strobe: "警示灯",
    kind_power_trip: "分励脱扣", kind_other: "其他输出",
    op_gas_valve: "关阀", rel_gas_valve: "开阀", op_fan: "启动", rel_fan: "停止", op_sounder: "鸣响", rel_sounder: "静音",
    op_strobe: "开启", rel_strobe: "关闭", op_power_trip: "分闸", rel_power_trip: "合闸", op_other: "开启", rel_other: "关闭",
    operate_title: "手动动作输出", release_title: "手动释放输出",
    operate_confirm: "确认动作", release_confirm: "确认释放",
    release_warning: "只有在现场查明并排除原因后才能释放。",
    operate_warning: "该操作会立即写入设备。",
    state_unknown: "未知", state_on: "开", state_off: "关", "state_switching on": "开启中", "state_switching off": "关闭中",
    state_gas_valve_closed: "已关闭", state_gas_valve_open: "已打开", state_closing: "关闭中", state_opening: "打开中",
    state_running: "运行", state_stopped: "停止", state_starting: "启动中", state_stopping: "停止中",
    state_sounding: "鸣响", state_silent: "静音", state_flashing: "闪烁",
    state_tripped: "已分闸", state_power_trip_closed: "合闸", state_tripping: "分闸中", state_restoring: "合闸中",
    failing: "未能确认", mismatch: "状态不符", no_readback: "无回读，仅发送",
    manual_by: "手动",
    details: "详情", linkage_did: "联动动作", no_linkage: "没有联动动作",
    reset_pending: "复位已发送到设备，等待设备解除报警",
    act_reset_requested: "请求复位", act_reset_failed: "复位失败", act_linkage: "联动",
    act_fire_confirmed: "确认火警", act_false_alarm: "误报",
    confirm_fire: "确认火警", false_alarm: "误报", confirm_fire_title: "确认为真实火警", false_alarm_title: "判定为误报",
    fire_pending: "待确认火警", fire_left: "剩余", fire_confirmed_by: "火警已确认", fire_automatic: "超时未处理，按火警转发",
    false_alarm_by: "已判定误报", false_reason: "误报原因",
    reason_cooking: "油烟", reason_steam: "水汽", reason_dust: "灰尘/虫", reason_smoking: "吸烟", reason_hot_work: "动火作业",
    reason_test: "测试", reason_device_fault: "设备故障", reason_other: "其他（请在备注说明）",
    fire_tally: "火警统计（近 30 天）", col_enterprise: "企业", col_fires: "火警", col_by_operator: "人工确认",
    col_automatic: "超时转发", col_false: "误报", col_false_rate: "误报率", col_reasons: "误报原因",
    duty_check: "消防监控中心查岗，请在以下时间内应答：", duty_answer: "应答查岗", centre_down: "与消防监控中心的通信中断",
  },
  en: {
    tab_board: "Alarms", tab_devices: "Devices", tab_journal: "Journal", tab_commissioning: "Commissioning",
    device: "Device", address: "Address", count: "Count", base: "Manual counts from", read: "Read", profile_test: "Profile test",
    signoff_title: "Sign-off", firmware: "Firmware", notes: "Notes", signoff: "Sign off",
    signed_off: "signed off", flags_set: "Flags set", failures: "Failed reads", all_plausible: "every value plausible", sound: "Sound", logout: "Log out",
    login_title: "Log in to parkguard", user: "User", password: "Password", login: "Log in",
    login_failed: "Wrong name or password", live_title: "Live connection",
    col_severity: "Severity", col_state: "State", col_time: "Time", col_place: "Place", col_device: "Device",
    col_rule: "Rule", col_value: "Value", col_actions: "Actions", col_action: "Action", col_operator: "Operator",
    col_comment: "Comment", col_message: "Message",
    no_alarms: "No alarms", quantity: "Quantity", range: "Range", search: "Search",
    search_placeholder: "alarm, device, rule or message", duration: "Duration", reason: "Reason", comment: "Comment",
    cancel: "Cancel", confirm: "Confirm",
    ack: "Acknowledge", shelve: "Shelve", unshelve: "Unshelve", reset: "Reset",
    ack_title: "Acknowledge alarm", shelve_title: "Shelve alarm", reset_title: "Reset alarm", unshelve_title: "Unshelve alarm",
    sev_critical: "Critical", sev_high: "High", sev_medium: "Medium", sev_low: "Low",
    st_unacknowledged: "Unacknowledged", st_acknowledged: "Acknowledged", st_returned_unacknowledged: "Returned, unacknowledged", st_normal: "Normal",
    shelved: "shelved", suppressed: "suppressed", out_of_service: "out of service", latched: "latched", silenced: "silenced at the device", maintenance: "device in maintenance",
    status_ok: "OK", status_alarm: "Alarm", status_fault: "Fault", status_offline: "Offline",
    status_suppressed: "Suppressed", status_unknown: "No data",
    summary_unack: "Unacknowledged", summary_active: "Active", summary_total: "All",
    filter_all_enterprises: "All enterprises", filter_all_status: "All states", filter_all_kinds: "All kinds",
    device_search: "Search devices", role_measurement: "Measurements", role_status: "Status", role_setting: "Settings",
    role_counter: "Counters", role_other: "Other", no_devices: "No device matches",
    detail_alarms: "Active alarms", detail_journal: "Recent journal", detail_link: "Link", detail_signoff: "Commissioning sign-off",
    last_seen: "Last heard", not_signed: "not signed off yet", none: "none",
    never: "never", threshold: "threshold", show_hidden: "Show shelved/suppressed", return_to_service: "Return to service",
    until: "until",
    act_raised: "raised", act_escalated: "escalated", act_de_escalated: "de-escalated", act_condition_cleared: "condition cleared",
    act_cleared: "cleared", act_acknowledged: "acknowledged", act_shelved: "shelved", act_unshelved: "unshelved",
    act_suppressed: "suppressed", act_unsuppressed: "unsuppressed", act_removed_from_service: "removed from service",
    act_returned_to_service: "returned to service", act_reset: "reset", act_chatter_flagged: "chattering", act_chatter_cleared: "no longer chattering", act_retired: "rule removed",
    act_silenced: "silenced at the device", act_reannunciated: "annunciated again",
    act_unacknowledged: "escalated (deadline)", act_reminder: "reminder",
    pushes: "Pushes", no_pushes: "No pushes", push_pending: "pending", push_delivered: "delivered", push_failed: "given up",
    tab_outputs: "Outputs",
    outputs_note: "Outputs linkage switches: gas shut-off valves, exhaust fans, sounders and more. A state is what the device read back.",
    col_output: "Output", col_kind: "Kind", col_confirmed: "Last confirmed", col_holders: "Held by",
    no_outputs: "No outputs are configured at this site", reason_required: "Reason (required, journaled)",
    kind_gas_valve: "Gas shut-off valve", kind_fan: "Exhaust fan", kind_sounder: "Sounder", kind_strobe: "Strobe",
    kind_power_trip: "Power trip", kind_other: "Other output",
    op_gas_valve: "Close", rel_gas_valve: "Reopen", op_fan: "Start", rel_fan: "Stop", op_sounder: "Sound", rel_sounder: "Silence",
    op_strobe: "On", rel_strobe: "Off", op_power_trip: "Trip", rel_power_trip: "Restore", op_other: "On", rel_other: "Off",
    operate_title: "Operate output by hand", release_title: "Release output by hand",
    operate_confirm: "Confirm: operate", release_confirm: "Confirm: release",
    release_warning: "Release only after the cause has been found and put right on site.",
    operate_warning: "This is written to the device at once.",
    state_unknown: "unknown", state_on: "on", state_off: "off", "state_switching on": "switching on", "state_switching off": "switching off",
    state_gas_valve_closed: "closed", state_gas_valve_open: "open", state_closing: "closing", state_opening: "opening",
    state_running: "running", state_stopped: "stopped", state_starting: "starting", state_stopping: "stopping",
    state_sounding: "sounding", state_silent: "silent", state_flashing: "flashing",
    state_tripped: "tripped", state_power_trip_closed: "closed", state_tripping: "tripping", state_restoring: "restoring",
    failing: "NOT confirmed", mismatch: "mismatch", no_readback: "no read-back, sent only",
    manual_by: "by hand",
    details: "Details", linkage_did: "What linkage did", no_linkage: "Linkage did nothing",
    reset_pending: "reset sent to device, waiting for it to drop the alarm",
    act_reset_requested: "reset requested", act_reset_failed: "reset failed", act_linkage: "linkage",
    act_fire_confirmed: "fire confirmed", act_false_alarm: "false alarm",
    confirm_fire: "Confirm fire", false_alarm: "False alarm", confirm_fire_title: "Confirm a real fire", false_alarm_title: "Mark as a false alarm",
    fire_pending: "Fire to confirm", fire_left: "left", fire_confirmed_by: "Fire confirmed", fire_automatic: "nobody answered: forwarded as a fire",
    false_alarm_by: "False alarm", false_reason: "Cause",
    reason_cooking: "cooking fumes", reason_steam: "steam", reason_dust: "dust or insects", reason_smoking: "smoking", reason_hot_work: "hot work",
    reason_test: "test", reason_device_fault: "faulty detector", reason_other: "other (say what in the comment)",
    fire_tally: "Fires, last 30 days", col_enterprise: "Enterprise", col_fires: "Fires", col_by_operator: "Confirmed by operator",
    col_automatic: "Forwarded unanswered", col_false: "False alarms", col_false_rate: "False-alarm rate", col_reasons: "Causes",
    duty_check: "Duty check from the fire-monitoring centre: answer within", duty_answer: "Answer duty check", centre_down: "No connection to the fire-monitoring centre",
  },
};

const ROLE_RANK = { viewer: 0, operator: 1, technician: 2, admin: 3 };
const SEVERITY_RANK = { critical: 3, high: 2, medium: 1, low: 0 };

const app = {
  lang: localStorage.getItem("parkguard.lang") || "zh",
  me: null,
  alarms: new Map(),
  devices: [],
  // Device profiles by id, with their named quantities (GET /api/profiles).
  profiles: {},
  // Devices by id, made again with each device list.
  deviceIndex: new Map(),
  tab: "board",
  events: null,
  chart: null,
  detailDevice: null,
  dialogAction: null,
  // The alarm whose pushes are shown under its row, and those pushes.
  pushesKey: null,
  pushes: [],
  // The outputs (linkage) and the manual operation being confirmed.
  outputs: [],
  outputsSeen: null,
  outputAction: null,
  // The wall display (wall.js): on when the page was opened as /#wall.
  wall: { on: false },
  // Sounds made (for tests).
  beeps: 0,
};

function t(key) {
  return (I18N[app.lang] && I18N[app.lang][key]) || I18N.en[key] || key;
}

// Builds an element; string and number children become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function fmtTime(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleString(app.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

function fmtValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return String(Math.round(v * 1000) / 1000);
  return String(v);
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && app.me && app.me.csrf) headers["X-CSRF-Token"] = app.me.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await response.text();
  if (text) { try { data = JSON.parse(text); } catch (_) { data = { error: text }; } }
  if (response.status === 401 && path !== "/api/login") {
    if (app.wall.on) wallUnauthorized(); else showLogin();
  }
  if (!response.ok) throw new Error((data && data.error) || response.statusText);
  return data;
}

function applyLanguage() {
  document.documentElement.lang = app.lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
  $("lang").textContent = app.lang === "zh" ? "English" : "中文";
  renderBoard();
  if (app.tab === "devices") renderDevices();
  renderOutputs();
  if (app.wall.on) renderWall();
}

function showLogin() {
  app.me = null;
  document.querySelector("main").hidden = false;
  $("wall").hidden = true;
  if (app.events) { app.events.close(); app.events = null; }
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("tabs").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-view").hidden = false;
  $("login-name").focus();
}

async function loggedIn(me) {
  if (app.wall.on) { wallLoggedIn(me); return; }
  app.me = me;
  $("login-view").hidden = true;
  $("tabs").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `${me.name} (${me.role})`;
  document.body.dataset.role = me.role;
  for (const node of document.querySelectorAll(".technician-only")) node.hidden = !can("technician");
  showTab(app.tab);
  connectEvents();
  await loadAlarms();
  followAlarmLink();
  // Names of places for the board.
  if (app.tab !== "devices") loadDevices();
}

function can(role) {
  return app.me && ROLE_RANK[app.me.role] >= ROLE_RANK[role];
}

function showTab(tab) {
  app.tab = tab;
  for (const button of document.querySelectorAll(".tab")) button.classList.toggle("active", button.dataset.tab === tab);
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `${tab}-view`;
  if (tab === "devices") loadDevices();
  if (tab === "journal") loadJournal();
  if (tab === "outputs") loadOutputs();
  if (tab === "commissioning") loadCommissioning();
}

// ---- live alarms -------------------------------------------------------------------------

function connectEvents() {
  if (app.events) app.events.close();
  const source = new EventSource("/api/events");
  app.events = source;
  source.addEventListener("open", () => { $("live").classList.remove("off"); loadAlarms(); });
  source.addEventListener("error", () => { $("live").classList.add("off"); });
  source.addEventListener("alarm", (e) => {
    const transition = JSON.parse(e.data);
    const before = app.alarms.get(transition.alarm.key);
    applyAlarm(transition.alarm);
    if (transition.alarm.key === app.pushesKey) setTimeout(loadPushes, 500);
    const anew = (transition.action === "raised" && !before) || transition.action === "escalated" || transition.action === "reannunciated";
    if (anew && transition.alarm.severity === "critical" && transition.annunciated) beep();
    renderBoard();
  });
  source.addEventListener("device", (e) => {
    const change = JSON.parse(e.data);
    const device = app.devices.find((d) => d.id === change.device);
    if (device) { device.status = change.status; if (app.tab === "devices") renderDevices(); }
  });
  source.addEventListener("resync", () => loadAlarms());
}

function isNormal(a) {
  return a.state === "normal" && !a.shelved_until_ms && !a.suppressed_until_ms && !a.out_of_service && !a.maintenance;
}

function applyAlarm(alarm) {
  if (isNormal(alarm)) app.alarms.delete(alarm.key);
  else app.alarms.set(alarm.key, alarm);
}

async function loadAlarms() {
  try {
    const list = await api("GET", "/api/alarms");
    app.alarms = new Map(list.map((a) => [a.key, a]));
    renderBoard();
  } catch (_) { /* shown by the live indicator or the login form */ }
}

function isHidden(a) {
  return !!(a.shelved_until_ms || a.suppressed_until_ms || a.out_of_service || a.maintenance);
}

function sortedAlarms() {
  const unackFirst = (a) => (a.state === "unacknowledged" ? 2 : a.state === "returned_unacknowledged" ? 1 : 0);
  const showHidden = $("show-hidden").checked;
  return [...app.alarms.values()]
    .filter((a) => showHidden || !isHidden(a))
    .sort((a, b) =>
      (SEVERITY_RANK[b.severity] ?? -1) - (SEVERITY_RANK[a.severity] ?? -1) ||
      unackFirst(b) - unackFirst(a) ||
      b.changed_at_ms - a.changed_at_ms);
}

function renderBoard() {
  const body = $("board").tBodies[0];
  if (!body) return;
  const visible = sortedAlarms();
  const hidden = [...app.alarms.values()].filter(isHidden).length;
  body.replaceChildren(...visible.flatMap((a) => (a.key === app.pushesKey ? [alarmRow(a), pushesRow(a)] : [alarmRow(a)])));
  $("board-empty").hidden = visible.length > 0;
  const unack = visible.filter((a) => !isHidden(a) && a.state !== "acknowledged").length;
  const parts = [
    el("span", {}, `${t("summary_unack")}: `, el("b", { id: "count-unack" }, unack)),
    el("span", {}, `${t("summary_active")}: `, el("b", {}, visible.length)),
  ];
  if (hidden > 0) parts.push(el("span", {}, `${t("shelved")}/${t("suppressed")}: `, el("b", {}, hidden)));
  $("summary").replaceChildren(...parts);
}

function ruleName(a) {
  return (app.lang === "zh" && a.rule_name_zh) || a.rule_name || a.rule;
}

// "enterprise name / location name" from the device list, when it is loaded.
function placeOf(deviceId) {
  const d = deviceById(deviceId);
  if (!d) return "";
  return [d.enterprise_name || d.enterprise, d.location_name || d.location].filter(Boolean).join(" / ");
}

// A device's name from the device list, else its id.
function deviceLabel(deviceId) {
  const d = deviceById(deviceId);
  return (d && d.name) || deviceId;
}

// The quantity an alarm is about, by its profile's name when the device list is loaded.
function sourceName(a) {
  const d = deviceById(a.device);
  return d ? quantityName(d, a.source) : a.source;
}

// " mA" after an alarm's numeric value, from the device's latest reading of that quantity.
function unitOf(a) {
  if (typeof a.value !== "number") return "";
  const d = deviceById(a.device);
  const v = d && d.values && d.values[a.source];
  return v && v.unit ? ` ${v.unit}` : "";
}

function alarmRow(a) {
  const severity = a.severity || "low";
  const flags = [];
  if (a.latched) flags.push(t("latched"));
  if (a.silenced) flags.push(t("silenced"));
  if (a.maintenance) flags.push(`${t("maintenance")} (${a.maintenance})`);
  if (a.shelved_until_ms) flags.push(`${t("shelved")} ${t("until")} ${fmtTime(a.shelved_until_ms)}${a.shelve_reason ? " · " + a.shelve_reason : ""}`);
  if (a.suppressed_until_ms) flags.push(`${t("suppressed")} ${t("until")} ${fmtTime(a.suppressed_until_ms)}`);
  if (a.out_of_service) flags.push(t("out_of_service"));
  if (a.reset_pending) flags.push(t("reset_pending"));
  const fire = a.fire || null;
  const fireFlag = fire ? fireText(fire) : null;
  const value = a.value === null || a.value === undefined ? "" : fmtValue(a.value) + unitOf(a);
  // Flags and states have no meaningful threshold to show.
  const threshold = typeof a.value !== "number" || a.threshold === null || a.threshold === undefined
    ? "" : ` (${t("threshold")} ${fmtValue(a.threshold)})`;
  const place = placeOf(a.device) || [a.park, a.enterprise, a.location].filter(Boolean).join(" / ");
  const actions = el("td", { class: "actions" });
  actions.append(el("button", { type: "button", class: "pushes", onclick: () => togglePushes(a.key) }, t("details")));
  if (can("operator")) {
    if (a.state === "unacknowledged" || a.state === "returned_unacknowledged") {
      actions.append(el("button", { type: "button", class: "ack", onclick: () => openDialog("acknowledge", a) }, t("ack")));
    }
    if (a.shelved_until_ms) {
      actions.append(el("button", { type: "button", class: "unshelve", onclick: () => openDialog("unshelve", a) }, t("unshelve")));
    } else if (a.shelvable && a.severity !== "critical" && (a.state === "unacknowledged" || a.state === "acknowledged")) {
      // Fire and gas alarms, and any alarm at a critical level, are never hidden; only an
      // active alarm can be shelved.
      actions.append(el("button", { type: "button", class: "shelve", onclick: () => openDialog("shelve", a) }, t("shelve")));
    }
    // A fire is judged before anything else: confirmed (forwarded to the fire department at
    // once) or a false alarm (with its cause). An automatic confirmation can still be judged.
    if (fire && !(fire.verdict === "confirmed" && !fire.automatic)) {
      actions.append(el("button", { type: "button", class: "confirm-fire danger", onclick: () => openDialog("confirm_fire", a) }, t("confirm_fire")));
    }
    if (fire && fire.verdict !== "false_alarm") {
      actions.append(el("button", { type: "button", class: "false-alarm", onclick: () => openDialog("false_alarm", a) }, t("false_alarm")));
    }
    if (a.latched && !(fire && fire.verdict === "pending")) {
      actions.append(el("button", { type: "button", class: "reset", onclick: () => openDialog("reset", a) }, t("reset")));
    }
  }
  if (can("technician") && (a.suppressed_until_ms || a.out_of_service)) {
    actions.append(el("button", { type: "button", class: "return", onclick: () => openDialog("return_to_service", a) }, t("return_to_service")));
  }
  return el("tr", { class: `${a.state} sev-${severity}${isHidden(a) ? " hidden-alarm" : ""}`, dataset: { key: a.key } },
    el("td", {}, el("span", { class: `badge sev sev-${severity}` }, t(`sev_${severity}`))),
    el("td", { class: "state" }, t(`st_${a.state}`), fireFlag, flags.length ? el("div", { class: "flags" }, flags.join(", ")) : null),
    el("td", {}, fmtTime(a.raised_at_ms || a.changed_at_ms)),
    el("td", {}, place),
    el("td", { class: "device-name" }, deviceLabel(a.device), a.source ? el("div", { class: "flags" }, sourceName(a)) : null),
    el("td", {}, ruleName(a)),
    el("td", {}, value + threshold),
    actions,
  );
}

// A fire's verdict under its state; a pending one counts down to its automatic confirmation.
function fireText(fire) {
  if (fire.verdict === "pending") {
    return el("div", { class: "fire pending" }, `${t("fire_pending")} · ${t("fire_left")} `,
      el("span", { class: "fire-countdown", dataset: { due: fire.due_ms } }, countdown(fire.due_ms)));
  }
  if (fire.verdict === "confirmed") {
    return el("div", { class: "fire confirmed" }, `${t("fire_confirmed_by")} · ${fire.automatic ? t("fire_automatic") : fire.by} ${fmtTime(fire.at_ms)}`);
  }
  return el("div", { class: "fire false-alarm" }, `${t("false_alarm_by")} · ${t(`reason_${fire.reason}`)} · ${fire.by}`);
}

function countdown(dueMs) {
  const left = Math.max(0, Math.round((Number(dueMs) - Date.now()) / 1000));
  return `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
}

function tickCountdowns() {
  for (const span of document.querySelectorAll(".fire-countdown")) span.textContent = countdown(span.dataset.due);
}

// ---- pushes of an alarm ------------------------------------------------------------------

async function togglePushes(key) {
  app.pushesKey = app.pushesKey === key ? null : key;
  app.pushes = [];
  renderBoard();
  await loadPushes();
}

async function loadPushes() {
  const key = app.pushesKey;
  if (!key) return;
  let rows;
  try { rows = await api("GET", `/api/alarms/deliveries?key=${encodeURIComponent(key)}`); } catch (_) { return; }
  if (app.pushesKey !== key) return;
  app.pushes = rows;
  renderBoard();
}

// Under an alarm's row: what linkage did for it, a reset waiting for the device, its pushes.
function pushesRow(a) {
  const rows = app.pushes.map((d) => el("tr", { class: `push push-${d.status}` },
    el("td", {}, fmtTime(d.done_ms || d.created_ms)),
    el("td", {}, t(`act_${d.event}`)),
    el("td", {}, d.route),
    el("td", {}, d.recipient ? `${d.channel} → ${d.recipient}` : d.channel),
    el("td", { class: "push-status" }, t(`push_${d.status}`) + (d.attempts > 1 ? ` (${d.attempts})` : "")),
    el("td", {}, d.last_error || "")));
  const linkage = a.linkage || [];
  return el("tr", { class: "pushes-row" }, el("td", { colspan: 8, class: "alarm-detail" },
    a.reset_pending ? el("p", { class: "reset-pending" }, t("reset_pending")) : null,
    el("h4", {}, t("linkage_did")),
    linkage.length
      ? el("ul", { class: "linkage" }, linkage.map((line) => el("li", {}, line)))
      : el("p", { class: "flags no-linkage" }, t("no_linkage")),
    el("h4", {}, t("pushes")),
    rows.length ? el("table", { class: "grid pushes" }, el("tbody", {}, rows)) : el("p", { class: "empty" }, t("no_pushes"))));
}

// A link from a push (`#alarm=KEY`) opens that alarm's pushes on the board.
function followAlarmLink() {
  const match = /^#alarm=(.+)$/.exec(location.hash);
  if (!match) return;
  app.pushesKey = decodeURIComponent(match[1]);
  showTab("board");
  loadPushes();
}

let audio = null;
function beep() {
  if (!$("sound").checked) return;
  app.beeps += 1;
  try {
    audio = audio || new AudioContext();
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0.2;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.6);
  } catch (_) { /* no audio device */ }
}

// ---- commands ----------------------------------------------------------------------------

function openDialog(command, alarm) {
  app.dialogAction = { command, alarm };
  const titles = { acknowledge: "ack_title", shelve: "shelve_title", reset: "reset_title", unshelve: "unshelve_title", return_to_service: "return_to_service", confirm_fire: "confirm_fire_title", false_alarm: "false_alarm_title" };
  $("dialog-title").textContent = t(titles[command]);
  $("dialog-alarm").textContent = `${alarm.device} · ${ruleName(alarm)} · ${fmtValue(alarm.value)}`;
  $("dialog-minutes-row").hidden = command !== "shelve";
  $("dialog-reason-row").hidden = command !== "shelve";
  $("dialog-cause-row").hidden = command !== "false_alarm";
  $("dialog-cause").replaceChildren(...["cooking", "steam", "dust", "smoking", "hot_work", "test", "device_fault", "other"]
    .map((r) => el("option", { value: r }, t(`reason_${r}`))));
  $("dialog-comment").value = "";
  $("dialog-reason").value = "";
  $("dialog-error").textContent = "";
  $("dialog").showModal();
  $("dialog-comment").focus();
}

async function confirmDialog() {
  const { command, alarm } = app.dialogAction || {};
  if (!command) return;
  const body = { target: "alarm", id: alarm.key, command, comment: $("dialog-comment").value };
  if (command === "shelve") {
    body.minutes = Number($("dialog-minutes").value);
    body.reason = $("dialog-reason").value;
  }
  if (command === "false_alarm") body.reason = $("dialog-cause").value;
  try {
    await api("POST", "/api/commands", body);
    $("dialog").close();
  } catch (err) {
    $("dialog-error").textContent = err.message;
  }
}

// ---- devices -----------------------------------------------------------------------------

async function loadDevices() {
  try {
    if (!Object.keys(app.profiles).length) app.profiles = await api("GET", "/api/profiles");
    app.devices = await api("GET", "/api/devices");
    app.deviceIndex = new Map(app.devices.map((d) => [d.id, d]));
    if (app.tab === "devices") renderDevices();
    else renderBoard();
  } catch (_) { /* login form shown on 401 */ }
}

// The profile's entry for a quantity of a device: names, role, primary.
function quantityInfo(d, q) {
  const profile = app.profiles[d.profile];
  return profile && (profile.quantities || []).find((x) => x.id === q);
}

function quantityName(d, q) {
  const info = quantityInfo(d, q);
  if (!info) return q;
  return app.lang === "zh" ? info.zh : info.en;
}

// The values shown for a device in the list: its profile's primary quantities; without
// any, its first named measurements; a profile naming nothing shows its first values.
function primaryQuantities(d) {
  const profile = app.profiles[d.profile];
  const named = (profile && profile.quantities) || [];
  const primary = named.filter((q) => q.primary).map((q) => q.id);
  if (primary.length) return primary;
  const measured = named.filter((q) => q.role === "measurement").map((q) => q.id).slice(0, 3);
  if (measured.length) return measured;
  return Object.keys(d.values || {}).slice(0, 3);
}

// Device -> quantity -> its most severe active alarm; made once per render of the list, not
// once per value (thousands of devices, hundreds of alarms).
function alarmsByQuantity() {
  const index = new Map();
  for (const a of app.alarms.values()) {
    if (!a.source || isNormal(a)) continue;
    if (!index.has(a.device)) index.set(a.device, new Map());
    const own = index.get(a.device);
    const worst = own.get(a.source);
    if (!worst || SEVERITY_RANK[a.severity] > SEVERITY_RANK[worst.severity]) own.set(a.source, a);
  }
  return index;
}

// The most severe active alarm of a device about one quantity, if any.
function alarmOn(deviceId, q, index) {
  const own = (index || alarmsByQuantity()).get(deviceId);
  return (own && own.get(q)) || null;
}

// The device with this id, from the device list (looked up by id, not searched).
function deviceById(id) {
  if (app.deviceIndex.size !== app.devices.length) app.deviceIndex = new Map(app.devices.map((d) => [d.id, d]));
  return app.deviceIndex.get(id);
}

function deviceKind(d) {
  return d.kind || (app.profiles[d.profile] && app.profiles[d.profile].kind) || "";
}

// Fills a filter's options, keeping what is chosen; untouched when they are the same, so that
// the list's refresh does not close a select an operator has open.
function fillFilter(select, allKey, options) {
  const key = JSON.stringify([t(allKey), options]);
  if (select.dataset.options === key) return;
  select.dataset.options = key;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, t(allKey)),
    ...options.map(([value, label]) => el("option", { value }, label)));
  select.value = options.some(([value]) => value === chosen) ? chosen : "";
}

function renderDeviceFilters() {
  const enterprises = new Map();
  const kinds = new Set();
  for (const d of app.devices) {
    if (d.enterprise) enterprises.set(d.enterprise, d.enterprise_name || d.enterprise);
    const kind = deviceKind(d);
    if (kind) kinds.add(kind);
  }
  fillFilter($("device-enterprise"), "filter_all_enterprises", [...enterprises]);
  fillFilter($("device-status"), "filter_all_status",
    ["alarm", "fault", "offline", "suppressed", "ok", "unknown"].map((s) => [s, t(`status_${s}`)]));
  fillFilter($("device-kind"), "filter_all_kinds", [...kinds].sort().map((k) => [k, k]));
}

function deviceMatches(d) {
  const enterprise = $("device-enterprise").value;
  const status = $("device-status").value;
  const kind = $("device-kind").value;
  const text = $("device-search").value.trim().toLowerCase();
  if (enterprise && d.enterprise !== enterprise) return false;
  if (status && d.status !== status) return false;
  if (kind && deviceKind(d) !== kind) return false;
  if (!text) return true;
  return [d.id, d.name, d.enterprise_name, d.enterprise, d.location_name, d.location, d.profile]
    .some((x) => x && String(x).toLowerCase().includes(text));
}

function renderDevices() {
  renderDeviceFilters();
  const tree = $("device-tree");
  const groups = new Map();
  app.renderAlarms = alarmsByQuantity();
  for (const d of app.devices.filter(deviceMatches)) {
    const park = d.park_name || d.park || "-";
    const enterprise = d.enterprise_name || d.enterprise || "-";
    const location = d.location_name || d.location || "-";
    if (!groups.has(park)) groups.set(park, new Map());
    const enterprises = groups.get(park);
    if (!enterprises.has(enterprise)) enterprises.set(enterprise, new Map());
    const locations = enterprises.get(enterprise);
    if (!locations.has(location)) locations.set(location, []);
    locations.get(location).push(d);
  }
  const nodes = [];
  for (const [park, enterprises] of groups) {
    const parkNode = el("div", { class: "group" }, el("h3", {}, park));
    for (const [enterprise, locations] of enterprises) {
      parkNode.append(el("h4", {}, enterprise));
      for (const [location, devices] of locations) {
        parkNode.append(el("div", { class: "location" }, el("h4", {}, `· ${location}`),
          devices.map(deviceRow)));
      }
    }
    nodes.push(parkNode);
  }
  if (!nodes.length) nodes.push(el("p", { class: "note" }, t("no_devices")));
  tree.replaceChildren(...nodes);
  if (app.detailDevice) {
    const fresh = app.devices.find((x) => x.id === app.detailDevice.id);
    if (fresh) renderDeviceDetail(fresh);
  }
}

function valueText(v) {
  if (!v) return t("never");
  return `${fmtValue(v.value)}${v.unit ? " " + v.unit : ""}`;
}

function deviceRow(d) {
  const values = primaryQuantities(d).map((q) => {
    const v = (d.values || {})[q];
    const alarm = alarmOn(d.id, q, app.renderAlarms);
    return el("span", { class: `value${alarm ? " value-alarm sev-" + alarm.severity : ""}`, dataset: { quantity: q } },
      el("span", { class: "value-name" }, quantityName(d, q)), " ",
      el("b", {}, v ? valueText(v) : "–"));
  });
  const signoff = d.signoff
    ? el("span", { class: "signoff", title: `${d.signoff.technician} ${fmtTime(d.signoff.at_ms)} ${d.signoff.firmware || ""} ${d.signoff.notes}` },
      `✔ ${t("signed_off")}: ${d.signoff.technician}`)
    : null;
  return el("div", { class: "device", dataset: { device: d.id }, onclick: () => openDevice(d.id) },
    el("span", { class: `badge status-${d.status}` }, t(`status_${d.status}`)),
    el("span", { class: "device-name" }, d.name || d.id),
    el("span", { class: "values" }, Object.keys(d.values || {}).length ? values : t("never")),
    signoff,
  );
}

function openDevice(id) {
  const d = app.devices.find((x) => x.id === id);
  if (!d) return;
  app.detailDevice = d;
  $("device-detail").hidden = false;
  const numeric = Object.entries(d.values || {}).filter(([, v]) => typeof v.value === "number").map(([q]) => q);
  const select = $("detail-quantity");
  fillQuantitySelect(d);
  // Open on the quantity an alarm of the device is about, if any.
  const alarmed = [...app.alarms.values()].find((a) => a.device === d.id && numeric.includes(a.source));
  select.value = alarmed ? alarmed.source : (select.options[0] && select.options[0].value) || "";
  app.detailJournal = [];
  renderDeviceDetail(d);
  drawChart();
  loadDeviceJournal(d);
}

// The device's newest journal entries (the search also matches other ids that contain this
// one, hence the filter).
async function loadDeviceJournal(d) {
  const params = new URLSearchParams({ search: d.id, limit: "50" });
  let entries = [];
  try { entries = await api("GET", `/api/journal?${params}`); } catch (_) { return; }
  if (!app.detailDevice || app.detailDevice.id !== d.id) return;
  app.detailJournal = entries.filter((e) => e.device === d.id).slice(0, 10);
  renderDeviceDetail(app.detailDevice);
}

function linkText(link) {
  if (!link) return t("none");
  if (link.kind === "modbus") return `Modbus ${link.transport} ${link.connection} · ${link.address} · unit ${link.unit_id}`;
  if (link.kind === "mqtt") return `MQTT ${link.connection} · ${link.topic}`;
  return `${link.platform} · ${link.endpoint}`;
}

// The chart's quantities: named measurements first in the profile's order, then the other
// named ones, then unnamed ones; keeps the one chosen.
function fillQuantitySelect(d) {
  const select = $("detail-quantity");
  const chosen = select.value;
  const profile = app.profiles[d.profile];
  const named = (profile && profile.quantities) || [];
  const rank = (q) => {
    const i = named.findIndex((x) => x.id === q);
    if (i < 0) return 2 * named.length;
    return named[i].role === "measurement" ? i : named.length + i;
  };
  const numeric = Object.entries(d.values || {}).filter(([, v]) => typeof v.value === "number").map(([q]) => q);
  numeric.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const options = numeric.map((q) => [q, quantityName(d, q)]);
  // Untouched when unchanged, so that the refresh every 5 s does not close it while open.
  const key = JSON.stringify([d.id, options]);
  if (select.dataset.options === key) return;
  select.dataset.options = key;
  select.replaceChildren(...options.map(([q, name]) => el("option", { value: q }, name)));
  if (numeric.includes(chosen)) select.value = chosen;
}

// The device's values grouped by role, in the profile's order; unnamed ones last, by id.
function renderDeviceDetail(d) {
  app.detailDevice = d;
  $("detail-title").textContent = `${d.name || d.id} (${deviceKind(d)}, ${d.profile})`;
  fillQuantitySelect(d);
  const values = d.values || {};
  const profile = app.profiles[d.profile];
  const named = ((profile && profile.quantities) || []).filter((q) => q.id in values);
  const namedIds = new Set(named.map((q) => q.id));
  const groups = ["measurement", "status", "setting", "counter"].map((role) => [role, named.filter((q) => q.role === role).map((q) => q.id)]);
  groups.push(["other", Object.keys(values).filter((q) => !namedIds.has(q)).sort()]);
  const rows = [];
  for (const [role, ids] of groups) {
    if (!ids.length) continue;
    rows.push(el("tr", { class: "role-head" }, el("th", { colspan: 5 }, t(`role_${role}`))));
    for (const q of ids) {
      const v = values[q];
      const alarm = alarmOn(d.id, q);
      rows.push(el("tr", { class: alarm ? `value-alarm sev-${alarm.severity}` : null, dataset: { quantity: q } },
        el("td", { title: q }, quantityName(d, q)), el("td", {}, fmtValue(v.value)), el("td", {}, v.unit || ""),
        el("td", {}, v.quality), el("td", {}, fmtTime(v.at_ms))));
    }
  }
  $("detail-values").tBodies[0].replaceChildren(...rows);
  // Its alarms, journal, sign-off and link.
  const own = [...app.alarms.values()].filter((a) => a.device === d.id && !isNormal(a));
  const alarms = own.length
    ? el("ul", { class: "detail-alarms" }, own.map((a) => el("li", { class: `sev-${a.severity}`, dataset: { key: a.key } },
      el("span", { class: `badge sev sev-${a.severity}` }, t(`sev_${a.severity}`)), " ",
      ruleName(a), a.source ? ` · ${quantityName(d, a.source)}` : "", " · ", t(`st_${a.state}`), " · ", fmtTime(a.raised_at_ms || a.changed_at_ms))))
    : el("p", { class: "note" }, t("none"));
  const journal = (app.detailJournal || []).length
    ? el("ul", { class: "detail-journal" }, app.detailJournal.map((e) => el("li", {},
      `${fmtTime(e.at_ms)} · ${t(`act_${e.action}`)} · ${e.rule}${e.operator ? " · " + e.operator : ""}${e.comment ? " · " + e.comment : ""}`)))
    : el("p", { class: "note" }, t("none"));
  const signoff = d.signoff
    ? `${d.signoff.technician} · ${fmtTime(d.signoff.at_ms)}${d.signoff.firmware ? " · " + d.signoff.firmware : ""}${d.signoff.notes ? " · " + d.signoff.notes : ""}`
    : t("not_signed");
  $("detail-more").replaceChildren(
    el("h3", {}, t("detail_alarms")), alarms,
    el("h3", {}, t("detail_journal")), journal,
    el("h3", {}, t("detail_signoff")), el("p", { class: "detail-signoff" }, signoff),
    el("h3", {}, t("detail_link")), el("p", { class: "detail-link" }, linkText(d.link)),
    el("p", { class: "detail-seen" }, `${t("last_seen")}: ${d.last_seen_ms ? fmtTime(d.last_seen_ms) : t("never")}`),
  );
}

async function drawChart() {
  const d = app.detailDevice;
  const quantity = $("detail-quantity").value;
  const container = $("chart");
  if (app.chart) { app.chart.destroy(); app.chart = null; }
  container.replaceChildren();
  if (!d || !quantity) return;
  const hours = $("detail-hours").value;
  const params = new URLSearchParams({ device: d.id, quantity, hours });
  let points = [];
  try { points = await api("GET", `/api/history?${params}`); } catch (_) { return; }
  const data = [
    points.map((p) => (p.at_ms + p.span_ms / 2) / 1000),
    points.map((p) => p.min), points.map((p) => p.mean), points.map((p) => p.max),
  ];
  const unit = (d.values[quantity] && d.values[quantity].unit) || "";
  const to = Date.now() / 1000;
  const from = to - Number(hours) * 3600;
  const options = {
    width: Math.max(280, container.clientWidth || 480), height: 260,
    scales: { x: { time: true, range: () => [from, to] } },
    series: [{}, { label: "min", stroke: "#93c5fd" }, { label: `${quantityName(d, quantity)} ${unit}`, stroke: "#2563eb", width: 2 }, { label: "max", stroke: "#f87171" }],
    axes: [{}, { label: unit }],
  };
  app.chart = new uPlot(options, data, container);
}

// ---- commissioning ----------------------------------------------------------------------

async function loadCommissioning() {
  if (!app.devices.length) await loadDevices();
  const select = $("comm-device");
  const current = select.value;
  select.replaceChildren(...app.devices.filter((d) => d.modbus).map((d) =>
    el("option", { value: d.id }, `${d.name || d.id} (${d.profile})`)));
  if (current) select.value = current;
}

async function commissioningRead(e) {
  e.preventDefault();
  $("comm-error").textContent = "";
  try {
    const result = await api("POST", "/api/commissioning/read", {
      device: $("comm-device").value, area: $("comm-area").value,
      address: Number($("comm-address").value), count: Number($("comm-count").value),
      base: Number($("comm-base").value),
    });
    $("comm-words").textContent = result.words_table;
    $("comm-orders").textContent = result.orders_table;
  } catch (err) {
    $("comm-error").textContent = err.message;
  }
}

async function commissioningProfileTest() {
  $("comm-error").textContent = "";
  try {
    const result = await api("POST", "/api/commissioning/profile-test", { device: $("comm-device").value });
    $("comm-checks").tBodies[0].replaceChildren(...result.checks.map((c) =>
      el("tr", { class: /^(OUT|INVALID|IMPLAUSIBLE)/.test(c.verdict) ? "bad" : "" },
        el("td", {}, c.quantity), el("td", {}, c.value), el("td", {}, c.unit), el("td", {}, c.quality),
        el("td", { class: "verdict" }, c.verdict))));
    const parts = [];
    if (result.flags_set.length) parts.push(`${t("flags_set")}: ${result.flags_set.join(", ")}`);
    if (result.failures.length) parts.push(`${t("failures")}: ${result.failures.join("; ")}`);
    if (!parts.length && !result.implausible) parts.push(t("all_plausible"));
    $("comm-summary").textContent = parts.join(" · ");
  } catch (err) {
    $("comm-error").textContent = err.message;
  }
}

async function commissioningSignOff(e) {
  e.preventDefault();
  $("comm-error").textContent = "";
  try {
    const record = await api("POST", "/api/devices/signoff", {
      device: $("comm-device").value, firmware: $("comm-firmware").value, notes: $("comm-notes").value,
    });
    $("comm-signoff-result").textContent = `✔ ${record.technician} ${fmtTime(record.at_ms)}`;
    loadDevices();
  } catch (err) {
    $("comm-error").textContent = err.message;
  }
}

// ---- outputs (linkage) -------------------------------------------------------------------

async function loadOutputs() {
  let list;
  try { list = await api("GET", "/api/outputs"); } catch (_) { return; }
  // Re-read every second: the rows are rebuilt only when something changed, so that a button
  // is not replaced under the pointer while it is being clicked.
  const seen = JSON.stringify(list);
  if (seen === app.outputsSeen && $("outputs").tBodies[0].rows.length === list.length) return;
  app.outputsSeen = seen;
  app.outputs = list;
  renderOutputs();
}

// The state word in the page's language: the server's word (`closed`, `running`, ...) is kept
// in `data-state`. A gas valve's `closed` and a power trip's `closed` differ (shut / power on).
function stateText(o) {
  const specific = `state_${o.kind}_${o.state}`;
  if (I18N.en[specific]) return t(specific);
  return I18N.en[`state_${o.state}`] ? t(`state_${o.state}`) : o.state;
}

// "enterprise name / location name", the names taken from a device at the same location.
function outputPlace(o) {
  const d = app.devices.find((x) => x.location === o.location && x.enterprise === o.enterprise);
  const enterprise = (d && d.enterprise_name) || o.enterprise;
  const location = (d && d.location_name) || o.location;
  return [enterprise, location].filter(Boolean).join(" / ");
}

function holderText(h) {
  return h.startsWith("manual:") ? `${t("manual_by")}: ${h.slice(7)}` : h;
}

function outputRow(o) {
  const problems = [];
  if (o.failing) problems.push(el("div", { class: "problem failing" }, `${t("failing")}: ${o.failing}`));
  if (o.mismatch) problems.push(el("div", { class: "problem mismatch" }, `${t("mismatch")}: ${o.mismatch}`));
  const actions = el("td", { class: "actions" });
  if (can("technician")) {
    const operated = o.commanded === true && o.confirmed === true && !o.pending;
    const released = o.commanded !== true && o.confirmed === false && !o.pending && !o.holders.length;
    if (!operated) actions.append(el("button", { type: "button", class: "operate", onclick: () => openOutputDialog(o, true) }, t(`op_${o.kind}`)));
    if (!released) actions.append(el("button", { type: "button", class: "release", onclick: () => openOutputDialog(o, false) }, t(`rel_${o.kind}`)));
  }
  const place = outputPlace(o);
  const confirmed = o.readback ? (o.confirmed_at_ms ? fmtTime(o.confirmed_at_ms) : t("never")) : t("no_readback");
  const classes = [o.confirmed === true ? "operated" : "", o.pending ? "pending" : "", o.failing || o.mismatch ? "bad-output" : ""];
  return el("tr", { class: classes.filter(Boolean).join(" "), dataset: { output: o.id } },
    el("td", { class: "output-name" }, o.name, o.name !== o.id ? el("div", { class: "flags" }, o.id) : null),
    el("td", {}, t(`kind_${o.kind}`)),
    el("td", {}, place),
    el("td", { class: "state", dataset: { state: o.state } }, stateText(o)),
    el("td", { class: "confirmed" }, confirmed, problems),
    el("td", { class: "holders" }, o.holders.map((h) => el("div", {}, holderText(h)))),
    actions,
  );
}

function renderOutputs() {
  const body = $("outputs") && $("outputs").tBodies[0];
  if (!body) return;
  body.replaceChildren(...app.outputs.map(outputRow));
  $("outputs-empty").hidden = app.outputs.length > 0;
}

// The confirmation step: the output named in full, a reason, and a button saying what it does.
function openOutputDialog(output, operate) {
  app.outputAction = { output, operate };
  $("output-dialog-title").textContent = t(operate ? "operate_title" : "release_title");
  $("output-dialog-output").textContent =
    `${t(operate ? `op_${output.kind}` : `rel_${output.kind}`)}: ${output.name} (${output.id}) · ${t(`kind_${output.kind}`)} · ${outputPlace(output)}`;
  $("output-dialog-warning").textContent = operate ? t("operate_warning") : (output.manual_release_only ? t("release_warning") : "");
  $("output-dialog-ok").textContent = `${t(operate ? "operate_confirm" : "release_confirm")}: ${output.name}`;
  $("output-reason").value = "";
  $("output-dialog-error").textContent = "";
  $("output-dialog").showModal();
  $("output-reason").focus();
}

async function confirmOutputDialog() {
  const { output, operate } = app.outputAction || {};
  if (!output) return;
  const reason = $("output-reason").value.trim();
  if (!reason) { $("output-dialog-error").textContent = t("reason_required"); return; }
  const path = `/api/outputs/${encodeURIComponent(output.id)}/${operate ? "operate" : "release"}`;
  try {
    await api("POST", path, { reason, confirm: output.id });
    $("output-dialog").close();
    app.outputAction = null;
    // The device's confirmation follows within the output's confirm time.
    loadOutputs();
  } catch (err) {
    $("output-dialog-error").textContent = err.message;
  }
}

// ---- journal -----------------------------------------------------------------------------

// ---- fire-monitoring centres ---------------------------------------------------------------

// A centre's duty check (查岗) asks that someone is on duty: a banner with its countdown and
// the answer button; a link that is down is said too.
async function loadNorthbound() {
  let links = [];
  try { links = await api("GET", "/api/northbound"); } catch (_) { return; }
  // A new duty check is announced like a critical alarm: someone must be at the desk.
  const asked = links.filter((l) => l.duty_check).map((l) => `${l.name}@${l.duty_check.asked_ms}`);
  if (asked.some((k) => !(app.dutyChecksSeen || []).includes(k))) beep();
  app.dutyChecksSeen = asked;
  $("duty-checks").replaceChildren(...links.flatMap((l) => {
    const out = [];
    if (l.duty_check) {
      out.push(el("div", { class: "duty-check", dataset: { link: l.name } },
        `${t("duty_check")} `, el("span", { class: "fire-countdown", dataset: { due: l.duty_check.due_ms } }, countdown(l.duty_check.due_ms)), " ",
        can("operator") ? el("button", { type: "button", class: "duty-answer primary", onclick: () => answerDutyCheck(l.name) }, t("duty_answer")) : null));
    }
    if (!l.connected) out.push(el("div", { class: "centre-down" }, `${t("centre_down")}: ${l.name}`));
    return out;
  }));
}

async function answerDutyCheck(name) {
  try { await api("POST", `/api/northbound/${encodeURIComponent(name)}/duty-check`, {}); } catch (err) { alert(err.message); }
  loadNorthbound();
}

async function loadFireTally() {
  let tally = null;
  try { tally = await api("GET", "/api/fire/tally?days=30"); } catch (_) { return; }
  const names = new Map(app.devices.map((d) => [d.enterprise, d.enterprise_name || d.enterprise]));
  $("fire-tally").tBodies[0].replaceChildren(...tally.enterprises.map((e) =>
    el("tr", { dataset: { enterprise: e.enterprise } },
      el("td", {}, names.get(e.enterprise) || e.enterprise), el("td", { class: "fires" }, e.fires),
      el("td", {}, e.confirmed_by_operator), el("td", {}, e.confirmed_automatically),
      el("td", { class: "false-alarms" }, e.false_alarms), el("td", { class: "false-rate" }, `${Math.round(e.false_alarm_rate * 100)}%`),
      el("td", {}, Object.entries(e.false_alarm_reasons).map(([r, n]) => `${t(`reason_${r}`)} ${n}`).join(", ")))));
}

async function loadJournal() {
  loadFireTally();
  const params = new URLSearchParams({ limit: "200" });
  const search = $("journal-search").value.trim();
  if (search) params.set("search", search);
  let entries = [];
  try { entries = await api("GET", `/api/journal?${params}`); } catch (_) { return; }
  $("journal").tBodies[0].replaceChildren(...entries.map((e) =>
    el("tr", { dataset: { seq: e.seq } },
      el("td", {}, fmtTime(e.at_ms)), el("td", { class: "action" }, t(`act_${e.action}`)), el("td", {}, t(`st_${e.state}`)),
      el("td", {}, e.device), el("td", {}, e.rule), el("td", {}, e.value || ""),
      el("td", { class: "operator" }, e.operator || ""), el("td", {}, e.comment || ""), el("td", {}, e.message))));
}

// ---- start -------------------------------------------------------------------------------

function start() {
  $("lang").addEventListener("click", () => {
    app.lang = app.lang === "zh" ? "en" : "zh";
    localStorage.setItem("parkguard.lang", app.lang);
    applyLanguage();
  });
  $("sound").checked = localStorage.getItem("parkguard.sound") === "1";
  $("sound").addEventListener("change", () => localStorage.setItem("parkguard.sound", $("sound").checked ? "1" : "0"));
  for (const button of document.querySelectorAll(".tab")) button.addEventListener("click", () => showTab(button.dataset.tab));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    try {
      const me = await api("POST", "/api/login", { name: $("login-name").value, password: $("login-password").value });
      $("login-password").value = "";
      await loggedIn(me);
    } catch (err) {
      $("login-error").textContent = err.message === "wrong name or password" ? t("login_failed") : err.message;
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (_) { /* logged out either way */ }
    showLogin();
  });
  $("dialog-ok").addEventListener("click", confirmDialog);
  $("dialog-cancel").addEventListener("click", () => $("dialog").close());
  $("output-dialog-ok").addEventListener("click", confirmOutputDialog);
  $("output-dialog-cancel").addEventListener("click", () => $("output-dialog").close());
  $("show-hidden").addEventListener("change", renderBoard);
  $("comm-read-form").addEventListener("submit", commissioningRead);
  $("comm-profile-test").addEventListener("click", commissioningProfileTest);
  $("comm-signoff-form").addEventListener("submit", commissioningSignOff);
  $("journal-form").addEventListener("submit", (e) => { e.preventDefault(); loadJournal(); });
  for (const id of ["device-enterprise", "device-status", "device-kind"]) $(id).addEventListener("change", renderDevices);
  $("device-search").addEventListener("input", renderDevices);
  $("detail-quantity").addEventListener("change", drawChart);
  // The chart is drawn to its container's width: again when the window changes size.
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => { if (app.tab === "devices" && app.detailDevice) drawChart(); }, 200);
  });
  $("detail-hours").addEventListener("change", drawChart);
  setInterval(() => { if (app.me && app.tab === "devices") loadDevices(); }, 5000);
  setInterval(tickCountdowns, 1000);
  // On every tab: a duty check waits for whoever is at the desk.
  setInterval(() => { if (app.me && !app.wall.on) loadNorthbound(); }, 2000);
  setInterval(() => { if (app.me && app.tab === "board" && app.pushesKey) loadPushes(); }, 5000);
  // Outputs have no live stream: re-read while shown, often enough to see a valve confirm.
  setInterval(() => { if (app.me && app.tab === "outputs") loadOutputs(); }, 1000);
  window.addEventListener("hashchange", followAlarmLink);
  // The wall display is its own page: entering or leaving it by the address loads it anew.
  window.addEventListener("hashchange", () => { if (isWallHash() !== app.wall.on) location.reload(); });
  if (isWallHash()) { startWall(); return; }
  applyLanguage();
  fetch("/api/session", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((me) => (me ? loggedIn(me) : showLogin()))
    .catch(showLogin);
}

// After every script of the page (wall.js comes after this one) has loaded.
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
