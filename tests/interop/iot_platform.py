#!/usr/bin/env python3
"""A stand-in for two carrier IoT platforms parkguard talks to: China Telecom CTWing (AEP) and
China Mobile OneNET (NB-IoT suite push, OneNET Studio push and application API).

Written from the platforms' published descriptions only, with Python's standard library
(hmac, hashlib, base64, urllib, http.server, http.client, json): nothing of parkguard's code
is used, so parkguard's request signing (downlink) and push verification (uplink) are checked
against a second implementation.

    iot_platform.py --listen HOST:PORT --ctwing-app-key K --ctwing-secret S
                    --ctwing-master-key M --onenet-token T --onenet-product-id P
                    --onenet-access-key B64 [--max-skew-s 900] [--hang-s 60]
    iot_platform.py --self-test [DIR]   known-answer vectors in DIR (default
                                        tests/golden/platforms), then an in-process round
                                        trip and the CLI

One HTTP server (PORT 0: the system picks one) plays the platforms' APIs, the gateway under
test being pointed at it with an endpoint override such as http://127.0.0.1:PORT:

    POST /aep_device_command/command        CTWing CreateCommand, version 20190712225145
    POST /thingmodel/call-service           OneNET Studio, 设备服务调用
    POST /thingmodel/set-device-property    OneNET Studio, 设置设备属性

Every request is verified and printed as one JSON line on stdout. JSON-line commands on stdin
make the program act as the platforms' push side (CTWing subscription push, OneNET HTTP push
and URL verification) towards the gateway. The protocol is in tests/golden/platforms/README.md
("The program").

Sources (as the search tool returned them; every rule below names the one it comes from):

  [CT-SIGN]  CTWing API gateway request signing, CTWing's published Java sample (the
             sign(param, timestamp, application, secret, body) method with its GET and POST
             examples), as reproduced in the public repository 605408609/street_light_yancheng,
             dlm/src/main/java/com/exc/street/light/dlm/utils/CTWingApi.java
             (third-party copy; read, not copied)
  [CT-CMD]   CTWing 使能平台 API文档 "AEP指令下发" (CreateCommand, 版本号 20190712225145,
             请求路径 /command under ag-api.ctwing.cn/aep_device_command, MasterKey in HEAD,
             body, 返回结果示例, 错误码 table, CancelCommand 异常返回示例 code -1), as stored in
             the code index (a CTWing API SDK document; no URL was returned with it)
  [CT-PUSH]  CTWing 订阅推送, https://www.ctwing.cn/dyts/103#see as summarised in
             https://geekdaxue.co/read/softdev@iot/iq3b9f (POST JSON to the subscription URL,
             answer HTTP 200, otherwise the platform retries at most 3 times); the push bodies
             (dataReport with payload.APPdata, deviceOnlineOfflineReport with eventType 1/0,
             eventReport with eventType/eventContent) as logged by public receivers in the code
             index
  [ON-PUSH]  OneNET NB-IoT suite, HTTP推送 开发指南,
             https://open.iot.10086.cn/doc/nb-iot/book/manual/httppush/develop-manual.html
             (English: https://onenet.hk.chinamobile.com/suben/doc/nb-iot/book/manual/httppush/develop-manual.html;
             the same text for the older platform:
             https://open.iot.10086.cn/doc/book/application-develop/httppush/develop-manual.html)
  [ON-SDK]   OneNET's push receiver SDK (Java Util.checkSignature: MD5 over token bytes,
             8 nonce bytes, msg bytes; Base64; compared with msg_signature), as copied into
             public code (code index)
  [ON-STUDIO] OneNET Studio 数据推送,
             https://open.iot.10086.cn/doc/iot_platform/book/application-develop/push/http_push.html
             (push address takes GET for verification and POST for data; Token; plaintext or
             AES mode), and OneNET Studio "消息源格式" (device thing-model data: messageType
             notify, notifyType property/event, data.params.{identifier:{value,time}}; lifeCycle),
             as stored in the code index
  [ON-TOKEN] OneNET token 算法,
             https://open.iot.10086.cn/doc/multiprotocol/book/manual/auth/token.html,
             https://onenet.hk.chinamobile.com/doc/mqtt/book/manual/auth/token.html,
             https://onenet.hk.chinamobile.com/suben/doc/multiprotocol/book/manual/auth/token.html,
             https://open.iot.10086.cn/doc/book/other-service/vcs/API/authentication.html
  [ON-API]   OneNET Studio application API on iot-api.heclouds.com (POST /thingmodel/call-service
             with {product_id, device_name, identifier, params}, /thingmodel/set-device-property
             with {product_id, device_name, params}, answer {code, msg, request_id, data}, code 0
             = success, header authorization: version=2022-05-01&res=products%2F{pid}&...),
             as used by public clients in the code index; no official API page was stored
  [ON-ERR]   OneNET NB-IoT API error codes,
             https://onenet.hk.chinamobile.com/suben/doc/nb-iot/book/application-develop/Error_codes.html
             (1 auth failed, 2001 device not online); for iot-api.heclouds.com the answers
             {"code":10403,"msg":"authentication failed:invalid authorization"} and code 10415
             (a required parameter missing) as recorded by public clients (code index)
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import queue
import random
import string
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- CTWing API gateway signature ([CT-SIGN]) ------------------------------------------------
#
# message  = "application:" + appKey + "\n"
#          + "timestamp:" + timestamp + "\n"
#          + for each parameter, names sorted (Java TreeSet<String>: UTF-16 code-unit order, so
#            upper case before lower case): name + ":" + (value, "" for null) + "\n"
#            where the parameters are the MasterKey header (when the API takes one: "如果参数中有
#            MasterKey，则添加来参与签名计算") and every URL query parameter (decoded values;
#            a repeated name keeps its last value, as Map.put does)
#          + when the body is non-empty: the body bytes + "\n"
# signature = Base64(HMAC-SHA1(key = UTF-8 of the application secret, message))
# Headers: application, timestamp (ms since epoch, decimal), version, MasterKey, signature,
# Content-Type: application/json; charset=UTF-8 ([CT-SIGN]; [CT-CMD] 公共入参).

CTWING_COMMAND_PATH = "/aep_device_command/command"   # [CT-CMD] aep_device_command + /command
CTWING_COMMAND_VERSION = "20190712225145"             # [CT-CMD] CreateCommand 版本号
CTWING_DEFAULT_SKEW_S = 900                           # the brief's 15 minutes (not found published)
CTWING_TTL_MAX = 864000                               # [CT-CMD] ttl 取值范围 0-864000
CTWING_TTL_DEFAULT = 7200                             # [CT-CMD] 不携带则默认值 7200


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def java_string_order(name: str):
    """Sort key equal to Java's String.compareTo (UTF-16 code units), as TreeSet uses."""
    return name.encode("utf-16-be")


def ctwing_string_to_sign(app_key: str, timestamp, params: dict, body) -> bytes:
    """[CT-SIGN] the bytes HMAC-SHA1 runs over. body: bytes, str or None."""
    text = "application:" + app_key + "\n" + "timestamp:" + str(timestamp) + "\n"
    for name in sorted(params, key=java_string_order):
        value = params[name]
        text += name + ":" + ("" if value is None else str(value)) + "\n"
    out = text.encode("utf-8")
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body:                                   # [CT-SIGN] "if (body != null && body.length > 0)"
        out += body + b"\n"
    return out


def ctwing_digest(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha1).digest()


def ctwing_signature(app_key, secret, timestamp, params, body) -> str:
    """[CT-SIGN] Base64(HMAC-SHA1(secret, string to sign))."""
    return b64(ctwing_digest(secret, ctwing_string_to_sign(app_key, timestamp, params, body)))


def ctwing_sign_params(query: str, master_key) -> dict:
    """The parameters that take part: URL query parameters ([CT-SIGN] GET example, decoded as
    URIBuilder.getQueryParams does, '+' read as a space) and the MasterKey header."""
    params = {}
    for name, value in urllib.parse.parse_qsl(query or "", keep_blank_values=True):
        params[name] = value
    if master_key is not None:
        params["MasterKey"] = master_key
    return params


# --- OneNET push signatures ([ON-PUSH], [ON-SDK], [ON-STUDIO]) --------------------------------
#
# URL verification: GET url?msg=xxx&nonce=xxx&signature=xxx; the application computes
#   Base64(MD5(token + nonce + msg)), compares it with the URL-decoded signature and answers the
#   msg value as the body ([ON-PUSH] URL验证).
# Data push, NB-IoT suite: POST {"msg": <object or array>, "msg_signature": "...", "nonce": "..."}
#   with msg_signature = Base64(MD5(token + nonce + msg)), msg being the JSON text of the msg
#   member ([ON-PUSH] msg_signature 消息摘要; [ON-SDK] token bytes, 8 nonce bytes, msg bytes).
# Data push, Studio: POST {"msg": "<JSON document as a string>", "signature": "...",
#   "nonce": "...", "time": <ms>, "id": "..."}, signature = Base64(MD5(token + nonce + msg)).

ONENET_NONCE_LEN = 8    # [ON-SDK]: "token长度 + 8B随机字符串长度 + 消息长度"
NONCE_ALPHABET = string.ascii_letters + string.digits


def onenet_push_string(token: str, nonce: str, msg: str) -> str:
    return token + nonce + msg


def onenet_push_digest(token: str, nonce: str, msg: str) -> bytes:
    return hashlib.md5(onenet_push_string(token, nonce, msg).encode("utf-8")).digest()


def onenet_push_signature(token: str, nonce: str, msg: str) -> str:
    """[ON-PUSH] Base64(MD5(token + nonce + msg)), UTF-8."""
    return b64(onenet_push_digest(token, nonce, msg))


def random_nonce(n=ONENET_NONCE_LEN) -> str:
    return "".join(random.SystemRandom().choice(NONCE_ALPHABET) for _ in range(n))


def compact_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def onenet_nbiot_envelope(token, msg, nonce, msg_text=None):
    """[ON-PUSH] the exact body text and the signature. msg_text: the msg member's JSON text as
    sent (default: compact JSON in the given key order)."""
    text = compact_json(msg) if msg_text is None else msg_text
    sig = onenet_push_signature(token, nonce, text)
    body = ('{"msg":' + text + ',"msg_signature":' + compact_json(sig) + ',"nonce":'
            + compact_json(nonce) + "}")
    return body, sig, text


def onenet_studio_envelope(token, msg_string, nonce, at_ms, msg_id):
    """[ON-STUDIO] msg is a string holding a JSON document; signed as that string."""
    sig = onenet_push_signature(token, nonce, msg_string)
    doc = {"msg": msg_string, "signature": sig, "nonce": nonce, "time": at_ms, "id": msg_id}
    return compact_json(doc), sig


# --- OneNET token ([ON-TOKEN]) ----------------------------------------------------------------
#
# StringForSignature = et + "\n" + method + "\n" + res + "\n" + version (values only, in the
#   order et, method, res, version; res not URL-encoded here)
# sign = Base64(HMAC-<method>(key = Base64-decode(accessKey), UTF-8 of StringForSignature)),
#   method one of md5, sha1, sha256
# token = version=..&res=..&et=..&method=..&sign=.., each value URL-encoded
#   ("token中key=value的形式的value部分需要经过URL编码"); res for API access: products/{pid}.

ONENET_METHODS = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256}
# 2022-05-01: the version the Studio application API clients use ([ON-API]); 2018-10-31: the
# only version the token page lists ([ON-TOKEN]). Both are taken.
ONENET_VERSIONS = ("2022-05-01", "2018-10-31")


def onenet_token_string(et, method, res, version) -> str:
    return str(et) + "\n" + method + "\n" + res + "\n" + version


def onenet_token_digest(access_key_b64: str, method: str, message: str) -> bytes:
    key = base64.b64decode(access_key_b64)
    return hmac.new(key, message.encode("utf-8"), ONENET_METHODS[method]).digest()


def onenet_token_sign(access_key_b64, version, res, et, method) -> str:
    return b64(onenet_token_digest(access_key_b64, method,
                                   onenet_token_string(et, method, res, version)))


def onenet_authorization(access_key_b64, version, res, et, method) -> str:
    """[ON-TOKEN] the header value, values URL-encoded (so '/' is %2F, '+' %2B, '=' %3D)."""
    sign = onenet_token_sign(access_key_b64, version, res, et, method)
    q = lambda v: urllib.parse.quote(str(v), safe="")
    return (f"version={q(version)}&res={q(res)}&et={q(et)}&method={q(method)}"
            f"&sign={q(sign)}")


def parse_authorization(value: str) -> dict:
    """Split on '&' and the first '=', URL-decode each value as a Java URLDecoder would ('+' is
    a space: a sign whose '+' was not encoded does not verify)."""
    out = {}
    for part in value.split("&"):
        if not part:
            continue
        name, _, raw = part.partition("=")
        out[name.strip()] = urllib.parse.unquote_plus(raw)
    return out


# --- the platforms' API side -------------------------------------------------------------------

class Refusal(Exception):
    """reason: stable slug (README "Reasons"); status, doc: the HTTP answer."""

    def __init__(self, reason, status, doc, detail=None):
        super().__init__(detail or reason)
        self.reason = reason
        self.status = status
        self.doc = doc
        self.detail = detail or reason


HANG = object()

# [CT-CMD] 错误码 table: 400 Bad request, 401 Unauthorized, 403 Forbidden, 404 Not found.
# The same number is put in the body's code so a client that only reads code also fails.
CTWING_ERRORS = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
}
# "answer error": [CT-CMD] CancelCommand 异常返回示例 {"code": -1, "msg": "...", "result": null}
# (the only published business failure in the command API document).
CTWING_BUSINESS_ERROR = {"code": -1, "msg": "指令下发失败，服务端响应错误", "result": None}

# [ON-ERR]: 10403 as iot-api.heclouds.com answers a bad authorization; 10415 for a missing or
# malformed parameter; "answer error" uses 2001 "device not online" ([ON-ERR] NB-IoT table:
# not confirmed as a Studio API code).
ONENET_AUTH_FAILED = (10403, "authentication failed:invalid authorization")
ONENET_BAD_PARAMS = (10415, "invalid parameter")
ONENET_BUSINESS_ERROR = (2001, "device not online")


def ctwing_error(status, reason, detail):
    return Refusal(reason, status, {"code": status, "msg": CTWING_ERRORS[status], "result": None},
                   detail)


def onenet_error(pair, reason, detail):
    code, msg = pair
    return Refusal(reason, 200, {"code": code, "msg": msg, "request_id": uuid.uuid4().hex,
                                 "data": None}, detail)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def print_event(event):
    with _print_lock:
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()


_print_lock = threading.Lock()


class Platform:
    """Verifies and answers API requests; knows nothing about sockets."""

    def __init__(self, ctwing_app_key, ctwing_secret, ctwing_master_key, onenet_token,
                 onenet_product_id, onenet_access_key, max_skew_s=CTWING_DEFAULT_SKEW_S,
                 hang_s=60.0, emit=None, clock=time.time):
        self.ct_app_key = ctwing_app_key
        self.ct_secret = ctwing_secret
        self.ct_master_key = ctwing_master_key
        self.on_token = onenet_token
        self.on_pid = onenet_product_id
        self.on_key = onenet_access_key
        self.max_skew_s = max_skew_s
        self.hang_s = hang_s
        self.emit = emit or print_event
        self.clock = clock
        self.mode = {"ctwing": "ok", "onenet": "ok"}
        self.lock = threading.Lock()
        self.command_seq = 1000

    def set_mode(self, platform, mode):
        if platform not in self.mode:
            raise ValueError(f"unknown platform {platform!r}")
        if mode not in ("ok", "error", "hang"):
            raise ValueError(f"unknown mode {mode!r}")
        with self.lock:
            self.mode[platform] = mode

    def handle(self, method, target, headers, body: bytes):
        """One request -> (status, [(header, value)], body bytes) or HANG.
        headers: lower-case name -> value."""
        split = urllib.parse.urlsplit(target)
        path, query = split.path, split.query
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            parsed = None
        event = {"event": "command", "platform": None, "path": path, "method": method,
                 "query": query, "valid": False, "reason": None, "detail": None,
                 "headers": headers, "body": parsed, "answer": None}
        if path == CTWING_COMMAND_PATH:
            event["platform"] = "ctwing"
        elif path in ("/thingmodel/call-service", "/thingmodel/set-device-property"):
            event["platform"] = "onenet"
        else:
            event["event"] = "unknown_request"
            event["reason"] = "unknown_path"
            self.emit(event)
            return 404, [("Content-Type", "text/plain")], b"not found\n"
        platform = event["platform"]
        extra = []
        try:
            if platform == "ctwing":
                extra.append(("x-ag-timestamp", str(int(self.clock() * 1000))))  # [CT-SIGN]
                doc = self.ctwing(method, query, headers, body, parsed)
            else:
                doc = self.onenet(method, path, headers, body, parsed)
            event["valid"] = True
            status = 200
        except Refusal as r:
            event["reason"], event["detail"] = r.reason, r.detail
            status, doc = r.status, r.doc
        except Exception as e:  # a bug here must not pass for the gateway's fault silently
            event["reason"], event["detail"] = "platform_error", f"{type(e).__name__}: {e}"
            status, doc = 500, {"code": 500, "msg": "Internal Error"}
        with self.lock:
            mode = self.mode[platform]
        if mode == "hang":
            event["answer"] = {"status": None, "mode": "hang"}
            self.emit(event)
            return HANG
        if mode == "error" and event["valid"]:
            if platform == "ctwing":
                status, doc = 200, dict(CTWING_BUSINESS_ERROR)
            else:
                code, msg = ONENET_BUSINESS_ERROR
                status, doc = 200, {"code": code, "msg": msg, "request_id": uuid.uuid4().hex,
                                    "data": None}
        event["answer"] = {"status": status, "code": doc.get("code"), "mode": mode}
        self.emit(event)
        out = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        return status, [("Content-Type", "application/json;charset=UTF-8")] + extra, out

    # -- CTWing ([CT-SIGN], [CT-CMD]) --

    def ctwing(self, method, query, headers, body, parsed):
        if method != "POST":                                    # [CT-CMD] 请求方法：POST
            raise ctwing_error(404, "wrong_method", f"{method} is not CreateCommand (POST)")
        for name in ("application", "timestamp", "signature", "version", "masterkey"):
            if not headers.get(name):
                # [CT-CMD] 公共入参 (application, signature, timestamp, version) and the
                # request parameter MasterKey (HEAD, 必填 true)
                raise ctwing_error(401 if name != "version" else 400, "missing_header",
                                   f"header {name} missing or empty")
        if headers["application"] != self.ct_app_key:
            raise ctwing_error(401, "unknown_app_key",
                               f"application {headers['application']!r} is not the app key")
        ts_text = headers["timestamp"]
        if not ts_text.isdigit():
            raise ctwing_error(401, "bad_timestamp",
                               f"timestamp {ts_text!r} is not ms since epoch in decimal")
        skew_ms = abs(int(self.clock() * 1000) - int(ts_text))
        if skew_ms > self.max_skew_s * 1000:
            raise ctwing_error(401, "timestamp_skew",
                               f"timestamp off by {skew_ms} ms (> {self.max_skew_s} s)")
        master_key = headers["masterkey"]
        params = ctwing_sign_params(query, master_key)
        expected = ctwing_signature(self.ct_app_key, self.ct_secret, ts_text, params, body)
        if not hmac.compare_digest(expected.encode(), headers["signature"].encode()):
            sts = ctwing_string_to_sign(self.ct_app_key, ts_text, params, body)
            raise ctwing_error(401, "bad_signature",
                               "signature does not verify; expected string to sign "
                               + json.dumps(sts.decode("utf-8", "replace"), ensure_ascii=False))
        if master_key != self.ct_master_key:
            raise ctwing_error(403, "wrong_master_key", "MasterKey is not the product's")
        if headers["version"] != CTWING_COMMAND_VERSION:
            raise ctwing_error(404, "wrong_version",
                               f"version {headers['version']!r}, CreateCommand is "
                               f"{CTWING_COMMAND_VERSION}")
        ctype = headers.get("content-type", "")
        if not ctype.lower().startswith("application/json"):  # [CT-CMD] 数据类型 json
            raise ctwing_error(400, "bad_content_type", f"Content-Type {ctype!r}")
        self.ctwing_body(parsed)
        with self.lock:
            self.command_seq += 1
            command_id = str(self.command_seq)
        # [CT-CMD] 返回结果示例
        return {"code": 0, "msg": "ok", "result": {
            "commandId": command_id,
            "command": compact_json(parsed["content"]),
            "commandStatus": "指令已保存",
            "deviceId": parsed.get("deviceId"),
            "productId": parsed["productId"],
            "createBy": parsed["operator"],
            "createTime": int(self.clock() * 1000)}}

    @staticmethod
    def ctwing_body(doc):
        """[CT-CMD] 请求BODY: content, deviceId, operator, productId, ttl, deviceGroupId, level."""
        def bad(why):
            return ctwing_error(400, "bad_body", why)
        if not isinstance(doc, dict):
            raise bad("body is not a JSON object")
        if not isinstance(doc.get("operator"), str) or not doc["operator"]:
            raise bad("operator (操作者，必填) missing or not a string")
        if not is_int(doc.get("productId")):
            raise bad("productId (产品ID，必填) missing or not an integer")
        level = doc.get("level", 1)
        if level not in (1, 2, 3) or not is_int(level):
            raise bad(f"level {level!r} is not 1, 2 or 3")
        if level in (1, 2) and (not isinstance(doc.get("deviceId"), str) or not doc["deviceId"]):
            raise bad("deviceId missing (必填 for a device-level command)")
        if "ttl" in doc and (not is_int(doc["ttl"]) or not 0 <= doc["ttl"] <= CTWING_TTL_MAX):
            raise bad(f"ttl {doc['ttl']!r} outside 0-{CTWING_TTL_MAX}")
        content = doc.get("content")
        if not isinstance(content, dict):
            raise bad("content (指令内容，必填，格式为Json) missing")
        if "serviceIdentifier" in content:          # 非透传: params + serviceIdentifier
            if not isinstance(content["serviceIdentifier"], str) or not content["serviceIdentifier"]:
                raise bad("content.serviceIdentifier is not a string")
            if not isinstance(content.get("params"), dict):
                raise bad("content.params is not an object")
        elif "dataType" in content:                 # TCP/LWM2M 透传: dataType 1 string, 2 hex
            if content["dataType"] not in (1, 2) or not is_int(content["dataType"]):
                raise bad(f"content.dataType {content['dataType']!r} is not 1 or 2")
            payload = content.get("payload")
            if not isinstance(payload, str):
                raise bad("content.payload is not a string")
            if content["dataType"] == 2:
                if len(payload) % 2 or any(c not in string.hexdigits for c in payload):
                    raise bad(f"content.payload {payload!r} is not an even-length hex string")
        elif isinstance(content.get("payload"), dict):  # MQTT 透传: payload JSON
            pass
        else:
            raise bad("content is neither {dataType, payload}, {serviceIdentifier, params} "
                      "nor {payload: {...}}")

    # -- OneNET Studio API ([ON-TOKEN], [ON-API]) --

    def onenet(self, method, path, headers, body, parsed):
        if method != "POST":
            raise onenet_error(ONENET_BAD_PARAMS, "wrong_method", f"{method} {path}")
        auth = headers.get("authorization")
        if not auth:
            raise onenet_error(ONENET_AUTH_FAILED, "missing_header", "no authorization header")
        fields = parse_authorization(auth)
        for name in ("version", "res", "et", "method", "sign"):
            if not fields.get(name):
                raise onenet_error(ONENET_AUTH_FAILED, "bad_token",
                                   f"authorization lacks {name}")
        if fields["version"] not in ONENET_VERSIONS:
            raise onenet_error(ONENET_AUTH_FAILED, "bad_token",
                               f"version {fields['version']!r} not one of {ONENET_VERSIONS}")
        if fields["method"] not in ONENET_METHODS:      # [ON-TOKEN] md5, sha1, sha256
            raise onenet_error(ONENET_AUTH_FAILED, "bad_token",
                               f"method {fields['method']!r}")
        if not fields["et"].isdigit():
            raise onenet_error(ONENET_AUTH_FAILED, "bad_token", f"et {fields['et']!r}")
        expected = onenet_token_sign(self.on_key, fields["version"], fields["res"],
                                     fields["et"], fields["method"])
        if not hmac.compare_digest(expected.encode(), fields["sign"].encode()):
            sts = onenet_token_string(fields["et"], fields["method"], fields["res"],
                                      fields["version"])
            raise onenet_error(ONENET_AUTH_FAILED, "bad_signature",
                               f"sign {fields['sign']!r} does not verify over "
                               f"{json.dumps(sts)} (URL-decoded as a Java server would)")
        # [ON-TOKEN] "当一次访问参数中的et时间小于当前时间时 ... 拒绝该访问"
        if int(fields["et"]) < int(self.clock()):
            raise onenet_error(ONENET_AUTH_FAILED, "token_expired",
                               f"et {fields['et']} is in the past")
        if fields["res"] != f"products/{self.on_pid}":  # [ON-TOKEN] API访问: products/{pid}
            raise onenet_error(ONENET_AUTH_FAILED, "wrong_res",
                               f"res {fields['res']!r}, expected products/{self.on_pid}")
        doc = parsed
        if not isinstance(doc, dict):
            raise onenet_error(ONENET_BAD_PARAMS, "bad_body", "body is not a JSON object")
        if doc.get("product_id") != self.on_pid:
            if not isinstance(doc.get("product_id"), str):
                raise onenet_error(ONENET_BAD_PARAMS, "bad_body", "product_id not a string")
            raise onenet_error(ONENET_AUTH_FAILED, "wrong_product",
                               f"product_id {doc['product_id']!r} is not the token's product")
        if not isinstance(doc.get("device_name"), str) or not doc["device_name"]:
            raise onenet_error(ONENET_BAD_PARAMS, "bad_body", "device_name missing")
        if path.endswith("call-service"):
            if not isinstance(doc.get("identifier"), str) or not doc["identifier"]:
                raise onenet_error(ONENET_BAD_PARAMS, "bad_body", "identifier missing")
        if not isinstance(doc.get("params"), dict):
            raise onenet_error(ONENET_BAD_PARAMS, "bad_body", "params is not an object")
        return {"code": 0, "data": {}, "msg": "succ", "request_id": uuid.uuid4().hex}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    platform = None            # set on the subclass made by make_server

    def log_message(self, fmt, *args):
        pass

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        result = self.platform.handle(self.command, self.path, headers, body)
        if result is HANG:
            deadline = time.time() + self.platform.hang_s
            while time.time() < deadline and not getattr(self.server, "closing", False):
                time.sleep(0.05)
            self.close_connection = True
            return
        status, hdrs, out = result
        self.send_response(status)
        for k, v in hdrs:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any


def make_server(host, port, platform):
    handler = type("BoundHandler", (Handler,), {"platform": platform})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.closing = False
    return server


# --- the platforms' push side ------------------------------------------------------------------

def http_send(url, method, headers, body: bytes, timeout=10.0):
    """Send exactly this; -> (status, answer text). A connection error is status 0."""
    split = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if split.scheme == "https" else http.client.HTTPConnection
    target = (split.path or "/") + ("?" + split.query if split.query else "")
    try:
        conn = cls(split.hostname, split.port, timeout=timeout)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            names = {k.lower() for k in headers}
            for k, v in headers.items():
                conn.putheader(k, v)
            if "content-length" not in names and (body or method in ("POST", "PUT")):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        return 0, f"{type(e).__name__}: {e}"


def add_query(url, name, value):
    split = urllib.parse.urlsplit(url)
    pair = urllib.parse.urlencode({name: value})
    query = split.query + "&" + pair if split.query else pair
    return urllib.parse.urlunsplit(split._replace(query=query))


def ctwing_push_body(message: dict, clock=time.time) -> dict:
    """[CT-PUSH] the envelope, key order as the platform's pushes show it; fields of message win.
    "bytes_hex" becomes payload.APPdata (Base64 of the device's bytes)."""
    msg = dict(message)
    mtype = msg.get("messageType", "dataReport")
    now_ms = int(clock() * 1000)
    if "bytes_hex" in msg:
        msg["payload"] = {"APPdata": b64(bytes.fromhex(msg.pop("bytes_hex")))}
    if mtype == "dataReport":
        base = {"upPacketSN": -1, "upDataSN": -1, "topic": "v1/up/ad", "timestamp": now_ms,
                "tenantId": "2000000001", "serviceId": "", "protocol": "lwm2m",
                "productId": "", "payload": {}, "messageType": "dataReport", "deviceType": "",
                "deviceId": "", "assocAssetId": "", "IMSI": "undefined", "IMEI": ""}
    elif mtype == "eventReport":
        base = {"timestamp": now_ms, "tenantId": "2000000001", "serviceId": "",
                "protocol": "lwm2m", "productId": "", "messageType": "eventReport",
                "eventType": 1, "eventContent": {}, "deviceSn": "", "deviceId": "",
                "IMSI": "undefined", "IMEI": ""}
    elif mtype == "deviceOnlineOfflineReport":
        base = {"timestamp": now_ms, "tenantId": "2000000001", "protocol": "lwm2m",
                "productId": "", "messageType": "deviceOnlineOfflineReport",
                "iccid": "undefined", "eventType": 1, "deviceId": ""}
    else:
        base = {"timestamp": now_ms, "tenantId": "2000000001", "protocol": "lwm2m",
                "productId": "", "messageType": mtype, "deviceId": ""}
    for k, v in msg.items():
        base[k] = v
    return base


def tamper_value(value):
    """Change a message so that it no longer matches its signature."""
    if isinstance(value, dict):
        value = dict(value)
        if "value" in value:
            value["value"] = tamper_value(value["value"])
        elif isinstance(value.get("data"), (dict, list)):
            value["data"] = tamper_value(value["data"])
        elif isinstance(value.get("params"), (dict, list)):
            value["params"] = tamper_value(value["params"])
        else:
            value["tampered"] = True
        return value
    if isinstance(value, list):
        return [tamper_value(value[0])] + value[1:] if value else ["tampered"]
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return "tampered"


class Pusher:
    """The stdin commands: pushes and URL verification towards the gateway."""

    def __init__(self, platform: Platform, emit=None, timeout=10.0, clock=time.time):
        self.platform = platform
        self.emit = emit or print_event
        self.timeout = timeout
        self.clock = clock

    def run(self, cmd: dict):
        name = cmd.get("cmd")
        if name == "push":
            if cmd.get("platform") == "ctwing":
                self.push_ctwing(cmd)
            elif cmd.get("platform") == "onenet":
                self.push_onenet(cmd)
            else:
                raise ValueError(f"push: unknown platform {cmd.get('platform')!r}")
        elif name == "verify_url":
            self.verify_url(cmd)
        elif name == "raw":
            self.raw(cmd)
        elif name == "answer":
            self.platform.set_mode(cmd.get("platform"), cmd.get("mode"))
        else:
            raise ValueError(f"unknown cmd {name!r}")

    def _post_json(self, platform, url, body_text, sent):
        status, answer = http_send(url, "POST", {"Content-Type": "application/json"},
                                   body_text.encode("utf-8"), self.timeout)
        event = {"event": "pushed", "platform": platform, "url": url, "status": status,
                 "body": answer, "sent": sent}
        self.emit(event)
        return event

    def push_ctwing(self, cmd):
        url = cmd["url"]
        message = cmd.get("message") or {}
        if not isinstance(message, dict):
            raise ValueError("message must be an object")
        body = ctwing_push_body(message, self.clock)
        if cmd.get("token") is not None:     # the gateway's secret in the subscription URL
            url = add_query(url, "token", cmd["token"])
        return self._post_json("ctwing", url, compact_json(body), body)

    def push_onenet(self, cmd):
        token = self.platform.on_token
        tamper = cmd.get("tamper")
        if tamper not in (None, "signature", "body"):
            raise ValueError(f"tamper {tamper!r}")
        style = cmd.get("style", "nbiot")
        nonce = random_nonce()
        sign_token = token if tamper != "signature" else token + "-wrong"
        if style == "nbiot":
            msg = cmd.get("msg")
            if not isinstance(msg, (dict, list)):
                raise ValueError("nbiot msg must be an object or an array")
            body, sig, text = onenet_nbiot_envelope(sign_token, msg, nonce, cmd.get("msg_text"))
            if tamper == "body":
                changed = compact_json(tamper_value(json.loads(text)))
                body = ('{"msg":' + changed + ',"msg_signature":' + compact_json(sig)
                        + ',"nonce":' + compact_json(nonce) + "}")
        elif style == "studio":
            msg = cmd.get("msg")
            msg_string = msg if isinstance(msg, str) else compact_json(msg)
            at_ms = int(self.clock() * 1000)
            msg_id = uuid.uuid4().hex
            body, sig = onenet_studio_envelope(sign_token, msg_string, nonce, at_ms, msg_id)
            if tamper == "body":
                changed = compact_json(tamper_value(json.loads(msg_string)))
                body = compact_json({"msg": changed, "signature": sig, "nonce": nonce,
                                     "time": at_ms, "id": msg_id})
        else:
            raise ValueError(f"style {style!r}")
        return self._post_json("onenet", cmd["url"], body, json.loads(body))

    def verify_url(self, cmd):
        if cmd.get("platform", "onenet") != "onenet":
            raise ValueError("verify_url is OneNET's")
        tamper = cmd.get("tamper")
        if tamper not in (None, "signature"):
            raise ValueError(f"tamper {tamper!r}")
        token = self.platform.on_token + ("-wrong" if tamper else "")
        msg, nonce = random_nonce(16), random_nonce()
        sig = onenet_push_signature(token, nonce, msg)
        url = cmd["url"]
        for k, v in (("msg", msg), ("nonce", nonce), ("signature", sig)):
            url = add_query(url, k, v)       # [ON-PUSH] url?msg=xxx&nonce=xxx&signature=xxx
        status, answer = http_send(url, "GET", {}, b"", self.timeout)
        event = {"event": "url_verified", "url": url, "status": status, "body": answer,
                 "expected": msg, "ok": status == 200 and answer == msg}
        self.emit(event)
        return event

    def raw(self, cmd):
        method = cmd.get("method", "POST")
        body = cmd.get("body") or ""
        status, answer = http_send(cmd["url"], method, dict(cmd.get("headers") or {}),
                                   body.encode("utf-8"), self.timeout)
        event = {"event": "pushed", "platform": "raw", "url": cmd["url"], "status": status,
                 "body": answer, "sent": body}
        self.emit(event)
        return event


# --- the program -------------------------------------------------------------------------------

def serve(args):
    host, _, port = args.listen.rpartition(":")
    platform = Platform(args.ctwing_app_key, args.ctwing_secret, args.ctwing_master_key,
                        args.onenet_token, args.onenet_product_id, args.onenet_access_key,
                        max_skew_s=args.max_skew_s, hang_s=args.hang_s)
    server = make_server(host or "127.0.0.1", int(port), platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print_event({"event": "listening", "port": server.server_address[1]})
    pusher = Pusher(platform)
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            name = None
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict):
                    raise ValueError("a command is a JSON object")
                name = cmd.get("cmd")
                if name == "quit":
                    print_event({"event": "command_ok", "cmd": "quit"})
                    break
                pusher.run(cmd)
                print_event({"event": "command_ok", "cmd": name})
            except Exception as e:
                print_event({"event": "command_failed", "cmd": name,
                             "error": f"{type(e).__name__}: {e}"})
    finally:
        server.closing = True
        server.shutdown()
        server.server_close()
    return 0


# --- self-test ---------------------------------------------------------------------------------

class Check:
    def __init__(self):
        self.failures = []
        self.count = 0

    def __call__(self, cond, what):
        self.count += 1
        if not cond:
            self.failures.append(what)
            print(f"FAIL: {what}", file=sys.stderr)


def check_vectors(directory, check):
    with open(os.path.join(directory, "vectors.json"), encoding="utf-8") as f:
        vectors = json.load(f)
    kinds = set()
    for v in vectors:
        name, kind, inp = v["name"], v["kind"], v["inputs"]
        kinds.add(kind)
        if kind == "ctwing_api":
            params = ctwing_sign_params(inp.get("query", ""), inp.get("master_key"))
            sts = ctwing_string_to_sign(inp["app_key"], inp["timestamp"], params, inp.get("body"))
            digest = ctwing_digest(inp["secret"], sts)
            check(sts.decode("utf-8") == v["string_to_sign"], f"{name}: string to sign")
        elif kind in ("onenet_push", "onenet_url"):
            sts = onenet_push_string(inp["token"], inp["nonce"], inp["msg"])
            digest = onenet_push_digest(inp["token"], inp["nonce"], inp["msg"])
            check(sts == v["string_to_sign"], f"{name}: string to sign")
            if "body" in v:      # the envelope holds the msg text and the signature
                doc = json.loads(v["body"])
                sig_field = "msg_signature" if "msg_signature" in doc else "signature"
                check(doc[sig_field] == v["expected"], f"{name}: envelope signature")
                check(doc["nonce"] == inp["nonce"], f"{name}: envelope nonce")
                if isinstance(doc["msg"], str):
                    check(doc["msg"] == inp["msg"], f"{name}: studio msg string")
                else:
                    check(v["body"].startswith('{"msg":' + inp["msg"] + ","),
                          f"{name}: msg text as sent")
            if "url_query" in v:
                q = dict(urllib.parse.parse_qsl(v["url_query"]))
                check(q.get("signature") == v["expected"] and q.get("msg") == inp["msg"],
                      f"{name}: url query")
        elif kind == "onenet_token":
            sts = onenet_token_string(inp["et"], inp["method"], inp["res"], inp["version"])
            digest = onenet_token_digest(inp["access_key"], inp["method"], sts)
            check(sts == v["string_to_sign"], f"{name}: string to sign")
            if "authorization" in v:
                check(onenet_authorization(inp["access_key"], inp["version"], inp["res"],
                                           inp["et"], inp["method"]) == v["authorization"],
                      f"{name}: authorization header")
        else:
            check(False, f"{name}: unknown kind {kind}")
            continue
        check(digest.hex() == v["digest_hex"], f"{name}: digest {digest.hex()}")
        check(b64(digest) == v["expected"], f"{name}: base64 {b64(digest)}")
    for kind in ("ctwing_api", "onenet_push", "onenet_url", "onenet_token"):
        check(kind in kinds, f"vectors cover {kind}")
    return len(vectors)


class Receiver:
    """A tiny stand-in for the gateway's push endpoints, for the self-test."""

    def __init__(self, token):
        self.token = token
        self.requests = queue.Queue()
        recv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, status, text):
                out = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                recv.requests.put(("GET", self.path, dict(self.headers), b""))
                ok = q.get("signature") == onenet_push_signature(
                    recv.token, q.get("nonce", ""), q.get("msg", ""))
                self._reply(200 if ok else 403, q["msg"] if ok else "bad signature")

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                recv.requests.put(("POST", self.path, dict(self.headers), body))
                self._reply(200, "ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self):
        return self.requests.get(timeout=5)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def verify_nbiot_body(token, body_text):
    """Check an NB-IoT push as a receiver must: over the msg member's text as sent."""
    prefix = '{"msg":'
    if not body_text.startswith(prefix):
        return False
    _, end = json.JSONDecoder().raw_decode(body_text, len(prefix))
    msg_text = body_text[len(prefix):end]
    doc = json.loads(body_text)
    return doc["msg_signature"] == onenet_push_signature(token, doc["nonce"], msg_text)


SELF = dict(ct_app_key="pgAppKeySelf", ct_secret="pgSecretSelf",
            ct_master_key="0123456789abcdef0123456789abcdef", on_token="pgPushTokenSelf01",
            on_pid="pgPid0001", on_key=b64(b"parkguard self-test access key!!"))


def ctwing_request(base, body_obj, ts=None, app_key=None, secret=None, master_key=None,
                   query="", version=CTWING_COMMAND_VERSION, sign_body=None, drop=None):
    ts = str(int(time.time() * 1000)) if ts is None else str(ts)
    app_key = app_key or SELF["ct_app_key"]
    mk = master_key or SELF["ct_master_key"]
    body = compact_json(body_obj).encode("utf-8")
    sig = ctwing_signature(app_key, secret or SELF["ct_secret"], ts,
                           ctwing_sign_params(query, mk),
                           body if sign_body is None else sign_body)
    headers = {"application": app_key, "timestamp": ts, "version": version, "MasterKey": mk,
               "signature": sig, "Content-Type": "application/json; charset=UTF-8"}
    if drop:
        headers.pop(drop)
    url = base + CTWING_COMMAND_PATH + ("?" + query if query else "")
    status, text = http_send(url, "POST", headers, body, timeout=3)
    return status, (json.loads(text) if status else None)


def onenet_request(base, path, body_obj, key=None, et=None, method="sha1", res=None,
                   timeout=3):
    et = int(time.time()) + 3600 if et is None else et
    auth = onenet_authorization(key or SELF["on_key"], "2022-05-01",
                                res or f"products/{SELF['on_pid']}", et, method)
    status, text = http_send(base + path, "POST", {"authorization": auth,
                                                   "Content-Type": "application/json"},
                             compact_json(body_obj).encode("utf-8"), timeout=timeout)
    return status, (json.loads(text) if status else text)


def round_trip(check):
    events = []
    lock = threading.Lock()

    def emit(e):
        with lock:
            events.append(e)

    platform = Platform(SELF["ct_app_key"], SELF["ct_secret"], SELF["ct_master_key"],
                        SELF["on_token"], SELF["on_pid"], SELF["on_key"], hang_s=1.0, emit=emit)
    server = make_server("127.0.0.1", 0, platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    last = lambda: events[-1]
    cmd = {"content": {"dataType": 2, "payload": "a1b2c3"}, "deviceId": "dev0001",
           "operator": "parkguard", "productId": 15000001, "ttl": 0, "level": 1}
    try:
        # CTWing: a signed command verifies; each kind of forgery is refused for its reason.
        st, doc = ctwing_request(base, cmd)
        check(st == 200 and doc["code"] == 0 and doc["result"]["commandStatus"] == "指令已保存",
              f"ctwing signed command accepted ({st} {doc})")
        check(last()["valid"] and last()["platform"] == "ctwing", "ctwing event valid")
        thing = dict(cmd, content={"serviceIdentifier": "alarm_ack", "params": {"ack": 1}},
                     operator="停车场网关")
        st, doc = ctwing_request(base, thing)
        check(st == 200 and doc["code"] == 0, "ctwing thing-model command with UTF-8 operator")
        st, doc = ctwing_request(base, cmd, sign_body=b'{"tampered":1}')
        check(st == 401 and doc["code"] != 0 and last()["reason"] == "bad_signature",
              f"ctwing tampered body refused ({st} {doc})")
        for kw, reason in ((dict(app_key="otherKey"), "unknown_app_key"),
                           (dict(secret="wrong"), "bad_signature"),
                           (dict(ts=int(time.time() * 1000) - 16 * 60 * 1000), "timestamp_skew"),
                           (dict(drop="MasterKey"), "missing_header"),
                           (dict(master_key="f" * 32), "wrong_master_key"),
                           (dict(query="b=2&a=1"), None),
                           (dict(version="20181031202117"), "wrong_version")):
            st, doc = ctwing_request(base, cmd, **kw)
            if reason is None:
                check(st == 200 and doc["code"] == 0, f"ctwing with query params ({doc})")
            else:
                check(st != 200 and doc["code"] != 0 and last()["reason"] == reason,
                      f"ctwing {kw} -> {reason} (got {last()['reason']})")
        st, doc = ctwing_request(base, dict(cmd, content={"dataType": 2, "payload": "abc"}))
        check(st == 400 and last()["reason"] == "bad_body", "ctwing odd hex payload refused")
        # OneNET Studio API: good and bad tokens.
        call = {"product_id": SELF["on_pid"], "device_name": "gw01", "identifier": "ack",
                "params": {"v": 1}}
        st, doc = onenet_request(base, "/thingmodel/call-service", call)
        check(st == 200 and doc["code"] == 0 and doc["msg"] == "succ", f"onenet call ({doc})")
        for method in ("md5", "sha256"):
            st, doc = onenet_request(base, "/thingmodel/set-device-property",
                                     {"product_id": SELF["on_pid"], "device_name": "gw01",
                                      "params": {"x": 1}}, method=method)
            check(doc["code"] == 0, f"onenet set-device-property, method {method}")
        for kw, reason in ((dict(key=b64(b"another key of 32 bytes........!")), "bad_signature"),
                           (dict(et=int(time.time()) - 10), "token_expired"),
                           (dict(res="products/other"), "wrong_res")):
            st, doc = onenet_request(base, "/thingmodel/call-service", call, **kw)
            check(doc["code"] == 10403 and last()["reason"] == reason,
                  f"onenet {kw} -> {reason} (got {last()['reason']})")
        st, doc = onenet_request(base, "/thingmodel/call-service", dict(call, identifier=""))
        check(doc["code"] == 10415 and last()["reason"] == "bad_body", "onenet bad body")
        # A sign with an unencoded '+' does not verify (Java URL decoding).
        et = int(time.time()) + 3600
        for n in range(200):
            key_try = b64(f"plus-{n}".encode() * 4)
            sign = onenet_token_sign(key_try, "2022-05-01", f"products/{SELF['on_pid']}", et,
                                     "sha1")
            if "+" in sign:
                break
        platform.on_key = key_try
        raw_auth = (f"version=2022-05-01&res=products%2F{SELF['on_pid']}&et={et}&method=sha1"
                    f"&sign={sign}")
        st, text = http_send(base + "/thingmodel/call-service", "POST",
                             {"authorization": raw_auth}, compact_json(call).encode(), 3)
        check(json.loads(text)["code"] == 10403, "onenet sign with a raw '+' refused")
        platform.on_key = SELF["on_key"]
        # Answer modes.
        platform.set_mode("ctwing", "error")
        st, doc = ctwing_request(base, cmd)
        check(st == 200 and doc["code"] == -1, "ctwing answer error")
        platform.set_mode("onenet", "error")
        st, doc = onenet_request(base, "/thingmodel/call-service", call)
        check(doc["code"] == ONENET_BUSINESS_ERROR[0], "onenet answer error")
        platform.set_mode("onenet", "hang")
        t0 = time.time()
        st, doc = onenet_request(base, "/thingmodel/call-service", call, timeout=0.3)
        check(st == 0 and time.time() - t0 < 1.0, f"onenet hang times the client out ({doc})")
        platform.set_mode("onenet", "ok")
        platform.set_mode("ctwing", "ok")
        # Pushes to a tiny receiver.
        recv = Receiver(SELF["on_token"])
        pushed = []
        pusher = Pusher(platform, emit=pushed.append, timeout=3)
        pusher.run({"cmd": "push", "platform": "ctwing", "url": recv.url + "/ctwing/push",
                    "token": "s3cr3t", "message": {"messageType": "dataReport",
                                                   "deviceId": "dev0001", "IMEI": "86000000001",
                                                   "productId": "15000001",
                                                   "bytes_hex": "0102fe"}})
        m, path, hdrs, body = recv.take()
        doc = json.loads(body)
        check(path == "/ctwing/push?token=s3cr3t", f"ctwing push token in query ({path})")
        check(base64.b64decode(doc["payload"]["APPdata"]) == b"\x01\x02\xfe"
              and doc["upPacketSN"] == -1 and doc["messageType"] == "dataReport"
              and isinstance(doc["timestamp"], int), "ctwing dataReport envelope")
        check(pushed[-1]["status"] == 200 and pushed[-1]["sent"] == doc, "pushed event")
        pusher.run({"cmd": "push", "platform": "ctwing", "url": recv.url + "/c?x=1", "token": None,
                    "message": {"messageType": "deviceOnlineOfflineReport", "eventType": 0,
                                "deviceId": "dev0001"}})
        m, path, hdrs, body = recv.take()
        check(path == "/c?x=1" and json.loads(body)["eventType"] == 0, "ctwing offline push")
        msg = {"type": 1, "dev_id": 2016617, "ds_id": "3200_0_5750", "at": 1714550400000,
               "value": "A1FF", "imei": "860000000000001"}
        for tamper, want in ((None, True), ("signature", False), ("body", False)):
            for m_ in (msg, [msg, {"type": 2, "dev_id": 2016617, "status": 1, "login_type": 10,
                                   "at": 1714550400001}]):
                pusher.run({"cmd": "push", "platform": "onenet", "style": "nbiot",
                            "url": recv.url + "/onenet", "msg": m_, "tamper": tamper})
                _, _, _, body = recv.take()
                check(verify_nbiot_body(SELF["on_token"], body.decode()) == want,
                      f"nbiot push tamper={tamper} verifies={want}")
                check(len(json.loads(body)["nonce"]) == ONENET_NONCE_LEN, "nbiot nonce length")
        studio = {"deviceName": "gw01", "productId": SELF["on_pid"], "messageType": "notify",
                  "notifyType": "property",
                  "data": {"id": "1", "params": {"smoke_state": {"value": 1,
                                                                 "time": 1714550400000}}}}
        for tamper, want in ((None, True), ("signature", False), ("body", False)):
            pusher.run({"cmd": "push", "platform": "onenet", "style": "studio",
                        "url": recv.url + "/studio", "msg": studio, "tamper": tamper})
            _, _, _, body = recv.take()
            doc = json.loads(body)
            ok = doc["signature"] == onenet_push_signature(SELF["on_token"], doc["nonce"],
                                                           doc["msg"])
            check(ok == want and isinstance(doc["msg"], str) and is_int(doc["time"]),
                  f"studio push tamper={tamper}")
        for tamper, want in ((None, True), ("signature", False)):
            ev = pusher.verify_url({"cmd": "verify_url", "platform": "onenet",
                                    "url": recv.url + "/onenet", "tamper": tamper})
            recv.take()
            check(ev["ok"] == want, f"url verification tamper={tamper}")
        ev = pusher.raw({"cmd": "raw", "url": recv.url + "/raw", "method": "POST",
                         "headers": {"Content-Type": "text/plain"}, "body": "exact"})
        _, _, hdrs, body = recv.take()
        check(body == b"exact" and ev["status"] == 200 and ev["platform"] == "raw", "raw")
        ev = pusher.raw({"cmd": "raw", "url": "http://127.0.0.1:1/x", "body": ""})
        check(ev["status"] == 0, "connection error is status 0")
        recv.close()
    finally:
        server.closing = True
        server.shutdown()
        server.server_close()


def cli_test(check):
    """Run the program itself: listening line, one request, commands, quit; then stdin EOF."""
    recv = Receiver(SELF["on_token"])
    argv = [sys.executable, os.path.abspath(__file__), "--listen", "127.0.0.1:0",
            "--ctwing-app-key", SELF["ct_app_key"], "--ctwing-secret", SELF["ct_secret"],
            "--ctwing-master-key", SELF["ct_master_key"], "--onenet-token", SELF["on_token"],
            "--onenet-product-id", SELF["on_pid"], "--onenet-access-key", SELF["on_key"]]
    try:
        for ending in ("quit", "eof"):
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, encoding="utf-8")
            first = json.loads(p.stdout.readline())
            check(first["event"] == "listening" and first["port"] > 0, "listening line")
            base = f"http://127.0.0.1:{first['port']}"
            st, doc = ctwing_request(base, {"content": {"dataType": 1, "payload": "hi"},
                                            "deviceId": "d", "operator": "o", "productId": 1})
            ev = json.loads(p.stdout.readline())
            check(st == 200 and ev["event"] == "command" and ev["valid"] is True
                  and ev["headers"]["application"] == SELF["ct_app_key"]
                  and ev["body"]["deviceId"] == "d", "CLI command event")
            lines = [{"cmd": "answer", "platform": "onenet", "mode": "error"},
                     {"cmd": "push", "platform": "onenet", "style": "nbiot",
                      "url": recv.url + "/o", "msg": {"type": 1}, "tamper": None},
                     {"cmd": "nonsense"}]
            p.stdin.write("".join(json.dumps(c) + "\n" for c in lines) + "not json\n")
            if ending == "quit":
                p.stdin.write('{"cmd":"quit"}\n')
            p.stdin.flush()
            p.stdin.close()
            out = [json.loads(l) for l in p.stdout.read().splitlines()]
            rc = p.wait(timeout=10)
            kinds = [(e["event"], e.get("cmd")) for e in out]
            want = [("command_ok", "answer"), ("pushed", None), ("command_ok", "push"),
                    ("command_failed", "nonsense"), ("command_failed", None)]
            if ending == "quit":
                want.append(("command_ok", "quit"))
            check(kinds == want, f"CLI output ({ending}): {kinds}")
            check(rc == 0, f"CLI exit code ({ending}) {rc}")
            recv.take()
    finally:
        recv.close()


def self_test(directory):
    check = Check()
    n = check_vectors(directory, check)
    round_trip(check)
    cli_test(check)
    if check.failures:
        print(f"self-test FAILED: {len(check.failures)} of {check.count} checks", file=sys.stderr)
        return 1
    print(f"self-test ok ({n} vectors, {check.count} checks)")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self-test", nargs="?", const="", default=None, metavar="DIR")
    ap.add_argument("--listen")
    ap.add_argument("--ctwing-app-key")
    ap.add_argument("--ctwing-secret")
    ap.add_argument("--ctwing-master-key")
    ap.add_argument("--onenet-token")
    ap.add_argument("--onenet-product-id")
    ap.add_argument("--onenet-access-key")
    ap.add_argument("--max-skew-s", type=float, default=CTWING_DEFAULT_SKEW_S)
    ap.add_argument("--hang-s", type=float, default=60.0,
                    help='how long "answer hang" holds a connection (default 60)')
    args = ap.parse_args(argv)
    if args.self_test is not None:
        directory = args.self_test
        if not directory:
            directory = "tests/golden/platforms"
            if not os.path.isdir(directory):
                directory = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "..", "golden", "platforms")
        return self_test(directory)
    missing = [n for n in ("listen", "ctwing_app_key", "ctwing_secret", "ctwing_master_key",
                           "onenet_token", "onenet_product_id", "onenet_access_key")
               if getattr(args, n) is None]
    if missing:
        ap.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    base64.b64decode(args.onenet_access_key, validate=True)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
