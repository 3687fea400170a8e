#!/usr/bin/env python3
"""A stand-in for the three SMS / voice-call APIs parkguard pushes alarms to.

Written from the providers' published API documentation only, with Python's standard library
(hmac, hashlib, base64, urllib, http.server, json): nothing of parkguard's code is used, so
parkguard's request signing is checked by a second implementation.

    sms_receiver.py --listen HOST:PORT --aliyun-id ID --aliyun-secret SECRET
                    --tencent-id ID --tencent-key KEY
                    [--max-skew-s 900] [--tencent-max-skew-s S]
    sms_receiver.py --self-test [DIR]   known-answer vectors in DIR (default tests/golden/sms),
                                        then an in-process round trip and the CLI

One HTTP server (PORT 0: the system picks one) answers for all three endpoints; the gateway
under test is pointed at it with an endpoint override such as http://127.0.0.1:PORT. A request
is routed by what it carries:

    Action=SendSms          (query or form body)  -> aliyun_sms    Dysmsapi 2017-05-25
    Action=SingleCallByTts  (query or form body)  -> aliyun_voice  Dyvmsapi 2017-05-25
    X-TC-Action header                             -> tencent_sms   sms 2021-01-11

Every request is verified (signature recomputed, key id, timestamp window, Aliyun nonce, the
documented parameters), answered as the provider documents, and printed as one JSON line on
stdout. Commands come as JSON lines on stdin; the program exits on {"cmd":"quit"} or at the end
of stdin. The protocol is listed in tests/golden/sms/README.md ("The receiver").

Sources (as the search tool returned them; every rule below names the one it comes from):

  [A-SIG]  Alibaba Cloud, "签名机制 / Signature mechanism" (RPC, HMAC-SHA1, SignatureVersion 1.0),
           https://help.aliyun.com/document_detail/28839.html and
           https://help.aliyun.com/en/document_detail/130769.html
  [A-SMSSIG] Alibaba Cloud SMS, "签名机制" worked example (testId / testSecret, SendSms),
           https://help.aliyun.com/document_detail/101343.htm (also document_detail/56189)
  [A-SEND] Alibaba Cloud SMS, "SendSms - 发送短信",
           https://help.aliyun.com/document_detail/55284.html
  [A-TTS]  Alibaba Cloud VMS, "SingleCallByTts", https://help.aliyun.com/document_detail/393519.html
           and http://help.aliyun.com/document_detail/55315.html
  [A-ERR]  Alibaba Cloud, "管控OpenAPI的客户端公用错误码" (common POP client error codes and HTTP
           status), https://developer.aliyun.com/ask/278265
  [A-SMSERR] Alibaba Cloud SMS, "API错误码", https://help.aliyun.com/document_detail/101346.html;
           isv.BUSINESS_LIMIT_CONTROL: https://developer.aliyun.com/ask/652244 (SMS) and
           https://developer.aliyun.com/ask/647469 (voice)
  [T-SIG]  Tencent Cloud, "Signature v3" (TC3-HMAC-SHA256), e.g.
           https://www.tencentcloud.com/document/product/382/40467 (the SMS copy of the page)
  [T-SEND] Tencent Cloud SMS, "SendSms" 2021-01-11,
           https://cloud.tencent.com/document/api/382/55981
           and https://tencentcloud.com/document/api/382/40536
  [T-ERR]  Tencent Cloud, "Error Codes" / "Responses",
           https://cloud.tencent.com/document/api/382/52075,
           https://tencentcloud.com/document/product/1031/32869; SMS send error codes:
           https://cloud.tencent.com/document/api/382/59177
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROVIDERS = ("aliyun_sms", "aliyun_voice", "tencent_sms")

# --- Aliyun RPC signature ([A-SIG]) -----------------------------------------------------------
#
# 1. Sort all request parameters but Signature by name (the common ones and the operation's).
# 2. percentEncode name and value with UTF-8: A-Z a-z 0-9 "-" "_" "." "~" stay, every other byte
#    becomes %XY (upper-case hex), a space is %20 (not "+"), "*" is %2A, "~" is not encoded.
# 3. Join name=value with "&": the canonicalized query string.
# 4. StringToSign = HTTPMethod + "&" + percentEncode("/") + "&" + percentEncode(canonicalized).
# 5. Signature = Base64(HMAC-SHA1(key = AccessKeySecret + "&", UTF-8 of StringToSign)).
# The docs state GET and POST sign differently only by the HTTPMethod at the head of the string
# ("接口支持GET和POST提交,但是GET和POST的StringToSign不一样", [A-SMSSIG]).

ALIYUN_VERSION = "2017-05-25"           # [A-SEND], [A-TTS]
ALIYUN_SIGNATURE_METHOD = "HMAC-SHA1"   # [A-SIG]: only HMAC-SHA1 is supported
ALIYUN_SIGNATURE_VERSION = "1.0"        # [A-SIG]
ALIYUN_ACTIONS = {"SendSms": "aliyun_sms", "SingleCallByTts": "aliyun_voice"}
# The common parameters a signed RPC request always carries ([A-SIG] overview; [A-SMSSIG] step 1).
# Format (JSON or XML, default XML) and RegionId are optional in the common-parameter tables.
ALIYUN_REQUIRED_COMMON = ("AccessKeyId", "Action", "Version", "SignatureMethod",
                          "SignatureVersion", "SignatureNonce", "Timestamp", "Signature")
# [A-ERR]: "用户时间和服务器时间超过15分钟" -> InvalidTimeStamp.Expired.
ALIYUN_DEFAULT_SKEW_S = 900
# [A-SEND]: PhoneNumbers, comma-separated, at most 1000 numbers.
ALIYUN_MAX_NUMBERS = 1000


def percent_encode(value: str) -> str:
    """[A-SIG] percentEncode: RFC 3986 unreserved characters stay, all else %XY of UTF-8."""
    return urllib.parse.quote(value, safe="-_.~", encoding="utf-8")


def aliyun_canonicalized_query(params: dict) -> str:
    """[A-SIG] step 1: the sorted, encoded name=value pairs without Signature."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    return "&".join(percent_encode(k) + "=" + percent_encode(v) for k, v in pairs)


def aliyun_string_to_sign(method: str, params: dict) -> str:
    """[A-SIG] step 2: HTTPMethod & percentEncode("/") & percentEncode(canonicalized query)."""
    return method + "&" + percent_encode("/") + "&" + percent_encode(
        aliyun_canonicalized_query(params))


def aliyun_signature(method: str, params: dict, secret: str) -> str:
    """[A-SIG] step 3: Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))."""
    digest = hmac.new((secret + "&").encode("utf-8"),
                      aliyun_string_to_sign(method, params).encode("utf-8"),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


# --- Tencent Cloud signature v3 ([T-SIG]) ----------------------------------------------------
#
# CanonicalRequest = HTTPRequestMethod \n CanonicalURI ("/") \n CanonicalQueryString ("" for
#   POST) \n CanonicalHeaders \n SignedHeaders \n Lowercase(HexEncode(SHA256(payload)))
# CanonicalHeaders: "key:value\n" per signed header, key and value lower-cased and trimmed,
#   sorted by key; content-type and host are required.
# StringToSign = "TC3-HMAC-SHA256" \n X-TC-Timestamp \n Date/service/tc3_request \n
#   Lowercase(HexEncode(SHA256(CanonicalRequest))); Date is the UTC date of X-TC-Timestamp.
# SecretDate = HMAC_SHA256("TC3" + SecretKey, Date); SecretService = HMAC_SHA256(SecretDate,
#   service); SecretSigning = HMAC_SHA256(SecretService, "tc3_request");
# Signature = HexEncode(HMAC_SHA256(SecretSigning, StringToSign)).
# Authorization = "TC3-HMAC-SHA256 Credential=" SecretId "/" CredentialScope ", SignedHeaders="
#   SignedHeaders ", Signature=" Signature.

TC3_ALGORITHM = "TC3-HMAC-SHA256"
TENCENT_SERVICE = "sms"                 # [T-SEND]: sms.tencentcloudapi.com
TENCENT_ACTION = "SendSms"              # [T-SEND]
TENCENT_VERSION = "2021-01-11"          # [T-SEND]
# [T-ERR] AuthFailure.SignatureExpire: "Timestamp and server time cannot differ by more than
# five minutes."
TENCENT_DOCUMENTED_SKEW_S = 300
# [T-SEND]: PhoneNumberSet, E.164, at most 200 numbers, all domestic or all international.
TENCENT_MAX_NUMBERS = 200


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hmac_sha256(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def tc3_canonical_request(method, uri, query, headers, signed_headers, payload: bytes) -> str:
    """[T-SIG] step 1. headers: lower-case name -> value as sent; signed_headers: names."""
    canonical_headers = "".join(
        f"{name}:{headers[name].strip().lower()}\n" for name in signed_headers)
    return "\n".join([method, uri, query, canonical_headers, ";".join(signed_headers),
                      sha256_hex(payload)])


def tc3_date(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d")


def tc3_string_to_sign(timestamp: int, date: str, service: str, canonical_request: str) -> str:
    """[T-SIG] step 2."""
    return "\n".join([TC3_ALGORITHM, str(timestamp), f"{date}/{service}/tc3_request",
                      sha256_hex(canonical_request.encode("utf-8"))])


def tc3_signature(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    """[T-SIG] step 3: the derived keys, then the hex HMAC of the string to sign."""
    secret_date = hmac_sha256(("TC3" + secret_key).encode("utf-8"), date)
    secret_service = hmac_sha256(secret_date, service)
    secret_signing = hmac_sha256(secret_service, "tc3_request")
    return hmac.new(secret_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def tc3_authorization(secret_id, date, service, signed_headers, signature) -> str:
    """[T-SIG] step 4."""
    return (f"{TC3_ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
            f"SignedHeaders={';'.join(signed_headers)}, Signature={signature}")


# --- answers ---------------------------------------------------------------------------------

class Refusal(Exception):
    """A request the provider would refuse.

    reason: the receiver's stable slug (README "Reasons"); code, status, message: what the
    provider answers; detail: for the person reading the log.
    """

    def __init__(self, reason, code, status, message, detail=None):
        super().__init__(detail or message)
        self.reason = reason
        self.code = code
        self.status = status
        self.message = message
        self.detail = detail or message


def aliyun_request_id() -> str:
    # The documented examples show upper-case UUIDs, e.g. F655A8D5-B967-440B-8683-DAD6FF8DE990.
    return str(uuid.uuid4()).upper()


def xml_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def aliyun_body(doc: dict, fmt: str, root: str) -> (str, bytes):
    """JSON, or XML when Format is XML (the documented default when Format is absent)."""
    if fmt == "JSON":
        return "application/json;charset=utf-8", json.dumps(doc, ensure_ascii=False).encode()
    inner = "".join(f"<{k}>{xml_escape(str(v))}</{k}>" for k, v in doc.items())
    text = f"<?xml version='1.0' encoding='UTF-8'?><{root}>{inner}</{root}>"
    return "text/xml;charset=utf-8", text.encode("utf-8")


# Messages for the codes refuse_next uses by default ([A-SMSERR], [T-ERR] 382/59177 and the
# codes' published descriptions); another code is answered with the code as its message.
ALIYUN_MESSAGES = {
    "isv.BUSINESS_LIMIT_CONTROL": "触发分钟级流控Permits:1",
    "isv.DAY_LIMIT_CONTROL": "触发日发送限额",
    "isv.MONTH_LIMIT_CONTROL": "触发月发送限额",
    "isv.OUT_OF_SERVICE": "业务停机",
    "isv.MOBILE_NUMBER_ILLEGAL": "非法手机号",
    "isv.MOBILE_COUNT_OVER_LIMIT": "手机号码数量超过限制",
    "isv.INVALID_JSON_PARAM": "JSON参数不合法，只接受字符串值",
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": "签名和模板类型不一致",
}
TENCENT_MESSAGES = {
    "LimitExceeded.PhoneNumberThirtySecondLimit":
        "单个手机号30秒内下发短信条数超过设定的上限，可自行到控制台调整短信频率限制策略。",
    "LimitExceeded.PhoneNumberOneHourLimit":
        "单个手机号1小时内下发短信条数超过设定的上限，可自行到控制台调整短信频率限制策略。",
    "LimitExceeded.PhoneNumberDailyLimit":
        "单个手机号日下发短信条数超过设定的上限，可自行到控制台调整短信频率限制策略。",
    "LimitExceeded.DeliveryFrequencyLimit": "下发短信命中了频率限制策略。",
    "FailedOperation.SignatureIncorrectOrUnapproved": "签名未审批或格式错误。",
    "FailedOperation.TemplateIncorrectOrUnapproved": "模板未审批或内容不匹配。",
    "FailedOperation.PhoneNumberInBlacklist": "手机号在免打扰名单库中。",
    "InvalidParameterValue.IncorrectPhoneNumber": "手机号格式错误。",
    "AuthFailure.SignatureFailure":
        "The provided credentials could not be validated. Please check your signature is "
        "correct.",
}
# Tencent codes that refuse_next puts in the number's SendStatusSet entry by default; any other
# code becomes a top-level Response.Error (override with "level").
TENCENT_STATUS_LEVEL = ("LimitExceeded.PhoneNumber", "FailedOperation.PhoneNumberInBlacklist",
                        "InvalidParameterValue.IncorrectPhoneNumber",
                        "LimitExceeded.DeliveryFrequencyLimit")

MAINLAND_MOBILE = re.compile(r"1[3-9]\d{9}")       # 11-digit mainland mobile
MAINLAND_FIXED = re.compile(r"0\d{9,11}")          # area code + number, e.g. 0571****5678
E164 = re.compile(r"\+[1-9]\d{6,14}")
E164_CN = re.compile(r"\+861[3-9]\d{9}")


def json_string_object(text, name):
    """TemplateParam / TtsParam: a JSON object whose values are strings ([A-SMSERR]
    isv.INVALID_JSON_PARAM "JSON参数不合法，只接受字符串值")."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise Refusal("bad_template_param", "isv.INVALID_JSON_PARAM", 200,
                      ALIYUN_MESSAGES["isv.INVALID_JSON_PARAM"], f"{name} is not JSON: {e}")
    if not isinstance(doc, dict):
        raise Refusal("bad_template_param", "isv.INVALID_JSON_PARAM", 200,
                      ALIYUN_MESSAGES["isv.INVALID_JSON_PARAM"], f"{name} is not a JSON object")
    for k, v in doc.items():
        if not isinstance(v, str):
            raise Refusal("bad_template_param", "isv.INVALID_JSON_PARAM", 200,
                          ALIYUN_MESSAGES["isv.INVALID_JSON_PARAM"],
                          f"{name}.{k} is {type(v).__name__}, not a string")
    return doc


class Receiver:
    """Verifies and answers requests; knows nothing about sockets (the self-test drives it)."""

    def __init__(self, aliyun_id, aliyun_secret, tencent_id, tencent_key,
                 max_skew_s=ALIYUN_DEFAULT_SKEW_S, tencent_max_skew_s=None, emit=None,
                 clock=time.time):
        self.aliyun_id = aliyun_id
        self.aliyun_secret = aliyun_secret
        self.tencent_id = tencent_id
        self.tencent_key = tencent_key
        self.aliyun_skew = max_skew_s
        self.tencent_skew = (tencent_max_skew_s if tencent_max_skew_s is not None
                             else min(max_skew_s, TENCENT_DOCUMENTED_SKEW_S))
        self.emit = emit or print_event
        self.clock = clock
        self.lock = threading.Lock()
        self.nonces = set()
        self.refusals = {p: [] for p in PROVIDERS}
        self.failures = {p: [] for p in PROVIDERS}

    # -- routing --

    def handle(self, method, target, headers, body: bytes):
        """One HTTP request -> (status, content type, body). headers: lower-case name -> value."""
        at = self.clock()
        split = urllib.parse.urlsplit(target)
        path, query = split.path, split.query
        event = {"event": "request", "provider": None, "valid": False, "reason": None,
                 "detail": None, "method": method, "path": path, "params": {}, "numbers": [],
                 "template": None, "template_params": None, "sign_name": None,
                 "refused": False, "answer": None, "at": at}
        try:
            if "x-tc-action" in headers:
                event["provider"] = "tencent_sms"
                status, ctype, out = self.tencent(method, path, query, headers, body, event)
            else:
                action = self.aliyun_action(method, query, headers, body)
                if action is None:
                    event["reason"] = "unknown_endpoint"
                    event["detail"] = ("neither an Aliyun Action (SendSms, SingleCallByTts) "
                                       "nor an X-TC-Action header")
                    status, ctype, out = 404, "text/plain", b"unknown endpoint\n"
                    event["answer"] = {"status": 404, "code": None}
                else:
                    event["provider"] = ALIYUN_ACTIONS[action]
                    status, ctype, out = self.aliyun(method, path, query, headers, body, event)
        except Exception as e:  # a bug here must not look like the gateway's fault silently
            event["reason"] = "receiver_error"
            event["detail"] = f"{type(e).__name__}: {e}"
            status, ctype, out = 500, "text/plain", b"receiver error\n"
            event["answer"] = {"status": 500, "code": None}
        self.emit(event)
        return status, ctype, out

    @staticmethod
    def aliyun_action(method, query, headers, body):
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if method == "POST" and headers.get("content-type", "").lower().startswith(
                "application/x-www-form-urlencoded"):
            try:
                params.update(urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                pass
        actions = params.get("Action") or []
        return actions[0] if len(actions) == 1 and actions[0] in ALIYUN_ACTIONS else None

    def take(self, table, provider):
        with self.lock:
            return table[provider].pop(0) if table[provider] else None

    # -- Aliyun --

    def aliyun(self, method, path, query, headers, body, event):
        provider = event["provider"]
        request_id = aliyun_request_id()
        host = headers.get("host", "")
        fmt = "XML"
        root = "SingleCallByTtsResponse" if provider == "aliyun_voice" else "SendSmsResponse"
        try:
            params = self.aliyun_params(method, path, query, headers, body)
            event["params"] = params
            fmt = params.get("Format", "XML")
            self.aliyun_business_fields(provider, params, event)
            self.aliyun_verify(method, params)
            self.aliyun_business(provider, params)
        except Refusal as r:
            event["reason"] = r.reason
            event["detail"] = r.detail
            event["answer"] = {"status": r.status, "code": r.code}
            if r.status == 200:   # business errors: the operation's own response shape
                doc = {"RequestId": request_id, "Code": r.code, "Message": r.message}
                ctype, out = aliyun_body(doc, fmt if fmt in ("JSON", "XML") else "XML", root)
            else:                 # POP gateway errors ([A-ERR])
                doc = {"RequestId": request_id, "HostId": host, "Code": r.code,
                       "Message": r.message}
                ctype, out = aliyun_body(doc, fmt if fmt in ("JSON", "XML") else "XML", "Error")
            return r.status, ctype, out
        event["valid"] = True
        fail = self.take(self.failures, provider)
        if fail is not None:
            doc = {"RequestId": request_id, "HostId": host, "Code": fail["code"],
                   "Message": fail["message"]}
            event["answer"] = {"status": fail["status"], "code": fail["code"]}
            ctype, out = aliyun_body(doc, fmt, "Error")
            return fail["status"], ctype, out
        refusal = self.take(self.refusals, provider)
        if refusal is not None:
            event["refused"] = True
            doc = {"RequestId": request_id, "Code": refusal["code"],
                   "Message": refusal["message"]}
            event["answer"] = {"status": 200, "code": refusal["code"]}
            ctype, out = aliyun_body(doc, fmt, root)
            return 200, ctype, out
        # [A-SEND]: Code "OK", Message "OK", BizId (the receipt id), RequestId.
        # [A-TTS]:  RequestId, Code "OK", Message, CallId (e.g. 134523^4351232).
        if provider == "aliyun_sms":
            doc = {"Code": "OK", "Message": "OK",
                   "BizId": f"{10**14 + uuid.uuid4().int % (9 * 10**14)}^0",
                   "RequestId": request_id}
        else:
            doc = {"Code": "OK", "Message": "OK",
                   "CallId": f"{10**11 + uuid.uuid4().int % (9 * 10**11)}^"
                             f"{10**10 + uuid.uuid4().int % (9 * 10**10)}",
                   "RequestId": request_id}
        event["answer"] = {"status": 200, "code": "OK"}
        ctype, out = aliyun_body(doc, fmt, root)
        return 200, ctype, out

    @staticmethod
    def aliyun_params(method, path, query, headers, body):
        if method not in ("GET", "POST"):
            raise Refusal("bad_request", "UnsupportedHTTPMethod", 400,
                          "Specified http method is not supported.", f"method {method}")
        # [A-SIG]: RPC requests go to https://Endpoint/?...; the path signed is "/".
        if path != "/":
            raise Refusal("bad_path", "InvalidApi.NotFound", 404,
                          "Specified api is not found, please check your url and method.",
                          f"path {path!r}, expected '/'")
        sources = [query]
        if method == "POST":
            ctype = headers.get("content-type", "").lower()
            if not ctype.startswith("application/x-www-form-urlencoded"):
                raise Refusal("bad_request", "InvalidParameter", 400,
                              "Specified parameter is not valid.",
                              f"POST body Content-Type {ctype!r}, expected "
                              "application/x-www-form-urlencoded")
            try:
                sources.append(body.decode("utf-8"))
            except UnicodeDecodeError:
                raise Refusal("bad_request", "InvalidParameter", 400,
                              "Specified parameter is not valid.", "body is not UTF-8")
        params = {}
        for text in sources:
            try:
                pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
            except (UnicodeDecodeError, ValueError) as e:
                raise Refusal("bad_request", "InvalidParameter", 400,
                              "Specified parameter is not valid.", f"undecodable: {e}")
            for k, v in pairs:
                if k in params:
                    raise Refusal("bad_request", "InvalidParameter", 400,
                                  "Specified parameter is not valid.", f"{k} given twice")
                params[k] = v
        return params

    def aliyun_verify(self, method, params):
        for name in ALIYUN_REQUIRED_COMMON:
            if not params.get(name):
                # [A-ERR]: Missing{ParameterName}, "{ParameterName} is mandatory for this action."
                raise Refusal("missing_parameter", f"Missing{name}", 400,
                              f"{name} is mandatory for this action.", f"{name} missing")
        if params["SignatureMethod"] != ALIYUN_SIGNATURE_METHOD:
            raise Refusal("bad_parameter", "InvalidSignatureMethod", 400,
                          "Specified signature method is not valid.",
                          f"SignatureMethod {params['SignatureMethod']!r}")
        if params["SignatureVersion"] != ALIYUN_SIGNATURE_VERSION:
            raise Refusal("bad_parameter", "InvalidSignatureVersion", 400,
                          "Specified parameter SignatureVersion is not valid.",
                          f"SignatureVersion {params['SignatureVersion']!r}")
        if params["Version"] != ALIYUN_VERSION:
            raise Refusal("bad_parameter", "InvalidVersion", 400,
                          "Specified parameter Version is not valid.",
                          f"Version {params['Version']!r}, expected {ALIYUN_VERSION}")
        if params.get("Format", "XML") not in ("JSON", "XML"):
            # [A-ERR]: InvalidParameter.Format, "仅支持 XML/JSON"
            raise Refusal("bad_parameter", "InvalidParameter.Format", 400,
                          "Specified parameter format is not valid.",
                          f"Format {params['Format']!r}")
        if params["AccessKeyId"] != self.aliyun_id:
            raise Refusal("unknown_key", "InvalidAccessKeyId.NotFound", 404,
                          "Specified access key is not found.",
                          f"AccessKeyId {params['AccessKeyId']!r}")
        expected = aliyun_signature(method, params, self.aliyun_secret)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            sts = aliyun_string_to_sign(method, params)
            raise Refusal("bad_signature", "SignatureDoesNotMatch", 400,
                          "Specified signature is not matched with our calculation. server "
                          f"string to sign is:{sts}",
                          f"Signature {params['Signature']!r}, expected {expected!r}; "
                          f"string to sign {sts}")
        ts = params["Timestamp"]
        # [A-SIG]/common parameters: ISO 8601, UTC, yyyy-MM-ddTHH:mm:ssZ.
        try:
            when = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            raise Refusal("bad_timestamp", "InvalidTimeStamp.Format", 400,
                          "Specified time stamp or date value is not well formatted.",
                          f"Timestamp {ts!r} is not yyyy-MM-ddTHH:mm:ssZ")
        skew = self.clock() - when
        if abs(skew) > self.aliyun_skew:
            raise Refusal("stale_timestamp", "InvalidTimeStamp.Expired", 400,
                          "Specified time stamp or date value is expired.",
                          f"Timestamp {ts} is {skew:+.0f} s off (limit {self.aliyun_skew} s)")
        nonce = params["SignatureNonce"]
        with self.lock:
            if nonce in self.nonces:
                raise Refusal("reused_nonce", "SignatureNonceUsed", 400,
                              "Specified signature nonce was used already.",
                              f"SignatureNonce {nonce!r} seen before")
            self.nonces.add(nonce)

    @staticmethod
    def aliyun_business_fields(provider, params, event):
        """What the event reports, read before verification (best effort)."""
        if provider == "aliyun_sms":
            numbers = params.get("PhoneNumbers")
            event["numbers"] = numbers.split(",") if numbers else []
            event["template"] = params.get("TemplateCode")
            event["sign_name"] = params.get("SignName")
            raw = params.get("TemplateParam")
        else:
            number = params.get("CalledNumber")
            event["numbers"] = [number] if number else []
            event["template"] = params.get("TtsCode")
            raw = params.get("TtsParam")
        if raw is not None:
            try:
                event["template_params"] = json.loads(raw)
            except ValueError:
                event["template_params"] = None

    @staticmethod
    def aliyun_business(provider, params):
        def need(name):
            if not params.get(name):
                raise Refusal("missing_parameter", f"Missing{name}", 400,
                              f"{name} is mandatory for this action.", f"{name} missing")
            return params[name]

        if provider == "aliyun_sms":
            # [A-SEND]: PhoneNumbers, SignName, TemplateCode required; TemplateParam a JSON
            # string when the template has variables.
            numbers = need("PhoneNumbers").split(",")
            need("SignName")
            need("TemplateCode")
            if len(numbers) > ALIYUN_MAX_NUMBERS:
                raise Refusal("bad_phone_number", "isv.MOBILE_COUNT_OVER_LIMIT", 200,
                              ALIYUN_MESSAGES["isv.MOBILE_COUNT_OVER_LIMIT"],
                              f"{len(numbers)} numbers, at most {ALIYUN_MAX_NUMBERS}")
            for n in numbers:
                if not MAINLAND_MOBILE.fullmatch(n):
                    raise Refusal("bad_phone_number", "isv.MOBILE_NUMBER_ILLEGAL", 200,
                                  ALIYUN_MESSAGES["isv.MOBILE_NUMBER_ILLEGAL"],
                                  f"PhoneNumbers entry {n!r} is not an 11-digit mainland mobile")
            if "TemplateParam" in params:
                json_string_object(params["TemplateParam"], "TemplateParam")
            return
        # [A-TTS]: CalledNumber (one number: a mobile or a fixed line), TtsCode required;
        # TtsParam a JSON string; PlayTimes 1~3; Volume 0~100; Speed -500~500; CalledShowNumber
        # optional (public mode when absent).
        number = need("CalledNumber")
        need("TtsCode")
        if not (MAINLAND_MOBILE.fullmatch(number) or MAINLAND_FIXED.fullmatch(number)):
            raise Refusal("bad_phone_number", "isv.MOBILE_NUMBER_ILLEGAL", 200,
                          ALIYUN_MESSAGES["isv.MOBILE_NUMBER_ILLEGAL"],
                          f"CalledNumber {number!r} is not one mainland mobile or fixed line")
        show = params.get("CalledShowNumber")
        if show is not None and not re.fullmatch(r"\d{5,20}", show):
            raise Refusal("bad_parameter", "InvalidCalledShowNumber", 400,
                          "Specified parameter CalledShowNumber is not valid.",
                          f"CalledShowNumber {show!r}")
        for name, lo, hi in (("PlayTimes", 1, 3), ("Volume", 0, 100), ("Speed", -500, 500)):
            if name in params:
                v = params[name]
                if not re.fullmatch(r"-?\d+", v) or not lo <= int(v) <= hi:
                    raise Refusal("bad_parameter", f"Invalid{name}", 400,
                                  f"Specified parameter {name} is not valid.",
                                  f"{name} {v!r}, expected {lo}..{hi}")
        if "TtsParam" in params:
            json_string_object(params["TtsParam"], "TtsParam")

    # -- Tencent --

    def tencent(self, method, path, query, headers, body, event):
        request_id = str(uuid.uuid4())
        event["headers"] = dict(headers)
        try:
            doc = self.tencent_verify(method, path, query, headers, body, event)
            self.tencent_business(doc)
        except Refusal as r:
            event["reason"] = r.reason
            event["detail"] = r.detail
            event["answer"] = {"status": 200, "code": r.code}
            # [T-ERR]: the Response with Error and RequestId is returned whether or not the
            # request succeeded.
            return 200, "application/json", json.dumps(
                {"Response": {"Error": {"Code": r.code, "Message": r.message},
                              "RequestId": request_id}}, ensure_ascii=False).encode()
        event["valid"] = True
        fail = self.take(self.failures, "tencent_sms")
        if fail is not None:
            event["answer"] = {"status": fail["status"], "code": fail["code"]}
            return fail["status"], "application/json", json.dumps(
                {"Response": {"Error": {"Code": fail["code"], "Message": fail["message"]},
                              "RequestId": request_id}}, ensure_ascii=False).encode()
        numbers = doc["PhoneNumberSet"]
        context = doc.get("SessionContext", "")
        refusal = self.take(self.refusals, "tencent_sms")
        if refusal is not None:
            event["refused"] = True
            event["answer"] = {"status": 200, "code": refusal["code"]}
            if refusal["level"] == "error":
                return 200, "application/json", json.dumps(
                    {"Response": {"Error": {"Code": refusal["code"],
                                            "Message": refusal["message"]},
                                  "RequestId": request_id}}, ensure_ascii=False).encode()
        status_set = []
        for n in numbers:
            code, message, fee = "Ok", "send success", 1
            if refusal is not None:
                code, message, fee = refusal["code"], refusal["message"], 0
            # [T-SEND] SendStatus: SerialNo, PhoneNumber, Fee, SessionContext, Code, Message,
            # IsoCode (CN, US, ...; DEF when not recognised).
            status_set.append({"SerialNo": f"5000:{uuid.uuid4().int % 10**28:028d}",
                               "PhoneNumber": n, "Fee": fee, "SessionContext": context,
                               "Code": code, "Message": message,
                               "IsoCode": "CN" if n.startswith("+86") else "DEF"})
        if refusal is None:
            event["answer"] = {"status": 200, "code": "Ok"}
        return 200, "application/json", json.dumps(
            {"Response": {"SendStatusSet": status_set, "RequestId": request_id}},
            ensure_ascii=False).encode()

    def tencent_verify(self, method, path, query, headers, body, event):
        def refuse(reason, code, detail, message=None):
            raise Refusal(reason, code, 200, message or detail, detail)

        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            doc = None
        if isinstance(doc, dict):
            event["params"] = doc
            nums = doc.get("PhoneNumberSet")
            event["numbers"] = nums if isinstance(nums, list) else []
            event["template"] = doc.get("TemplateId")
            event["template_params"] = doc.get("TemplateParamSet")
            event["sign_name"] = doc.get("SignName")
        if method != "POST":
            refuse("bad_request", "InvalidParameter",
                   f"method {method}: this receiver takes SendSms as POST application/json")
        if path != "/":   # [T-SIG]: CanonicalURI is "/" for API 3.0
            refuse("bad_path", "InvalidAction", f"path {path!r}, expected '/'")
        if not headers.get("authorization"):
            refuse("missing_parameter", "AuthFailure.InvalidAuthorization",
                   "Authorization header missing")
        for name in ("content-type", "host", "x-tc-action", "x-tc-timestamp", "x-tc-version",
                     "x-tc-region"):
            if not headers.get(name):
                # [T-SEND]: Region is required in 2021-01-11.
                refuse("missing_parameter", "MissingParameter", f"header {name} missing")
        if headers["x-tc-action"] != TENCENT_ACTION:
            refuse("bad_parameter", "InvalidAction",
                   f"X-TC-Action {headers['x-tc-action']!r}, expected {TENCENT_ACTION}")
        if headers["x-tc-version"] != TENCENT_VERSION:
            refuse("bad_parameter", "NoSuchVersion",
                   f"X-TC-Version {headers['x-tc-version']!r}, expected {TENCENT_VERSION}")
        if not re.fullmatch(r"\d{1,12}", headers["x-tc-timestamp"]):
            refuse("bad_timestamp", "InvalidParameter",
                   f"X-TC-Timestamp {headers['x-tc-timestamp']!r} is not Unix seconds")
        timestamp = int(headers["x-tc-timestamp"])
        ctype = headers["content-type"].strip().lower()
        if not (ctype == "application/json" or ctype.startswith("application/json;")):
            refuse("bad_parameter", "InvalidParameter",
                   f"Content-Type {headers['content-type']!r}, expected application/json")

        auth = headers["authorization"].strip()
        m = re.fullmatch(r"(\S+) Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*"
                         r"Signature=([0-9a-f]{64})", auth)
        if not m or m.group(1) != TC3_ALGORITHM:
            refuse("bad_authorization", "AuthFailure.InvalidAuthorization",
                   f"Authorization {auth!r} is not 'TC3-HMAC-SHA256 Credential=.../date/"
                   "service/tc3_request, SignedHeaders=..., Signature=<64 hex>'")
        credential, signed, signature = m.group(2), m.group(3).split(";"), m.group(4)
        parts = credential.split("/")
        if len(parts) != 4:
            refuse("bad_authorization", "AuthFailure.InvalidAuthorization",
                   f"Credential {credential!r} is not SecretId/Date/service/tc3_request")
        secret_id, date, service, terminator = parts
        # [T-SIG]: content-type and host are required; keys lower-case, sorted ascending.
        if "content-type" not in signed or "host" not in signed:
            refuse("bad_authorization", "AuthFailure.InvalidAuthorization",
                   f"SignedHeaders {';'.join(signed)} lacks content-type or host")
        if signed != sorted(signed) or any(h != h.lower() for h in signed):
            refuse("bad_authorization", "AuthFailure.InvalidAuthorization",
                   f"SignedHeaders {';'.join(signed)} not lower-case and sorted")
        for h in signed:
            if h not in headers:
                refuse("bad_authorization", "AuthFailure.InvalidAuthorization",
                       f"signed header {h} not in the request")
        if secret_id != self.tencent_id:
            refuse("unknown_key", "AuthFailure.SecretIdNotFound", f"SecretId {secret_id!r}",
                   "The SecretId is not found, please ensure that your SecretId is correct.")
        if service != TENCENT_SERVICE or terminator != "tc3_request" or date != tc3_date(
                timestamp):
            refuse("bad_credential_scope", "AuthFailure.SignatureFailure",
                   f"credential scope {date}/{service}/{terminator}, expected "
                   f"{tc3_date(timestamp)}/{TENCENT_SERVICE}/tc3_request",
                   TENCENT_MESSAGES["AuthFailure.SignatureFailure"])
        canonical = tc3_canonical_request(method, "/", query, headers, signed, body)
        sts = tc3_string_to_sign(timestamp, date, service, canonical)
        expected = tc3_signature(self.tencent_key, date, service, sts)
        if not hmac.compare_digest(expected, signature):
            refuse("bad_signature", "AuthFailure.SignatureFailure",
                   f"Signature {signature}, expected {expected}; canonical request "
                   f"{canonical!r}", TENCENT_MESSAGES["AuthFailure.SignatureFailure"])
        skew = self.clock() - timestamp
        if abs(skew) > self.tencent_skew:
            refuse("stale_timestamp", "AuthFailure.SignatureExpire",
                   f"X-TC-Timestamp {timestamp} is {skew:+.0f} s off (limit "
                   f"{self.tencent_skew} s)", "Signature expired. Timestamp and server time "
                   "cannot differ by more than five minutes.")
        if not isinstance(doc, dict):
            refuse("bad_request", "InvalidParameter", "body is not a JSON object")
        return doc

    @staticmethod
    def tencent_business(doc):
        def refuse(reason, code, detail):
            raise Refusal(reason, code, 200, TENCENT_MESSAGES.get(code, detail), detail)

        numbers = doc.get("PhoneNumberSet")
        if numbers is None:
            refuse("missing_parameter", "MissingParameter", "PhoneNumberSet missing")
        if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
            refuse("bad_parameter", "InvalidParameter", "PhoneNumberSet is not an array of "
                   "strings")
        if not numbers:
            refuse("missing_parameter", "MissingParameter.EmptyPhoneNumberSet",
                   "PhoneNumberSet is empty")
        if len(numbers) > TENCENT_MAX_NUMBERS:
            refuse("bad_phone_number", "LimitExceeded.PhoneNumberCountLimit",
                   f"{len(numbers)} numbers, at most {TENCENT_MAX_NUMBERS}")
        for n in numbers:
            if not E164.fullmatch(n) or (n.startswith("+86") and not E164_CN.fullmatch(n)):
                refuse("bad_phone_number", "InvalidParameterValue.IncorrectPhoneNumber",
                       f"PhoneNumberSet entry {n!r} is not E.164 (+86 and an 11-digit mobile)")
        domestic = {n.startswith("+86") for n in numbers}
        if len(domestic) > 1:
            refuse("bad_phone_number", "InvalidParameterValue.IncorrectPhoneNumber",
                   "PhoneNumberSet mixes Chinese mainland and other numbers")
        for name in ("SmsSdkAppId", "TemplateId"):
            if name not in doc:
                refuse("missing_parameter", "MissingParameter", f"{name} missing")
            if not isinstance(doc[name], str) or not doc[name]:
                refuse("bad_parameter", "InvalidParameter", f"{name} is not a non-empty string")
        if not re.fullmatch(r"\d+", doc["SmsSdkAppId"]):
            refuse("bad_parameter", "InvalidParameterValue.SdkAppIdNotExist",
                   f"SmsSdkAppId {doc['SmsSdkAppId']!r} (e.g. 1400006666)")
        sign = doc.get("SignName")
        # [T-SEND]: SignName is required for domestic SMS.
        if True in domestic and (not isinstance(sign, str) or not sign):
            refuse("missing_parameter", "MissingParameter",
                   "SignName missing (required for Chinese mainland numbers)")
        if sign is not None and not isinstance(sign, str):
            refuse("bad_parameter", "InvalidParameter", "SignName is not a string")
        params = doc.get("TemplateParamSet")
        if params is not None and (not isinstance(params, list)
                                   or not all(isinstance(p, str) for p in params)):
            refuse("bad_template_param", "InvalidParameter",
                   "TemplateParamSet is not an array of strings")
        context = doc.get("SessionContext")
        if context is not None and (not isinstance(context, str) or len(context.encode()) >= 512):
            refuse("bad_parameter", "InvalidParameter",
                   "SessionContext is not a string under 512 bytes")

    # -- commands --

    def command(self, cmd):
        """A stdin command (a dict) -> the fields of its command_ok; raises ValueError."""
        name = cmd.get("cmd")
        if name in ("refuse_next", "fail_next"):
            provider = cmd.get("provider")
            if provider not in PROVIDERS:
                raise ValueError(f"provider is one of {', '.join(PROVIDERS)}")
            count = cmd.get("count", 1)
            if not isinstance(count, int) or count < 1:
                raise ValueError("count is a positive integer")
            if name == "refuse_next":
                default = ("LimitExceeded.PhoneNumberThirtySecondLimit"
                           if provider == "tencent_sms" else "isv.BUSINESS_LIMIT_CONTROL")
                code = cmd.get("code", default)
                if not isinstance(code, str) or not code:
                    raise ValueError("code is a non-empty string")
                table = TENCENT_MESSAGES if provider == "tencent_sms" else ALIYUN_MESSAGES
                message = cmd.get("message", table.get(code, code))
                level = cmd.get("level")
                if level is None:
                    level = ("status" if provider == "tencent_sms"
                             and code.startswith(TENCENT_STATUS_LEVEL) else "error")
                if level not in ("status", "error"):
                    raise ValueError('level is "status" or "error"')
                entry = {"code": code, "message": message, "level": level}
                target = self.refusals
            else:
                status = cmd.get("status", 503)
                if not isinstance(status, int) or not 400 <= status <= 599:
                    raise ValueError("status is an HTTP error status 400..599")
                if provider == "tencent_sms":
                    code, message = "InternalError", "An internal error has occurred."
                elif status == 503:
                    code, message = "ServiceUnavailable", "The request has failed due to a " \
                        "temporary failure of the server."
                else:
                    code, message = "InternalError", "The request processing has failed due " \
                        "to some unknown error."
                entry = {"code": cmd.get("code", code), "message": cmd.get("message", message),
                         "status": status}
                target = self.failures
            with self.lock:
                target[provider].extend(dict(entry) for _ in range(count))
                queued = len(target[provider])
            out = {"provider": provider, "code": entry["code"], "queued": queued}
            if name == "refuse_next":
                out["level"] = entry["level"]
            else:
                out["status"] = entry["status"]
            return out
        if name == "quit":
            return {}
        raise ValueError(f"unknown command {name!r}")


# --- HTTP ------------------------------------------------------------------------------------

MAX_BODY = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the gateway's HTTP client may pool
    server_version = "sms-receiver"

    def do_any(self):
        headers = {}
        for k, v in self.headers.items():
            headers.setdefault(k.lower(), v)
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if sum(map(len, chunks)) > MAX_BODY:
                    break
            body = b"".join(chunks)
        elif headers.get("content-length"):
            length = int(headers["content-length"])
            body = self.rfile.read(min(length, MAX_BODY))
        status, ctype, out = self.server.receiver.handle(self.command, self.path, headers, body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_any

    def log_message(self, fmt, *args):
        pass


def start_server(receiver, host="127.0.0.1", port=0):
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.receiver = receiver
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return server


_print_lock = threading.Lock()


def print_event(event):
    line = json.dumps(event, ensure_ascii=False)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run(args):
    receiver = Receiver(args.aliyun_id, args.aliyun_secret, args.tencent_id, args.tencent_key,
                        max_skew_s=args.max_skew_s, tencent_max_skew_s=args.tencent_max_skew_s)
    host, _, port = args.listen.rpartition(":")
    server = start_server(receiver, host.strip("[]") or "127.0.0.1", int(port))
    print_event({"event": "listening", "port": server.server_address[1]})
    why = "end of stdin"
    try:
        for raw in sys.stdin.buffer:
            line = raw.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line.decode("utf-8"))
                if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                    raise ValueError('a command is an object with "cmd"')
            except (ValueError, UnicodeDecodeError) as e:
                print_event({"event": "command_error", "cmd": None, "detail": str(e)})
                continue
            try:
                done = receiver.command(cmd)
            except (ValueError, TypeError) as e:
                print_event({"event": "command_error", "cmd": cmd["cmd"], "detail": str(e)})
                continue
            ok = {"event": "command_ok", "cmd": cmd["cmd"]}
            ok.update(done)
            print_event(ok)
            if cmd["cmd"] == "quit":
                why = "quit command"
                break
    except KeyboardInterrupt:
        why = "interrupted"
    server.shutdown()
    server.server_close()
    print_event({"event": "stopped", "why": why})
    return 0


# --- self-test -------------------------------------------------------------------------------

class Failures:
    def __init__(self):
        self.failed = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"FAIL: {what}", file=sys.stderr)
        return ok


def golden_test(directory, f):
    path = os.path.join(directory, "vectors.json")
    with open(path, encoding="utf-8") as fh:
        vectors = json.load(fh)
    for raw, encoded in vectors["percent_encode"]:
        f.check(percent_encode(raw) == encoded,
                f"percentEncode({raw!r}) = {percent_encode(raw)!r}, expected {encoded!r}")
    f.check(len(vectors["aliyun"]) >= 3, "at least 3 Aliyun vectors")
    for v in vectors["aliyun"]:
        name = v["name"]
        if "canonicalized_query" in v:
            got = aliyun_canonicalized_query(v["params"])
            f.check(got == v["canonicalized_query"], f"{name}: canonicalized query {got}")
        got = aliyun_string_to_sign(v["method"], v["params"])
        f.check(got == v["string_to_sign"], f"{name}: string to sign {got}")
        got = aliyun_signature(v["method"], v["params"], v["secret"])
        f.check(got == v["signature"], f"{name}: signature {got}, expected {v['signature']}")
    f.check(len(vectors["tencent"]) >= 2, "at least 2 Tencent vectors")
    for v in vectors["tencent"]:
        name = v["name"]
        payload = v["payload"].encode("utf-8")
        f.check(sha256_hex(payload) == v["hashed_payload"], f"{name}: payload hash")
        headers = {k.lower(): val for k, val in v["headers"].items()}
        canonical = tc3_canonical_request(v["method"], "/", v.get("query", ""), headers,
                                          v["signed_headers"], payload)
        f.check(canonical == v["canonical_request"], f"{name}: canonical request {canonical!r}")
        f.check(sha256_hex(canonical.encode()) == v["hashed_canonical_request"],
                f"{name}: hashed canonical request")
        date = tc3_date(v["timestamp"])
        sts = tc3_string_to_sign(v["timestamp"], date, v["service"], canonical)
        f.check(sts == v["string_to_sign"], f"{name}: string to sign {sts!r}")
        if v.get("signature") is not None:
            got = tc3_signature(v["secret_key"], date, v["service"], sts)
            f.check(got == v["signature"], f"{name}: signature {got}, expected {v['signature']}")
        if v.get("authorization") is not None:
            got = tc3_authorization(v["secret_id"], date, v["service"], v["signed_headers"],
                                    v["signature"])
            f.check(got == v["authorization"], f"{name}: authorization {got}")


# A tiny client, written from the same documents, for the round trip.

AK_ID, AK_SECRET = "LTAI-selftest", "aliyun-selftest-secret"
TC_ID, TC_KEY = "AKID-selftest", "tencent-selftest-key"


def http_call(port, method, path, headers, body=b""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers,
                        skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body or method == "POST":
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def aliyun_params(action, business, timestamp=None, nonce=None, key_id=AK_ID):
    p = {"AccessKeyId": key_id, "Action": action, "Format": "JSON", "RegionId": "cn-hangzhou",
         "SignatureMethod": "HMAC-SHA1", "SignatureNonce": nonce or str(uuid.uuid4()),
         "SignatureVersion": "1.0", "Version": "2017-05-25",
         "Timestamp": timestamp or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    p.update(business)
    return p


def aliyun_send(port, method, params, secret=AK_SECRET, tamper=None, sign_method=None):
    signed = dict(params)
    signed["Signature"] = aliyun_signature(sign_method or method, params, secret)
    if tamper:
        signed.update(tamper)
    encoded = "&".join(percent_encode(k) + "=" + percent_encode(v) for k, v in signed.items())
    if method == "GET":
        return http_call(port, "GET", "/?" + encoded, {})
    return http_call(port, "POST", "/", {"Content-Type": "application/x-www-form-urlencoded"},
                     encoded.encode())


def tencent_send(port, body, key=TC_KEY, secret_id=TC_ID, timestamp=None, tamper_body=None,
                 host=None, signed=("content-type", "host", "x-tc-action")):
    timestamp = int(time.time()) if timestamp is None else timestamp
    payload = json.dumps(body, ensure_ascii=False).encode()
    headers = {"content-type": "application/json; charset=utf-8",
               "host": f"127.0.0.1:{port}", "x-tc-action": "SendSms",
               "x-tc-timestamp": str(timestamp), "x-tc-version": "2021-01-11",
               "x-tc-region": "ap-guangzhou"}
    date = tc3_date(timestamp)
    canonical = tc3_canonical_request("POST", "/", "", headers, list(signed), payload)
    sts = tc3_string_to_sign(timestamp, date, "sms", canonical)
    sig = tc3_signature(key, date, "sms", sts)
    sent = {"Authorization": tc3_authorization(secret_id, date, "sms", list(signed), sig),
            "Content-Type": headers["content-type"], "Host": host or headers["host"],
            "X-TC-Action": "SendSms", "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": "2021-01-11", "X-TC-Region": "ap-guangzhou"}
    if tamper_body is not None:
        payload = json.dumps(tamper_body, ensure_ascii=False).encode()
    return http_call(port, "POST", "/", sent, payload)


SMS_BUSINESS = {"PhoneNumbers": "13800000000,13900000001", "SignName": "园区安全",
                "TemplateCode": "SMS_123456789",
                "TemplateParam": json.dumps({"device": "A栋2层烟感", "state": "火警"},
                                            ensure_ascii=False)}
TTS_BUSINESS = {"CalledNumber": "13800000000", "TtsCode": "TTS_10001",
                "TtsParam": json.dumps({"place": "A栋2层"}, ensure_ascii=False),
                "PlayTimes": "2"}
TC_BODY = {"PhoneNumberSet": ["+8613800000000"], "SmsSdkAppId": "1400006666",
           "SignName": "园区安全", "TemplateId": "1110", "TemplateParamSet": ["A栋2层", "火警"]}


def loopback_test(f):
    events = queue.Queue()
    receiver = Receiver(AK_ID, AK_SECRET, TC_ID, TC_KEY, max_skew_s=900, emit=events.put)
    server = start_server(receiver)
    port = server.server_address[1]

    def event():
        try:
            return events.get(timeout=2)
        except queue.Empty:
            return {}

    def expect(what, result, status, code, provider, valid, reason, json_body=True):
        st, _ctype, raw = result
        ev = event()
        body = json.loads(raw) if json_body else raw
        if provider == "tencent_sms":
            resp = body.get("Response", {})
            got_code = resp.get("Error", {}).get("Code") or (
                resp.get("SendStatusSet") or [{}])[0].get("Code")
        else:
            got_code = body.get("Code") if json_body else None
        f.check(st == status, f"{what}: HTTP {st}, expected {status} ({raw[:200]!r})")
        f.check(got_code == code, f"{what}: code {got_code}, expected {code}")
        f.check(ev.get("provider") == provider and ev.get("valid") is valid
                and ev.get("reason") == reason,
                f"{what}: event provider/valid/reason {ev.get('provider')}/{ev.get('valid')}/"
                f"{ev.get('reason')} ({ev.get('detail')}), expected {provider}/{valid}/{reason}")
        return body, ev

    try:
        # Aliyun SMS, GET and POST.
        p = aliyun_params("SendSms", SMS_BUSINESS)
        body, ev = expect("aliyun GET", aliyun_send(port, "GET", p), 200, "OK", "aliyun_sms",
                          True, None)
        f.check(set(body) == {"Code", "Message", "BizId", "RequestId"}, f"SMS answer {body}")
        f.check(ev["numbers"] == ["13800000000", "13900000001"], f"numbers {ev['numbers']}")
        f.check(ev["template"] == "SMS_123456789" and ev["sign_name"] == "园区安全"
                and ev["template_params"] == {"device": "A栋2层烟感", "state": "火警"},
                f"template fields {ev}")
        f.check(ev["params"].get("Signature") and ev["method"] == "GET", "params and method")
        expect("aliyun POST", aliyun_send(port, "POST", aliyun_params("SendSms", SMS_BUSINESS)),
               200, "OK", "aliyun_sms", True, None)
        # Replaying the GET: same nonce.
        expect("aliyun replay", aliyun_send(port, "GET", p), 400, "SignatureNonceUsed",
               "aliyun_sms", False, "reused_nonce")
        # Forgeries.
        expect("aliyun changed parameter",
               aliyun_send(port, "GET", aliyun_params("SendSms", SMS_BUSINESS),
                           tamper={"PhoneNumbers": "13700000000"}),
               400, "SignatureDoesNotMatch", "aliyun_sms", False, "bad_signature")
        expect("aliyun wrong secret",
               aliyun_send(port, "POST", aliyun_params("SendSms", SMS_BUSINESS), secret="x"),
               400, "SignatureDoesNotMatch", "aliyun_sms", False, "bad_signature")
        expect("aliyun GET signed as POST",
               aliyun_send(port, "GET", aliyun_params("SendSms", SMS_BUSINESS),
                           sign_method="POST"),
               400, "SignatureDoesNotMatch", "aliyun_sms", False, "bad_signature")
        stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1000))
        expect("aliyun stale timestamp",
               aliyun_send(port, "GET", aliyun_params("SendSms", SMS_BUSINESS, timestamp=stale)),
               400, "InvalidTimeStamp.Expired", "aliyun_sms", False, "stale_timestamp")
        expect("aliyun unknown key",
               aliyun_send(port, "GET", aliyun_params("SendSms", SMS_BUSINESS, key_id="LTAI-x")),
               404, "InvalidAccessKeyId.NotFound", "aliyun_sms", False, "unknown_key")
        expect("aliyun missing nonce",
               aliyun_send(port, "GET", {k: v for k, v in aliyun_params(
                   "SendSms", SMS_BUSINESS).items() if k != "SignatureNonce"}),
               400, "MissingSignatureNonce", "aliyun_sms", False, "missing_parameter")
        expect("aliyun bad number",
               aliyun_send(port, "GET", aliyun_params("SendSms", dict(
                   SMS_BUSINESS, PhoneNumbers="+8613800000000"))),
               200, "isv.MOBILE_NUMBER_ILLEGAL", "aliyun_sms", False, "bad_phone_number")
        expect("aliyun non-string template value",
               aliyun_send(port, "GET", aliyun_params("SendSms", dict(
                   SMS_BUSINESS, TemplateParam='{"n": 3}'))),
               200, "isv.INVALID_JSON_PARAM", "aliyun_sms", False, "bad_template_param")
        expect("aliyun missing SignName",
               aliyun_send(port, "POST", aliyun_params("SendSms", {
                   k: v for k, v in SMS_BUSINESS.items() if k != "SignName"})),
               400, "MissingSignName", "aliyun_sms", False, "missing_parameter")
        # Format absent: XML, as documented.
        st, ctype, raw = aliyun_send(port, "GET", {k: v for k, v in aliyun_params(
            "SendSms", SMS_BUSINESS).items() if k != "Format"})
        event()
        f.check(st == 200 and ctype.startswith("text/xml") and b"<Code>OK</Code>" in raw,
                f"no Format: XML answer ({ctype}, {raw[:120]!r})")
        # Voice.
        body, ev = expect("voice", aliyun_send(port, "POST", aliyun_params(
            "SingleCallByTts", TTS_BUSINESS)), 200, "OK", "aliyun_voice", True, None)
        f.check(set(body) == {"Code", "Message", "CallId", "RequestId"}, f"voice answer {body}")
        f.check(ev["numbers"] == ["13800000000"] and ev["template"] == "TTS_10001"
                and ev["template_params"] == {"place": "A栋2层"}, f"voice event {ev}")
        expect("voice two numbers", aliyun_send(port, "GET", aliyun_params(
            "SingleCallByTts", dict(TTS_BUSINESS, CalledNumber="13800000000,13900000000"))),
            200, "isv.MOBILE_NUMBER_ILLEGAL", "aliyun_voice", False, "bad_phone_number")
        expect("voice PlayTimes 4", aliyun_send(port, "GET", aliyun_params(
            "SingleCallByTts", dict(TTS_BUSINESS, PlayTimes="4"))),
            400, "InvalidPlayTimes", "aliyun_voice", False, "bad_parameter")
        expect("voice wrong secret", aliyun_send(port, "GET", aliyun_params(
            "SingleCallByTts", TTS_BUSINESS), secret="nope"),
            400, "SignatureDoesNotMatch", "aliyun_voice", False, "bad_signature")
        # refuse_next / fail_next.
        ok = receiver.command({"cmd": "refuse_next", "provider": "aliyun_sms"})
        f.check(ok["code"] == "isv.BUSINESS_LIMIT_CONTROL" and ok["queued"] == 1,
                f"refuse_next answer {ok}")
        body, ev = expect("aliyun refused", aliyun_send(port, "GET", aliyun_params(
            "SendSms", SMS_BUSINESS)), 200, "isv.BUSINESS_LIMIT_CONTROL", "aliyun_sms", True,
            None)
        f.check(ev["refused"] is True and "BizId" not in body, f"refused event {ev}")
        expect("aliyun after refusal", aliyun_send(port, "GET", aliyun_params(
            "SendSms", SMS_BUSINESS)), 200, "OK", "aliyun_sms", True, None)
        receiver.command({"cmd": "refuse_next", "provider": "aliyun_voice",
                          "code": "isv.DAY_LIMIT_CONTROL"})
        expect("voice refused", aliyun_send(port, "GET", aliyun_params(
            "SingleCallByTts", TTS_BUSINESS)), 200, "isv.DAY_LIMIT_CONTROL", "aliyun_voice",
            True, None)
        receiver.command({"cmd": "fail_next", "provider": "aliyun_sms", "status": 503})
        expect("aliyun 503", aliyun_send(port, "GET", aliyun_params("SendSms", SMS_BUSINESS)),
               503, "ServiceUnavailable", "aliyun_sms", True, None)

        # Tencent.
        body, ev = expect("tencent", tencent_send(port, TC_BODY), 200, "Ok", "tencent_sms",
                          True, None)
        entry = body["Response"]["SendStatusSet"][0]
        f.check(set(entry) == {"SerialNo", "PhoneNumber", "Fee", "SessionContext", "Code",
                               "Message", "IsoCode"} and entry["PhoneNumber"] == "+8613800000000"
                and entry["IsoCode"] == "CN" and body["Response"].get("RequestId"),
                f"tencent answer {body}")
        f.check(ev["numbers"] == ["+8613800000000"] and ev["template"] == "1110"
                and ev["template_params"] == ["A栋2层", "火警"] and ev["sign_name"] == "园区安全",
                f"tencent event {ev}")
        expect("tencent minimal signed headers",
               tencent_send(port, TC_BODY, signed=("content-type", "host")), 200, "Ok",
               "tencent_sms", True, None)
        expect("tencent changed body",
               tencent_send(port, TC_BODY, tamper_body=dict(TC_BODY,
                                                            PhoneNumberSet=["+8613700000000"])),
               200, "AuthFailure.SignatureFailure", "tencent_sms", False, "bad_signature")
        expect("tencent wrong key", tencent_send(port, TC_BODY, key="wrong"),
               200, "AuthFailure.SignatureFailure", "tencent_sms", False, "bad_signature")
        expect("tencent other Host", tencent_send(port, TC_BODY, host="sms.tencentcloudapi.com"),
               200, "AuthFailure.SignatureFailure", "tencent_sms", False, "bad_signature")
        expect("tencent stale", tencent_send(port, TC_BODY, timestamp=int(time.time()) - 400),
               200, "AuthFailure.SignatureExpire", "tencent_sms", False, "stale_timestamp")
        expect("tencent unknown id", tencent_send(port, TC_BODY, secret_id="AKID-other"),
               200, "AuthFailure.SecretIdNotFound", "tencent_sms", False, "unknown_key")
        expect("tencent bad number", tencent_send(port, dict(TC_BODY,
                                                             PhoneNumberSet=["13800000000"])),
               200, "InvalidParameterValue.IncorrectPhoneNumber", "tencent_sms", False,
               "bad_phone_number")
        expect("tencent numeric template param",
               tencent_send(port, dict(TC_BODY, TemplateParamSet=[3])),
               200, "InvalidParameter", "tencent_sms", False, "bad_template_param")
        receiver.command({"cmd": "refuse_next", "provider": "tencent_sms"})
        body, ev = expect("tencent refused", tencent_send(port, TC_BODY), 200,
                          "LimitExceeded.PhoneNumberThirtySecondLimit", "tencent_sms", True, None)
        f.check(body["Response"]["SendStatusSet"][0]["Fee"] == 0 and ev["refused"],
                "tencent refused entry")
        receiver.command({"cmd": "refuse_next", "provider": "tencent_sms",
                          "code": "FailedOperation.TemplateIncorrectOrUnapproved"})
        body, _ = expect("tencent refused (error)", tencent_send(port, TC_BODY), 200,
                         "FailedOperation.TemplateIncorrectOrUnapproved", "tencent_sms", True,
                         None)
        f.check("SendStatusSet" not in body["Response"], "top-level Error has no SendStatusSet")
        expect("tencent after refusals", tencent_send(port, TC_BODY), 200, "Ok",
               "tencent_sms", True, None)
        receiver.command({"cmd": "fail_next", "provider": "tencent_sms", "status": 502})
        receiver.command({"cmd": "refuse_next", "provider": "tencent_sms"})
        expect("tencent 502 before the refusal", tencent_send(port, TC_BODY), 502,
               "InternalError", "tencent_sms", True, None)
        expect("tencent refusal after the 502", tencent_send(port, TC_BODY), 200,
               "LimitExceeded.PhoneNumberThirtySecondLimit", "tencent_sms", True, None)
        # Unknown endpoint.
        st, _c, _r = http_call(port, "GET", "/?Action=QuerySendDetails", {})
        ev = event()
        f.check(st == 404 and ev.get("reason") == "unknown_endpoint", f"unknown endpoint {ev}")
        try:
            receiver.command({"cmd": "refuse_next", "provider": "nobody"})
            f.check(False, "unknown provider refused")
        except ValueError:
            f.check(True, "")
    finally:
        server.shutdown()
        server.server_close()


def cli_test(f):
    """The program itself: listening line, a request, commands, quit; then stdin EOF."""
    argv = [sys.executable, os.path.abspath(__file__), "--listen", "127.0.0.1:0",
            "--aliyun-id", AK_ID, "--aliyun-secret", AK_SECRET, "--tencent-id", TC_ID,
            "--tencent-key", TC_KEY]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         encoding="utf-8")
    try:
        first = json.loads(p.stdout.readline())
        f.check(first.get("event") == "listening" and first.get("port", 0) > 0,
                f"CLI listening: {first}")
        port = first["port"]
        st, _c, _r = aliyun_send(port, "GET", aliyun_params("SendSms", SMS_BUSINESS))
        ev = json.loads(p.stdout.readline())
        f.check(st == 200 and ev["event"] == "request" and ev["valid"] is True
                and ev["sign_name"] == "园区安全", f"CLI request event: {ev}")
        p.stdin.write(json.dumps({"cmd": "refuse_next", "provider": "tencent_sms",
                                  "code": "LimitExceeded.PhoneNumberDailyLimit"}) + "\n")
        p.stdin.flush()
        ok = json.loads(p.stdout.readline())
        f.check(ok == {"event": "command_ok", "cmd": "refuse_next", "provider": "tencent_sms",
                       "code": "LimitExceeded.PhoneNumberDailyLimit", "queued": 1,
                       "level": "status"}, f"CLI command_ok: {ok}")
        st, _c, raw = tencent_send(port, TC_BODY)
        ev = json.loads(p.stdout.readline())
        f.check(json.loads(raw)["Response"]["SendStatusSet"][0]["Code"]
                == "LimitExceeded.PhoneNumberDailyLimit" and ev["refused"], "CLI refusal")
        p.stdin.write("not json\n")
        p.stdin.flush()
        err = json.loads(p.stdout.readline())
        f.check(err["event"] == "command_error", f"CLI command_error: {err}")
        p.stdin.write('{"cmd":"quit"}\n')
        p.stdin.flush()
        rest = [json.loads(x) for x in p.stdout.read().splitlines()]
        f.check(p.wait(3) == 0, "CLI exits 0 on quit")
        f.check([x["event"] for x in rest] == ["command_ok", "stopped"], f"CLI quit: {rest}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         encoding="utf-8")
    try:
        json.loads(p.stdout.readline())
        p.stdin.close()
        rest = [json.loads(x) for x in p.stdout.read().splitlines()]
        f.check(p.wait(3) == 0 and rest and rest[-1] == {"event": "stopped",
                                                         "why": "end of stdin"},
                f"CLI exits 0 on stdin EOF: {rest}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def self_test(directory):
    started = time.monotonic()
    f = Failures()
    golden_test(directory, f)
    loopback_test(f)
    cli_test(f)
    took = time.monotonic() - started
    status = "ok" if not f.failed else f"{len(f.failed)} FAILED"
    print(f"sms self-test: {f.passed} checks passed, {status} ({took:.2f} s)")
    return 0 if not f.failed else 1


# --- main ------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", help="HOST:PORT (PORT 0: any free port)")
    ap.add_argument("--aliyun-id", help="the AccessKeyId Aliyun requests must carry")
    ap.add_argument("--aliyun-secret", help="its AccessKeySecret")
    ap.add_argument("--tencent-id", help="the SecretId Tencent requests must carry")
    ap.add_argument("--tencent-key", help="its SecretKey")
    ap.add_argument("--max-skew-s", type=float, default=ALIYUN_DEFAULT_SKEW_S,
                    help="seconds a Timestamp may be off (900, Aliyun's 15 minutes); also "
                         "bounds Tencent's window")
    ap.add_argument("--tencent-max-skew-s", type=float, default=None,
                    help="seconds X-TC-Timestamp may be off (default: the smaller of "
                         "--max-skew-s and Tencent's documented 300)")
    ap.add_argument("--self-test", nargs="?", metavar="DIR",
                    const=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                       "golden", "sms"))
    args = ap.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    if args.self_test:
        return self_test(args.self_test)
    missing = [n for n in ("listen", "aliyun_id", "aliyun_secret", "tencent_id", "tencent_key")
               if getattr(args, n) is None]
    if missing:
        ap.error("required: " + ", ".join("--" + n.replace("_", "-") for n in missing))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
