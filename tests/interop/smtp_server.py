"""An SMTP server for the e-mail push test: aiosmtpd (PyPI) requiring STARTTLS, writing each
message it accepts as JSON (envelope, decoded subject and body, whether TLS was on) into a
folder. Usage: smtp_server.py PORT CERT KEY OUT_DIR"""

import email
import email.policy
import json
import pathlib
import ssl
import sys
import threading

from aiosmtpd.controller import Controller


class Save:
    def __init__(self, out):
        self.out = pathlib.Path(out)
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "content_type": message.get_content_type(),
            "body": message.get_content(),
            "tls": session.ssl is not None,
        }
        tmp = self.out / f".{self.count}.json"
        tmp.write_text(json.dumps(record, ensure_ascii=False))
        tmp.rename(self.out / f"{self.count}.json")
        return "250 Message accepted for delivery"


def main():
    port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        Save(out),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
    )
    controller.start()
    print("ready", flush=True)
    # The controller serves from its own thread; this one only waits to be killed.
    threading.Event().wait()


if __name__ == "__main__":
    main()
