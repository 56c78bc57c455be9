"""Promise: the welcome e-mail goes to the one address that signed up, and nothing a stranger
types into the public signup form becomes a recipient or a header (docs/api.md, Enumeration).

Attacked over HTTP against the real pipeline (API server, outbox relay, worker, mailer, a real
SMTP server that records the envelope's RCPT TO, which is who receives a message whatever its
headers say)."""
import os
import uuid
from datetime import UTC, datetime

import pytest
import requests

from tests.fixtures import wait_for
from tests.helpers import signup_body

pytestmark = pytest.mark.usefixtures("pipeline")


def deliveries_to(mail, address: str) -> list:
    with mail._lock:
        return [(rcpts, m) for rcpts, m in mail.deliveries if address in rcpts or address in (m["To"] or "")]


def everything_sent(mail) -> list[str]:
    with mail._lock:
        return [rcpt.lower() for rcpts, _ in mail.deliveries for rcpt in rcpts]


def signup(api: str, **overrides) -> requests.Response:
    key = {"Authorization": f"Bearer {os.environ['PULSE_API_KEY']}"}  # the run's admin key: no signup limit
    return requests.post(f"{api}/api/users/signup", json=signup_body(**overrides), headers=key, timeout=30)


def test_a_full_name_listing_addresses_mails_exactly_the_one_signed_up_address(api, services):
    mail = services["mail"]
    tag = uuid.uuid4().hex[:8]
    others = [f"victim.{tag}@x.org", f"second.{tag}@y.org"]
    name = f"{others[0]}, {others[1]}, Bob"
    email = f"signed.up.{tag}@example.com"
    response = signup(api, email=email, full_name=name)
    assert response.status_code == 201, response.text

    [(recipients, message)] = wait_for(lambda: deliveries_to(mail, email), timeout=60, what="the welcome e-mail")
    assert recipients == (email,)  # RCPT TO: one recipient, the one who signed up
    [address] = message["To"].addresses
    assert address.addr_spec == email and address.display_name == name
    assert not [r for r in everything_sent(mail) if tag in r and r != email], "another address was mailed"
    # The name is words in the subject and body, nothing more.
    assert message["Subject"] == f"Welcome to Pulse, {name}!"
    assert message["Cc"] is None and message["Bcc"] is None


@pytest.mark.parametrize("separator", ["\r\n", "\n", "\r"])
def test_a_line_break_in_the_name_is_refused_before_anything_is_stored(api, separator):
    tag = uuid.uuid4().hex[:8]
    response = signup(api, full_name=f"Bob{separator}Bcc: evil.{tag}@x.org")
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["full_name"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\u000b\u000c"])
def test_unicode_line_separators_in_the_name_add_no_header_and_no_recipient(api, services, separator):
    """Characters that some mail software treats as line ends arrive as a name's spaces."""
    mail = services["mail"]
    tag = uuid.uuid4().hex[:8]
    email = f"unicode.{tag}@example.com"
    response = signup(api, email=email, full_name=f"Bob{separator}Bcc: evil.{tag}@x.org")
    if response.status_code == 422:  # refused outright is as good: nothing stored, nothing sent
        assert [e["field"] for e in response.json()["errors"]] == ["full_name"]
        return
    assert response.status_code == 201, response.text
    [(recipients, message)] = wait_for(lambda: deliveries_to(mail, email), timeout=60, what="the welcome e-mail")
    assert recipients == (email,)
    assert message["Bcc"] is None and message["Cc"] is None
    assert [a.addr_spec for a in message["To"].addresses] == [email]
    assert not [r for r in everything_sent(mail) if f"evil.{tag}" in r]


def test_a_message_that_reached_the_queue_with_a_crlf_name_still_mails_one_address_and_adds_no_header(services):
    """The API refuses such a name; a message that reached the worker another way (a backfill, a
    replayed dead letter) is sent by the same mailer to the same real SMTP server."""
    from services.worker import mailer
    from shared.contracts.schemas import UserCreatedMessage

    mail = services["mail"]
    tag = uuid.uuid4().hex[:8]
    email = f"queued.{tag}@example.com"
    user = UserCreatedMessage(event_id=f"adv-{tag}", user_id=1, username=f"u_{tag}", email=email,
                              full_name=f"Bob\r\nBcc: evil.{tag}@x.org\r\nX-Injected: yes\r\n\r\nbody",
                              city="Kyiv", country_code="UA", created_at=datetime.now(UTC))
    mailer.send(mailer.welcome_message(user), to=user.email)
    [(recipients, message)] = wait_for(lambda: deliveries_to(mail, email), timeout=30, what="the e-mail")
    assert recipients == (email,)
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert [a.addr_spec for a in message["To"].addresses] == [email]
    assert not [r for r in everything_sent(mail) if f"evil.{tag}" in r]
