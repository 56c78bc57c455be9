"""The welcome e-mail, sent over SMTP to the configured server (a local catcher in dev).

The person's full name is text a stranger typed into the public signup form: it appears only as
data (the display name of one `email.headerregistry.Address`, the subject's and body's words),
never as header syntax, and the envelope goes to the one address that signed up (`to_addrs`),
never to whatever a `To` header would parse into. A name `a@x.org, b@y.org, Bob` is then one
recipient with a strange display name, not three recipients.
"""
import smtplib
from email.headerregistry import Address
from email.message import EmailMessage

from shared.contracts.schemas import UserCreatedMessage
from shared.contracts.settings import get_settings
from shared.infra import request_ids


def _one_line(text: str) -> str:
    # The API refuses control characters in a name (shared.contracts.schemas.NonBlank); a message that reached
    # the queue another way (a backfill, a replayed dead letter) still cannot start a header line.
    return " ".join("".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text).split())


def recipient(user: UserCreatedMessage) -> Address:
    """The signed-up person as one address: display name = full name, addr_spec = the e-mail."""
    return Address(display_name=_one_line(user.full_name), addr_spec=user.email)


def welcome_message(user: UserCreatedMessage) -> EmailMessage:
    settings = get_settings()
    name = _one_line(user.full_name)
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = recipient(user)
    message["Subject"] = f"Welcome to Pulse, {name}!"
    # The same for every attempt: a welcome sent twice (the window in send_welcome_once) is the
    # same message twice, which a receiving server may drop and anyone can recognise.
    message["Message-ID"] = f"<welcome.{user.event_id}@pulse.local>"
    message["X-Pulse-Event-Id"] = user.event_id
    if request_ids.current():  # the signup's request, as in every log line about it
        message[request_ids.HEADER] = request_ids.current()
    message.set_content(
        f"Hello {name},\n\n"
        f"your Pulse account '{user.username}' is ready.\n"
        f"We will tailor recommendations as you explore.\n\n"
        f"— the Pulse team\n"
    )
    return message


def send(message: EmailMessage, to: str) -> None:
    """Send `message` to `to` alone: the envelope recipient is given, not read from the headers."""
    settings = get_settings()
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(message, to_addrs=[to])
