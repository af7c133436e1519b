"""Cards we issue: identifiers, lifecycle (who/when/why), staff admin and CSV import, the driver's own page."""

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from cards import services
from cards.identifiers import InvalidIdentifier, emaid_check_digit, normalise_contract_id, normalise_uid
from cards.models import Card, CardStatusChange
from tests.factories import CardFactory, DriverFactory, UserFactory

# Published vectors of the eMI3 "Check Digit Calculation for Contract-IDs" (and eMI3 Part 2, 1.2.2.1).
CHECK_DIGITS = {
    "NN123ABCDEFGHI": "T",
    "FRXYZ123456789": "2",
    "ITA1B2C3E4F5G6": "4",
    "ESZU8WOX834H1D": "R",
    "PT73902837ABCZ": "Z",
    "DE83DUIEN83QGZ": "D",
    "DE83DUIEN83ZGQ": "M",
    "DE8AA001234567": "0",
    "DE8AACA2B3C4D5": "L",
}


@pytest.mark.parametrize(("body", "digit"), CHECK_DIGITS.items())
def test_emaid_check_digit_matches_published_examples(body, digit):
    assert emaid_check_digit(body) == digit
    assert emaid_check_digit(body.lower()) == digit


def test_contract_id_format_and_check_digit_are_enforced():
    assert normalise_contract_id("de-8aa-ca2b3c4d5-l") == "DE-8AA-CA2B3C4D5-L"
    assert normalise_contract_id("DE8AACA2B3C4D5L") == "DE-8AA-CA2B3C4D5-L"
    assert normalise_contract_id("DE-8AA-CA2B3C4D5") == "DE-8AA-CA2B3C4D5-L"  # completed when absent
    with pytest.raises(InvalidIdentifier, match="wrong check digit"):
        normalise_contract_id("DE-8AA-CA2B3C4D5-K")
    for bad in ("BE-MBP-C1234", "B1-MBP-C12345678-9", "BE_MBP_C12345678", ""):
        with pytest.raises(InvalidIdentifier, match="not an eMAID"):
            normalise_contract_id(bad)


def test_rfid_uid_is_upper_case_hex_without_separators():
    assert normalise_uid("04:a1:b2 c3-d4") == "04A1B2C3D4"
    assert normalise_uid("app-user-1", "APP_USER") == "APP-USER-1"
    with pytest.raises(InvalidIdentifier):
        normalise_uid("04-ZZ")
    with pytest.raises(InvalidIdentifier):
        normalise_uid("0" * 37)


def test_issue_card_normalises_defaults_and_records(db, settings):
    settings.CARDS_DEFAULT_RFID_WHITELIST = "ALLOWED_OFFLINE"
    staff = UserFactory(is_staff=True)
    card = services.issue_card(uid="04:aa:bb", contract_id="be-mbp-c12345678", by=staff)
    assert card.uid == "04AABB" and card.contract_id == "BE-MBP-C12345678-O"
    assert card.whitelist == "ALLOWED_OFFLINE" and card.status == Card.Status.ACTIVE
    app = services.issue_card(uid="app-1", token_type=Card.Type.APP_USER)
    assert app.whitelist == "NEVER" and normalise_contract_id(app.contract_id) == app.contract_id
    settings.CARDS_DEFAULT_RFID_WHITELIST = "ALLOWED"
    assert services.issue_card(uid="04CC").whitelist == "ALLOWED"
    change = card.status_changes.get()
    assert (change.old_status, change.new_status, change.changed_by) == ("", "active", staff)
    with pytest.raises(services.CardError, match="already exists"):
        services.issue_card(uid="04AABB")
    with pytest.raises(services.CardError, match="check digit"):
        services.issue_card(uid="04DD", contract_id="BE-MBP-C12345678-9")
    assert Card.objects.count() == 3


def test_lifecycle_changes_record_who_when_and_why(db):
    staff = UserFactory(is_staff=True)
    card = CardFactory()
    services.block_card(card, by=staff, reason="Payment overdue")
    services.unblock_card(card, by=staff, reason="Paid")
    services.report_lost(card, by=staff, reason="Lost in Gent")
    card.refresh_from_db()
    assert card.status == Card.Status.LOST and card.valid is False
    with pytest.raises(services.CardError):
        services.unblock_card(card, by=staff, reason="Found it?")  # lost stays lost: a new card is issued
    new = services.replace_card(card, new_uid="04:99:88", by=staff, reason="New card sent")
    card.refresh_from_db()
    assert card.status == Card.Status.REPLACED and card.replaced_by == new
    assert new.uid == "049988" and new.driver == card.driver and new.status == Card.Status.ACTIVE
    history = list(card.status_changes.order_by("changed_at", "pk").values_list("old_status", "new_status", "reason"))
    assert history == [
        ("active", "blocked", "Payment overdue"),
        ("blocked", "active", "Paid"),
        ("active", "lost", "Lost in Gent"),
        ("lost", "replaced", f"Replaced by {new.contract_id}: New card sent"),
    ]
    assert all(c.changed_by == staff and c.changed_at for c in card.status_changes.all())
    with pytest.raises(services.CardError, match="reason"):
        services.block_card(new, by=staff, reason="  ")
    assert CardStatusChange.objects.filter(card=new).count() == 1


def test_cards_past_validity_are_expired(db):
    today = timezone.localdate()
    old = CardFactory(valid_until=today - dt.timedelta(days=1))
    current = CardFactory(valid_until=today)
    assert services.expire_cards() == 1
    old.refresh_from_db()
    current.refresh_from_db()
    assert old.status == Card.Status.EXPIRED and current.status == Card.Status.ACTIVE
    assert old.status_changes.get().reason.startswith("Validity ended")


# -- CSV import ------------------------------------------------------------------------------------------

GOOD_CSV = """uid,contract_id,type,whitelist,visual_number,driver,valid_until
04:AA:01,BE-MBP-C00000001,RFID,,MBP-1,alice,2030-01-01
04aa02,,,ALWAYS,MBP-2,,
app-7,,APP_USER,,,,
"""


def test_csv_import_creates_every_card_or_none(db):
    DriverFactory(user__username="alice")
    result = services.import_cards_csv(GOOD_CSV)
    assert result.errors == [] and len(result.created) == 3
    first = Card.objects.get(uid="04AA01")
    assert first.contract_id == "BE-MBP-C00000001-" + emaid_check_digit("BEMBPC00000001")
    assert first.driver.user.username == "alice" and first.valid_until == dt.date(2030, 1, 1)
    assert Card.objects.get(uid="04AA02").whitelist == "ALWAYS"
    assert Card.objects.get(uid="APP-7").whitelist == "NEVER"
    assert CardStatusChange.objects.filter(reason="Imported from CSV").count() == 3


def test_csv_import_rejects_the_whole_file_with_line_numbers(db):
    CardFactory(uid="04BB00")
    bad = """uid,contract_id,type,whitelist,driver,valid_from,valid_until
04CC01,,,,,,
04:zz,,,,,,
04CC03,BE-MBP-C00000001-9,,,,,
04CC04,,BADGE,SOMETIMES,nobody,2024-13-01,
04CC01,,,,,,
04BB00,,,,,2025-01-01,2024-01-01
"""
    result = services.import_cards_csv(bad)
    assert result.created == []
    assert Card.objects.count() == 1
    text = "\n".join(result.errors)
    assert "line 3: uid:" in text
    assert "line 4: contract_id:" in text and "check digit" in text
    assert "line 5: type 'BADGE'" in text and "line 5: whitelist 'SOMETIMES'" in text
    assert "line 5: driver: no user 'nobody'" in text and "line 5: valid_from '2024-13-01'" in text
    assert "line 6: uid 04CC01 also on line 2" in text
    assert "line 7: valid_until is before valid_from" in text
    assert [int(e.split(":")[0].split()[1]) for e in result.errors] == sorted(
        int(e.split(":")[0].split()[1]) for e in result.errors
    )


def test_csv_import_checks_header_and_clashes_with_stored_cards(db):
    CardFactory(uid="04BB00")
    assert services.import_cards_csv("id,colour\n1,red\n").errors == [
        "line 1: missing column(s) uid",
        "line 1: unknown column(s) id, colour (allowed: uid, contract_id, type, whitelist, visual_number, driver, "
        "valid_from, valid_until)",
    ]
    clash = services.import_cards_csv("uid\n04CC00\n04bb00\n")
    assert clash.errors == ["line 3: uid 04BB00 already belongs to a card"] and Card.objects.count() == 1
    assert services.import_cards_csv("uid\n").errors == ["the file has no cards"]


def test_csv_import_refuses_values_longer_than_a_card_holds(db):
    too_long = "V" * (Card._meta.get_field("visual_number").max_length + 1)
    csv_text = f"uid,visual_number\n04DD01,MBP-1\n04DD02,{too_long}\n04DD03,MBP-3\n"
    result = services.import_cards_csv(csv_text)
    assert result.created == [] and not Card.objects.exists()
    assert result.errors == ["line 3: visual_number is 65 characters long, at most 64 allowed"]


def test_admin_csv_import_of_a_too_long_field_names_the_line(admin_client, db):
    upload = SimpleUploadedFile(
        "cards.csv", f"uid,visual_number\n04EE01,{'9' * 80}\n".encode(), content_type="text/csv"
    )
    rejected = admin_client.post("/admin/cards/card/import/", {"file": upload})
    page = rejected.content.decode()
    assert rejected.status_code == 200 and "nothing was imported" in page
    assert "line 2: visual_number is 80 characters long" in page and not Card.objects.exists()


# -- staff admin -------------------------------------------------------------------------------------------


def test_admin_search_filters_and_actions(admin_client, db):
    alice = DriverFactory(user__username="alice", user__email="alice@example.org")
    mine = CardFactory(driver=alice, uid="04ABCDEF")
    other = CardFactory(valid_until=timezone.localdate() + dt.timedelta(days=10))
    listing = admin_client.get("/admin/cards/card/", {"q": "alice"}).content.decode()
    assert mine.uid in listing and other.uid not in listing
    assert other.uid in admin_client.get("/admin/cards/card/", {"q": other.contract_id}).content.decode()
    expiring = admin_client.get("/admin/cards/card/", {"expiry": "30d"}).content.decode()
    assert other.uid in expiring and mine.uid not in expiring
    response = admin_client.post(
        "/admin/cards/card/", {"action": "block_cards", "_selected_action": [mine.pk, other.pk]}, follow=True
    )
    assert "2 card(s) blocked" in response.content.decode()
    assert set(Card.objects.values_list("status", flat=True)) == {"blocked"}
    blocked = admin_client.get("/admin/cards/card/", {"status__exact": "blocked"}).content.decode()
    assert mine.uid in blocked
    admin_client.post("/admin/cards/card/", {"action": "report_lost", "_selected_action": [mine.pk]})
    mine.refresh_from_db()
    assert mine.status == "lost" and mine.status_changes.first().changed_by.username == "admin"
    form = admin_client.post("/admin/cards/card/", {"action": "replace_cards", "_selected_action": [mine.pk]})
    assert "UID of the new card" in form.content.decode()
    admin_client.post(
        "/admin/cards/card/",
        {"action": "replace_cards", "_selected_action": [mine.pk], "apply": "1", "new_uid": "04:12:34", "reason": "x"},
    )
    mine.refresh_from_db()
    assert mine.status == "replaced" and mine.replaced_by.uid == "041234"


def test_admin_edit_normalises_and_bumps_last_updated(admin_client, db):
    card = CardFactory(uid="04AB")
    before = card.last_updated
    page = admin_client.get(f"/admin/cards/card/{card.pk}/change/")
    assert page.status_code == 200
    form = {
        "uid": "04:ab:cd",
        "type": "RFID",
        "contract_id": "BE-MBP-C99999999",
        "visual_number": "V",
        "issuer": "MobilityPlus",
        "whitelist": "ALWAYS",
        "status_changes-TOTAL_FORMS": "0",
        "status_changes-INITIAL_FORMS": "0",
        "deliveries-TOTAL_FORMS": "0",
        "deliveries-INITIAL_FORMS": "0",
    }
    response = admin_client.post(f"/admin/cards/card/{card.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    card.refresh_from_db()
    assert card.uid == "04ABCD" and card.contract_id == normalise_contract_id("BE-MBP-C99999999")
    assert card.whitelist == "ALWAYS" and card.last_updated > before
    form["contract_id"] = "BE-MBP-C99999999-1"
    refused = admin_client.post(f"/admin/cards/card/{card.pk}/change/", form)
    assert refused.status_code == 200 and "check digit" in refused.content.decode()


def test_admin_csv_import_page_shows_line_errors_and_imports_nothing(admin_client, db):
    page = admin_client.get("/admin/cards/card/import/")
    assert page.status_code == 200 and "Import cards from CSV" in page.content.decode()
    upload = SimpleUploadedFile("cards.csv", b"uid,whitelist\n04AA,ALWAYS\n04:zz,\n", content_type="text/csv")
    rejected = admin_client.post("/admin/cards/card/import/", {"file": upload}).content.decode()
    assert "nothing was imported" in rejected and "line 3: uid:" in rejected
    assert not Card.objects.exists()
    upload = SimpleUploadedFile("cards.csv", b"uid,whitelist\n04AA,ALWAYS\n04AB,\n", content_type="text/csv")
    done = admin_client.post("/admin/cards/card/import/", {"file": upload}, follow=True).content.decode()
    assert "Imported 2 cards" in done and Card.objects.count() == 2


def test_admin_pages_need_staff(client, db):
    user = UserFactory()
    client.force_login(user)
    assert client.get("/admin/cards/card/import/").status_code == 302
    assert client.get("/admin/cards/card/").status_code == 302


# -- the driver's own page ------------------------------------------------------------------------------------


def test_driver_sees_and_blocks_only_own_cards(client, db):
    alice, bob = DriverFactory(), DriverFactory()
    mine = CardFactory(driver=alice, visual_number="ALICE-1")
    CardFactory(driver=alice, visual_number="ALICE-OLD", status=Card.Status.EXPIRED)
    theirs = CardFactory(driver=bob, visual_number="BOB-1")
    assert client.get("/cards/").status_code == 302  # login first
    client.force_login(alice.user)
    page = client.get("/cards/").content.decode()
    assert "ALICE-1" in page and "ALICE-OLD" in page and "Expired" in page and "BOB-1" not in page
    assert client.post(f"/cards/{theirs.pk}/block/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == Card.Status.ACTIVE
    response = client.post(f"/cards/{mine.pk}/block/", {"reason": "Lost my wallet"}, follow=True)
    assert "is blocked everywhere" in response.content.decode()
    mine.refresh_from_db()
    assert mine.status == Card.Status.BLOCKED
    change = mine.status_changes.get()
    assert change.changed_by == alice.user and change.reason == "Lost my wallet"
    again = client.post(f"/cards/{mine.pk}/block/", follow=True).content.decode()
    assert "Only an active card can be blocked" in again


@pytest.mark.django_db(transaction=True)
def test_driver_blocks_a_card_in_the_browser(live_server, browser):
    driver = DriverFactory(user__username="carla")
    CardFactory(driver=driver, visual_number="CARLA-1")
    page = browser.new_page()
    page.goto(f"{live_server.url}/cards/")
    page.fill("input[name=username]", "carla")
    page.fill("input[name=password]", "secret-password")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(f"{live_server.url}/cards/")
    assert page.locator("td", has_text="CARLA-1").is_visible()
    page.get_by_label("Why block this card?").fill("Left it at the station")
    page.get_by_role("button", name="Block this card").click()
    page.wait_for_selector("text=is blocked everywhere")
    assert page.locator("td.status").inner_text() == "Blocked"
    assert Card.objects.get(visual_number="CARLA-1").status == Card.Status.BLOCKED
