import pytest
from rest_framework.authtoken.models import Token

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_anonymous_visit_goes_to_login_and_back(page, live_server, owner):
    page.goto(f"{live_server.url}/account/")
    assert "/login/" in page.url
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "didn't match" in page.inner_text("main")
    assert page.input_value("input[name=username]") == "owner"  # kept for the second try
    page.fill("input[name=password]", "pw-owner")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/account/")
    assert page.inner_text("h1") == "owner"


def test_create_an_api_token_on_the_account_page(logged_in_page, live_server, owner):
    page = logged_in_page
    page.goto(f"{live_server.url}/account/")
    page.click("text=Create token")
    token = Token.objects.get(user=owner)
    assert page.inner_text("#api-token") == token.key
    assert "Your API token was created" in page.inner_text(".flash")   # the first: there was no previous one
    page.click("text=Replace token")
    assert page.inner_text("#api-token") == Token.objects.get(user=owner).key != token.key
    assert "previous one no longer works" in page.inner_text(".flash")
