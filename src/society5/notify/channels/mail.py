"""E-mail through an SMTP server (smtplib): multipart plain text + HTML, UTF-8 headers for Japanese."""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid, parseaddr

from society5.core.outbox import GiveUp
from society5.core.settings import Settings
from society5.notify.channels.base import Outgoing

_ADDRESS = re.compile(r"^[^@\s<>\"',;]+@[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?$")


def check_address(address: str) -> str:
    if not _ADDRESS.match(address) or len(address) > 254:
        raise ValueError(f"{address!r} is not an e-mail address like name@example.jp")
    return address


def build(out: Outgoing, sender: str) -> EmailMessage:
    msg = EmailMessage()  # the default policy writes non-ASCII headers as RFC 2047 UTF-8 encoded words
    msg["Subject"] = out.title
    msg["From"] = sender
    msg["To"] = formataddr((out.recipient_name, out.address))
    msg["Date"] = formatdate(localtime=False)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid(idstring=out.delivery_id.replace("-", ""), domain=domain)
    msg["X-Society5-Delivery"] = out.delivery_id
    if out.urgent:
        msg["Importance"] = "high"
    msg.set_content(out.text, charset="utf-8")
    msg.add_alternative(out.html, subtype="html", charset="utf-8")
    return msg


class MailChannel:
    name = "mail"

    def __init__(self, settings: Settings):
        self.settings = settings

    def send(self, out: Outgoing) -> None:
        s = self.settings
        if not s.smtp_host or not s.smtp_from:
            raise GiveUp("mail is not configured: set SOCIETY5_SMTP_HOST and SOCIETY5_SMTP_FROM")
        msg = build(out, s.smtp_from)
        try:
            smtp: smtplib.SMTP
            if s.smtp_ssl:
                smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
            with smtp:
                if s.smtp_starttls and not s.smtp_ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_user:
                    smtp.login(s.smtp_user, s.smtp_password)
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as err:
            codes = [code for code, _ in err.recipients.values()]
            if all(500 <= code < 600 for code in codes):
                raise GiveUp(f"the mail server refused {out.address}: {err.recipients}") from err
            raise
        except smtplib.SMTPAuthenticationError:
            raise  # the server's settings are wrong, not this message: retry while someone fixes them
        except smtplib.SMTPResponseException as err:
            if 500 <= err.smtp_code < 600 and err.smtp_code not in (530, 535):
                detail = f"{err.smtp_code} {err.smtp_error!r}"
                raise GiveUp(f"the mail server refused the message: {detail}") from err
            raise
