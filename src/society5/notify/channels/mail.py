"""E-mail through an SMTP server (smtplib): multipart plain text + HTML, UTF-8 headers for Japanese."""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
from collections.abc import Sequence
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


CONNECTIONS = 4  # SMTP connections a batch is spread over
_PER_CONNECTION_MIN = 25  # a smaller batch uses fewer connections


class MailChannel:
    name = "mail"

    def __init__(self, settings: Settings, connections: int = CONNECTIONS):
        self.settings = settings
        self.connections = max(1, connections)

    def _configured(self) -> None:
        s = self.settings
        if not s.smtp_host or not s.smtp_from:
            raise GiveUp("mail is not configured: set SOCIETY5_SMTP_HOST and SOCIETY5_SMTP_FROM")

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP
        if s.smtp_ssl:
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
        try:
            if s.smtp_starttls and not s.smtp_ssl:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, out: Outgoing) -> None:
        self._configured()
        msg = build(out, self.settings.smtp_from)
        try:
            with self._connect() as smtp:
                smtp.send_message(msg)
        except Exception as err:
            classified = _classified(err, out)
            if classified is err:
                raise
            raise classified from err

    def send_many(self, outs: Sequence[Outgoing]) -> list[Exception | None]:
        """Send a batch over a few reused connections (each sends many messages, one after another); per
        message ``None`` (accepted) or the exception ``send`` would raise."""
        try:
            self._configured()
        except GiveUp as err:
            return [err for _ in outs]
        results: list[Exception | None] = [None] * len(outs)
        n = min(self.connections, max(1, len(outs) // _PER_CONNECTION_MIN))
        shares = [list(range(i, len(outs), n)) for i in range(n)]
        if n == 1:
            self._send_share(outs, shares[0], results)
        else:
            threads = [threading.Thread(target=self._send_share, args=(outs, share, results),
                                        name="society5-notify-smtp", daemon=True) for share in shares]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return results

    def _send_share(self, outs: Sequence[Outgoing], share: list[int],
                    results: list[Exception | None]) -> None:
        smtp: smtplib.SMTP | None = None
        try:
            for n, i in enumerate(share):
                out = outs[i]
                if smtp is None:
                    try:
                        smtp = self._connect()
                    except Exception as err:  # the server is away: every message left fails alike
                        for rest in share[n:]:
                            results[rest] = _classified(err, outs[rest])
                        return
                try:
                    smtp.send_message(build(out, self.settings.smtp_from))
                except smtplib.SMTPResponseException as err:  # refused by the server: the session goes on
                    results[i] = _classified(err, out)
                    if err.smtp_code == 421:  # the server is closing the connection
                        _drop(smtp)
                        smtp = None
                except smtplib.SMTPRecipientsRefused as err:
                    results[i] = _classified(err, out)
                except Exception as err:  # the connection broke: the next message reconnects
                    results[i] = _classified(err, out)
                    _drop(smtp)
                    smtp = None
        finally:
            if smtp is not None:
                try:
                    smtp.quit()
                except Exception:
                    smtp.close()


def _drop(smtp: smtplib.SMTP) -> None:
    try:
        smtp.close()
    except Exception:  # already broken
        pass


def _classified(err: Exception, out: Outgoing) -> Exception:
    """``GiveUp`` for a refusal that can never succeed; otherwise the error itself (retried)."""
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in err.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return GiveUp(f"the mail server refused {out.address}: {err.recipients}")
        return err
    if isinstance(err, smtplib.SMTPAuthenticationError):
        return err  # the server's settings are wrong, not this message: retry while someone fixes them
    if isinstance(err, smtplib.SMTPResponseException) and 500 <= err.smtp_code < 600 \
            and err.smtp_code not in (530, 535):
        detail = f"{err.smtp_code} {err.smtp_error!r}"
        return GiveUp(f"the mail server refused the message: {detail}")
    return err
