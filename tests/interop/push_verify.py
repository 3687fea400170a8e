#!/usr/bin/env python3
"""A second, independent implementation of the receiving side of parkguard's pushes.

Written from the documented formats only (docs/alerts.md for parkguard's own webhook; the
robots' published signing rules for DingTalk, Feishu and WeCom), with Python's standard library
(hmac, hashlib, base64, urllib): nothing of parkguard's code is used. `tests/suite/golden_pushes.rs`
runs it on what the daemon really sent to a receiver.

    push_verify.py requests.json     verify captured requests; prints a JSON report
    push_verify.py --golden DIR      check the golden bodies in DIR against the formats

requests.json: {"now_s": int, "web_url": str,
                "secrets": {"webhook": str, "dingtalk": str, "feishu": str},
                "requests": [{"path", "query" (raw), "headers" (lower-case), "body_b64"}]}

The report: {"accepted": [...], "rejected": [...], "forgeries": [...], "problems": [...]}.
Exit status 0 only when there are no problems: every genuine request verifies and has the
documented fields, and every forgery made from it is rejected for the expected reason.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import sys
import urllib.parse

# docs/alerts.md: "A receiver recomputes the signature, rejects timestamps more than 5 minutes
# off (replays) and drops ids it has seen."
WEBHOOK_TOLERANCE_S = 300
# DingTalk and Feishu refuse timestamps more than an hour from their clock.
ROBOT_TOLERANCE_S = 3600
# WeCom's markdown content is at most 4096 bytes (UTF-8).
WECOM_MAX_BYTES = 4096

# The webhook document's fields, as docs/alerts.md lists them.
DOCUMENT_KEYS = {"schema", "id", "digest", "notices"}
NOTICE_KEYS = {
    "event", "at_ms", "route", "language", "journal_seq", "operator", "comment",
    "escalated_from", "unacknowledged_for_s", "link", "recipients", "alarm", "title", "text",
}
ALARM_KEYS = {
    "key", "rule", "rule_name", "rule_name_zh", "park", "park_name", "enterprise",
    "enterprise_name", "location", "location_name", "device", "device_name", "device_kind",
    "quantity", "value", "unit", "threshold", "severity", "kind", "state", "message",
}
# Present when the device's profile names the quantity (docs/alerts.md): both or neither.
ALARM_OPTIONAL_KEYS = {"quantity_zh", "quantity_en"}
RECIPIENT_KEYS = {"name", "role", "mobile", "email"}
SEVERITIES = {"low", "medium", "high", "critical"}
KINDS = {"alarm", "pre_alarm", "fault", "supervisory", "test"}


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


class WebhookReceiver:
    """What a duty system receiving parkguard's webhook does (docs/alerts.md, Headers)."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.seen = set()

    def verify(self, headers: dict, body: bytes, now_s: int):
        """None when the request is genuine and fresh, else the reason it is refused."""
        ts = headers.get("x-parkguard-timestamp")
        signature = headers.get("x-parkguard-signature")
        delivery = headers.get("x-parkguard-delivery")
        if ts is None or signature is None or delivery is None:
            return "missing header"
        if not ts.isdigit():
            return "timestamp not in Unix seconds"
        if not signature.startswith("sha256="):
            return "signature not sha256=<hex>"
        expected = hmac.new(self.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature[len("sha256="):]):
            return "bad signature"
        if abs(now_s - int(ts)) > WEBHOOK_TOLERANCE_S:
            return "stale timestamp"
        try:
            doc = json.loads(body)
        except ValueError:
            return "body not JSON"
        if doc.get("id") != delivery:
            return "X-Parkguard-Delivery differs from the document's id"
        if delivery in self.seen:
            return "replayed delivery"
        self.seen.add(delivery)
        return None


def check_document(doc, web_url, problems, where):
    """The webhook document's fields as documented (schema parkguard.alert.v1)."""

    def need(cond, what):
        if not cond:
            problems.append(f"{where}: {what}")

    need(set(doc) == DOCUMENT_KEYS, f"document keys {sorted(doc)}")
    need(doc.get("schema") == "parkguard.alert.v1", "schema")
    need(isinstance(doc.get("id"), str) and doc["id"], "id")
    notices = doc.get("notices") or []
    need(isinstance(doc.get("digest"), bool), "digest is a boolean")
    need(len(notices) >= 1, "at least one notice")
    need(doc.get("digest") == (len(notices) > 1), "digest exactly when several notices")
    for i, n in enumerate(notices):
        w = f"notice {i}"
        need(set(n) == NOTICE_KEYS, f"{w} keys {sorted(n)}")
        need(re.fullmatch(r"[a-z_]+", str(n.get("event"))), f"{w} event {n.get('event')!r}")
        need(isinstance(n.get("at_ms"), int) and n["at_ms"] > 1_500_000_000_000, f"{w} at_ms")
        need(n.get("language") in ("zh", "en"), f"{w} language")
        need(isinstance(n.get("journal_seq"), int) and n["journal_seq"] >= 1, f"{w} journal_seq")
        for r in n.get("recipients") or []:
            need(set(r) == RECIPIENT_KEYS, f"{w} recipient keys {sorted(r)}")
        a = n.get("alarm") or {}
        optional = set(a) - ALARM_KEYS
        need(ALARM_KEYS <= set(a) and optional in (set(), ALARM_OPTIONAL_KEYS),
             f"{w} alarm keys {sorted(a)}")
        need(a.get("severity") in SEVERITIES, f"{w} severity")
        need(a.get("kind") in KINDS, f"{w} kind")
        key = a.get("key", "")
        parts = key.split("/")
        need(parts[:2] == [a.get("rule"), a.get("device")], f"{w} key {key!r} is rule/device/...")
        need(len(parts) < 3 or parts[2] == a.get("quantity"), f"{w} key's quantity")
        # The link opens the alarm's view: web_url + "/#alarm=" + the key, percent-encoded.
        if web_url is not None:
            link = web_url.rstrip("/") + "/#alarm=" + urllib.parse.quote(key, safe="")
            need(n.get("link") == link, f"{w} link {n.get('link')!r}, expected {link!r}")
        title = n.get("title") or ""
        name = a.get("rule_name_zh") if n.get("language") == "zh" else a.get("rule_name")
        need(name and name in title, f"{w} title {title!r} names the rule")
        need(a.get("device_name") and a["device_name"] in title, f"{w} title names the device")
        need((n.get("text") or "").startswith(title), f"{w} text begins with the title")


def check_wecom(doc, problems, mobiles):
    need = lambda c, w: c or problems.append(f"wecom: {w}")  # noqa: E731
    need(doc.get("msgtype") == "markdown", "msgtype markdown")
    need(set(doc) == {"msgtype", "markdown"}, f"keys {sorted(doc)}")
    content = (doc.get("markdown") or {}).get("content")
    need(isinstance(content, str) and content, "markdown.content")
    if isinstance(content, str):
        need(len(content.encode()) <= WECOM_MAX_BYTES, "content within 4096 bytes")
        for m in mobiles:
            need(f"@{m}" in content, f"mobile {m} mentioned")
    return content


def check_dingtalk(doc, problems, mobiles):
    need = lambda c, w: c or problems.append(f"dingtalk: {w}")  # noqa: E731
    need(doc.get("msgtype") == "markdown", "msgtype markdown")
    md = doc.get("markdown") or {}
    need(isinstance(md.get("title"), str) and md["title"], "markdown.title")
    need(isinstance(md.get("text"), str) and md["text"], "markdown.text")
    at = doc.get("at") or {}
    need(at.get("isAtAll") is False, "at.isAtAll false")
    need(sorted(at.get("atMobiles") or []) == sorted(mobiles), f"at.atMobiles {at.get('atMobiles')}")
    # DingTalk shows a mention only when the number is also in the text.
    for m in at.get("atMobiles") or []:
        need(f"@{m}" in md.get("text", ""), f"mobile {m} in the text")
    return md.get("title")


def check_feishu(doc, problems):
    need = lambda c, w: c or problems.append(f"feishu: {w}")  # noqa: E731
    need(doc.get("msg_type") == "post", "msg_type post")
    post = ((doc.get("content") or {}).get("post")) or {}
    need(len(post) == 1 and next(iter(post), None) in ("zh_cn", "en_us"), f"post languages {list(post)}")
    title = None
    for body in post.values():
        title = body.get("title")
        need(isinstance(title, str) and title, "title")
        lines = body.get("content")
        need(isinstance(lines, list) and lines, "content lines")
        for line in lines or []:
            need(isinstance(line, list) and line, "a line is a list of elements")
            for el in line:
                tag = el.get("tag")
                need(tag in ("text", "a", "at"), f"tag {tag!r}")
                if tag in ("text", "a"):
                    need(isinstance(el.get("text"), str), "element text")
                if tag == "a":
                    need(str(el.get("href", "")).startswith("http"), "link href")
    return title


def raw_query(query: str) -> dict:
    """The query's values as sent (not decoded)."""
    out = {}
    for pair in query.split("&"):
        k, _, v = pair.partition("=")
        out[k] = v
    return out


def verify(spec):
    now_s = spec["now_s"]
    web_url = spec.get("web_url")
    secrets = spec["secrets"]
    report = {"accepted": [], "rejected": [], "forgeries": [], "problems": []}
    problems = report["problems"]
    receiver = WebhookReceiver(secrets["webhook"])
    requests = []
    for r in spec["requests"]:
        r = dict(r)
        r["body"] = base64.b64decode(r["body_b64"])
        requests.append(r)
    hooks = [r for r in requests if r["path"] == "/hook"]
    titles = {}

    for r in hooks:
        reason = receiver.verify(r["headers"], r["body"], now_s)
        if reason is None:
            report["accepted"].append(r["headers"]["x-parkguard-delivery"])
            doc = json.loads(r["body"])
            check_document(doc, web_url, problems, "webhook " + doc["id"])
            for n in doc["notices"]:
                titles.setdefault(n["route"], set()).add(n["title"])
                if n["event"] == "raised":
                    report.setdefault("mobiles", sorted(
                        {x["mobile"] for x in n["recipients"] if x["mobile"]}))
        else:
            report["rejected"].append(reason)
            problems.append(f"genuine webhook refused: {reason}")

    # Forgeries, each made from a genuine request, go to a fresh receiver (so that a replay is
    # the only thing the seen-ids set decides).
    def forged(name, headers, body, expect, secret=None):
        fresh = WebhookReceiver(secret or secrets["webhook"])
        got = fresh.verify(headers, body, now_s)
        report["forgeries"].append({"forgery": name, "refused": got})
        if got != expect:
            problems.append(f"forgery {name!r}: got {got!r}, expected {expect!r}")

    if hooks:
        first = hooks[0]
        h, body = first["headers"], first["body"]
        for at in (0, len(body) // 2, len(body) - 1):
            changed = bytearray(body)
            changed[at] ^= 0x01
            forged(f"one byte changed at {at}", h, bytes(changed), "bad signature")
        forged("body with one byte appended", h, body + b" ", "bad signature")
        if len(hooks) > 1:
            # A valid signature, but of different bytes: another genuine request's.
            other = dict(h, **{"x-parkguard-signature": hooks[1]["headers"]["x-parkguard-signature"]})
            forged("another request's valid signature", other, body, "bad signature")
        moved = dict(h, **{"x-parkguard-timestamp": str(int(h["x-parkguard-timestamp"]) + 1)})
        forged("timestamp changed, signature kept", moved, body, "bad signature")
        old = str(int(h["x-parkguard-timestamp"]) - WEBHOOK_TOLERANCE_S - 1)
        resigned = dict(h, **{
            "x-parkguard-timestamp": old,
            "x-parkguard-signature": "sha256=" + hmac.new(
                secrets["webhook"].encode(), old.encode() + b"." + body, hashlib.sha256).hexdigest(),
        })
        forged("correctly signed, 301 s old", resigned, body, "stale timestamp")
        forged("signed with another secret", h, body, "bad signature", secret=secrets["webhook"] + "x")
        unsigned = {k: v for k, v in h.items() if k != "x-parkguard-signature"}
        forged("no signature header", unsigned, body, "missing header")
        # The very same request again, to the receiver that accepted it.
        got = receiver.verify(h, body, now_s)
        report["forgeries"].append({"forgery": "replay of an accepted request", "refused": got})
        if got != "replayed delivery":
            problems.append(f"replay: got {got!r}")

    mobiles = report.get("mobiles", [])
    for r in requests:
        if r["path"] == "/wecom":
            q = urllib.parse.parse_qs(r["query"])
            if q.get("key") != ["wc-key"]:
                problems.append(f"wecom: key {q.get('key')}")
            content = check_wecom(json.loads(r["body"]), problems, mobiles)
            # The robot's message is one of the webhook's notices for the same route.
            if not any(f"**{t}**" in (content or "") for t in titles.get("park-operators", ())):
                problems.append("wecom: no webhook notice's title in bold")
            report["accepted"].append("wecom")
        elif r["path"] == "/dingtalk":
            raw = raw_query(r["query"])
            ts = raw.get("timestamp", "")
            secret = secrets["dingtalk"]
            # string_to_sign = timestamp + "\n" + secret; HmacSHA256 keyed by the secret;
            # Base64; then URL-encoded into &timestamp=..&sign=..
            sign = base64.b64encode(hmac_sha256(secret.encode(), f"{ts}\n{secret}".encode())).decode()
            if not ts.isdigit() or abs(int(ts) // 1000 - now_s) > ROBOT_TOLERANCE_S:
                problems.append(f"dingtalk: timestamp {ts!r} not milliseconds near now")
            elif raw.get("sign") != urllib.parse.quote(sign, safe=""):
                problems.append(f"dingtalk: sign {raw.get('sign')!r}, expected {urllib.parse.quote(sign, safe='')!r}")
            else:
                report["accepted"].append("dingtalk")
            if raw.get("access_token") != "dt-token":
                problems.append("dingtalk: access_token")
            # The same check refuses a shifted timestamp and another secret.
            for name, t2, s2 in (("dingtalk timestamp + 1", str(int(ts or 0) + 1), secret),
                                 ("dingtalk other secret", ts, secret + "x")):
                s = base64.b64encode(hmac_sha256(s2.encode(), f"{t2}\n{s2}".encode())).decode()
                ok = urllib.parse.quote(s, safe="") == raw.get("sign")
                report["forgeries"].append({"forgery": name, "refused": None if ok else "bad sign"})
                if ok:
                    problems.append(f"{name} accepted")
            t = check_dingtalk(json.loads(r["body"]), problems, mobiles)
            if t not in titles.get("park-operators", ()):
                problems.append(f"dingtalk: title {t!r} is no webhook notice's")
        elif r["path"] == "/feishu":
            doc = json.loads(r["body"])
            ts = doc.pop("timestamp", None)
            got = doc.pop("sign", None)
            secret = secrets["feishu"]
            # string_to_sign = timestamp + "\n" + secret is the HMAC key; the message is empty.
            sign = base64.b64encode(hmac_sha256(f"{ts}\n{secret}".encode(), b"")).decode()
            if not isinstance(ts, str) or not ts.isdigit() or abs(int(ts) - now_s) > ROBOT_TOLERANCE_S:
                problems.append(f"feishu: timestamp {ts!r} not seconds near now (as a string)")
            elif not hmac.compare_digest(sign, got or ""):
                problems.append(f"feishu: sign {got!r}, expected {sign!r}")
            else:
                report["accepted"].append("feishu")
            for name, t2, s2 in (("feishu timestamp + 1", str(int(ts or 0) + 1), secret),
                                 ("feishu other secret", ts, secret + "x")):
                s = base64.b64encode(hmac_sha256(f"{t2}\n{s2}".encode(), b"")).decode()
                report["forgeries"].append({"forgery": name, "refused": None if s == got else "bad sign"})
                if s == got:
                    problems.append(f"{name} accepted")
            t = check_feishu(doc, problems)
            if t not in titles.get("park-operators", ()):
                problems.append(f"feishu: title {t!r} is no webhook notice's")
    return report


def golden(folder):
    """The golden bodies of tests/golden/alerts against the same format checks."""
    problems = []
    read = lambda n: json.load(open(os.path.join(folder, n), encoding="utf-8"))  # noqa: E731
    web_url = "https://gw.example:8443/"
    for name in ("webhook.json", "webhook-en.json"):
        check_document(read(name), web_url, problems, name)
    zh = read("webhook.json")["notices"][0]
    mobiles = sorted({r["mobile"] for r in zh["recipients"] if r["mobile"]})
    content = check_wecom(read("wecom.json"), problems, mobiles)
    if f"**{zh['title']}**" not in (content or ""):
        problems.append("wecom.json: the title in bold")
    if check_dingtalk(read("dingtalk.json"), problems, mobiles) != zh["title"]:
        problems.append("dingtalk.json: title")
    if check_feishu(read("feishu.json"), problems) != zh["title"]:
        problems.append("feishu.json: title")
    return {"problems": problems}


def main():
    if sys.argv[1] == "--golden":
        report = golden(sys.argv[2])
    else:
        with open(sys.argv[1], encoding="utf-8") as f:
            report = verify(json.load(f))
    json.dump(report, sys.stdout, ensure_ascii=False, indent=1)
    sys.exit(1 if report["problems"] else 0)


if __name__ == "__main__":
    main()
