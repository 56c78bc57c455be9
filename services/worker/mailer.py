"""The welcome e-mail, sent over SMTP to the configured server (a local catcher in dev)."""
import smtplib
from email.message import EmailMessage

from shared import request_ids
from shared.schemas import UserCreatedMessage
from shared.settings import get_settings


def welcome_message(user: UserCreatedMessage) -> EmailMessage:
    settings = get_settings()
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = f"{user.full_name} <{user.email}>"
    message["Subject"] = f"Welcome to Pulse, {user.full_name}!"
    # The same for every attempt: a welcome sent twice (the window in send_welcome_once) is the
    # same message twice, which a receiving server may drop and anyone can recognise.
    message["Message-ID"] = f"<welcome.{user.event_id}@pulse.local>"
    message["X-Pulse-Event-Id"] = user.event_id
    if request_ids.current():  # the signup's request, as in every log line about it
        message[request_ids.HEADER] = request_ids.current()
    message.set_content(
        f"Hello {user.full_name},\n\n"
        f"your Pulse account '{user.username}' is ready.\n"
        f"We will tailor recommendations as you explore.\n\n"
        f"— the Pulse team\n"
    )
    return message


def send(message: EmailMessage) -> None:
    settings = get_settings()
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(message)
