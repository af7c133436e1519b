"""The designed login page and the password reset a driver can do alone (mail with a one-time link)."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from tests.factories import DriverFactory

pytestmark = pytest.mark.django_db


def test_login_page_offers_the_password_reset(client):
    page = client.get("/accounts/login/").content.decode()
    assert 'autocomplete="current-password"' in page and 'href="/accounts/password_reset/"' in page
    assert 'rel="icon"' in page
    assert client.get("/favicon.ico").status_code == 301


def test_a_driver_resets_the_password_through_the_mailed_link(client, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    user = DriverFactory().user
    user.email = "dana@example.org"
    user.set_password("old-password-1234")
    user.save()
    done = client.post("/accounts/password_reset/", {"email": "dana@example.org"}, follow=True)
    assert "Check your mailbox" in done.content.decode()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["dana@example.org"]
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert "Choose a new password" in form.content.decode()
    new = "a-new-Passw0rd-for-dana"
    changed = client.post(form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new}, follow=True)
    assert "Your password is changed" in changed.content.decode()
    user.refresh_from_db()
    assert user.check_password(new)
    # An unknown address learns nothing: the same answer, no mail.
    client.post("/accounts/password_reset/", {"email": "nobody@example.org"})
    assert len(mail.outbox) == 1
