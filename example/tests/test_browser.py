"""The example app in a real browser (Playwright driving Debian's Chromium).

Each test gets its own server (uvicorn, embedded defaults) on its own SQLite
database, seeded with the demo data. Screenshots of the key states go to
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from browser_support import UNIT, card_id, column_id, login, open_board, rename_card, shot

PENDING = "[data-pending='true']"


def settled(page: Page) -> None:
    """Wait until no write of the page is waiting for the server."""
    expect(page.locator(PENDING)).to_have_count(0)


def test_two_users_see_each_others_edits(server, pages):
    alice, bob = pages["alice"], pages["bob"]
    for page, name in ((alice, "alice"), (bob, "bob")):
        login(page, server, name)
        open_board(page, "Launch")
    expect(alice.get_by_test_id("viewers")).to_contain_text("2")  # a runtime variable
    expect(alice.get_by_test_id("notifications")).to_contain_text("bob joined")
    card = card_id(alice, "Book the venue")
    rename_card(alice, card, "Book the big venue")
    expect(bob.get_by_test_id(f"card-title-{card}")).to_have_text("Book the big venue")
    bob.get_by_test_id(f"comment-input-{card}").fill("On it")
    bob.get_by_test_id(f"add-comment-{card}").click()
    expect(alice.get_by_test_id(f"card-{card}")).to_contain_text("On it")
    shot(alice, "two-users-alice")
    shot(bob, "two-users-bob")


def test_a_change_made_with_the_orm_or_admin_appears_in_the_page(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Fix the demo")
    admin = pages["admin"]
    admin.goto(server.url + "admin/login/")
    admin.fill("#id_username", "alice")
    admin.fill("#id_password", "demo")
    admin.click("input[type=submit]")
    admin.goto(server.url + f"admin/board/card/{card}/change/")
    admin.fill("#id_title", "Fixed through the admin")
    admin.click("input[name=_save]")
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Fixed through the admin")
    shot(alice, "admin-change")


def test_a_refused_write_is_rolled_back_and_shows_the_channels_reason(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Book the venue")
    rename_card(alice, card, "SHOUTING IS REFUSED")
    banner = alice.get_by_test_id("error-banner")
    # The reason BoardChannel.can_save raised, word for word; no bare status.
    expect(banner).to_contain_text(
        "Could not rename “Book the venue”: Titles in capitals are not allowed: please don't shout."
    )
    expect(banner).not_to_contain_text("not allowed (")
    expect(banner).not_to_contain_text("403")
    expect(banner).not_to_contain_text("400")
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Book the venue")
    shot(alice, "refused-write")

    rename_card(alice, card, "Book the venue early")  # the next operation that succeeds
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Book the venue early")
    expect(banner).to_be_hidden()


def test_private_notes_never_reach_the_other_user(server, pages):
    alice, bob = pages["alice"], pages["bob"]
    for page, name in ((alice, "alice"), (bob, "bob")):
        login(page, server, name)
        open_board(page, "Launch")
    alice.get_by_test_id("note-input").fill("Alice only: surprise party")
    alice.get_by_test_id("add-note").click()
    expect(alice.get_by_test_id("notes")).to_contain_text("Alice only: surprise party")
    # Bob sees his own note, and a later change of his, but never Alice's.
    bob.get_by_test_id("note-input").fill("Bob's second note")
    bob.get_by_test_id("add-note").click()
    expect(bob.get_by_test_id("notes")).to_contain_text("Bob's second note")
    expect(bob.get_by_test_id("notes")).to_contain_text("Bob's private note")
    expect(bob.locator("body")).not_to_contain_text("surprise party")
    expect(bob.locator("body")).not_to_contain_text("Alice's private note")
    shot(bob, "private-notes-bob")


def test_the_page_reconnects_after_a_restart_and_shows_what_changed(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Pick a date")
    server.stop()
    expect(alice.get_by_test_id("connection-status")).not_to_have_text("connected")
    server.orm(
        "from board.models import Card; "
        f"Card.objects.filter(pk={card}).update(title='Date picked while down')"
    )
    server.start()
    expect(alice.get_by_test_id("connection-status")).to_have_text("connected", timeout=UNIT * 6000)
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Date picked while down")
    shot(alice, "after-restart")


def test_the_board_list_updates_when_a_board_is_created(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    admin = pages["admin"]
    admin.goto(server.url + "admin/login/")
    admin.fill("#id_username", "alice")
    admin.fill("#id_password", "demo")
    admin.click("input[type=submit]")
    admin.goto(server.url + "admin/board/board/add/")
    admin.fill("#id_name", "Created in the admin")
    admin.select_option("#id_members", label="alice")
    admin.click("input[name=_save]")
    expect(alice.get_by_test_id("board-list")).to_contain_text("Created in the admin")
    shot(alice, "board-list-updated")


def test_a_user_without_boards_creates_one_with_columns_and_cards(server, pages):
    carol = pages["carol"]
    login(carol, server, "carol")
    expect(carol.get_by_test_id("no-boards")).to_be_visible()
    carol.get_by_test_id("new-board-name").fill("Carol's garden")
    carol.get_by_test_id("create-board").click()
    expect(carol.get_by_test_id("board-name")).to_have_text("Carol's garden")
    expect(carol.get_by_test_id("connection-status")).to_have_text("connected")
    expect(carol.get_by_test_id("members")).to_have_text("Members: carol (owner)")

    for title in ("To plant", "Planted"):
        carol.get_by_test_id("new-column-title").fill(title)
        carol.get_by_test_id("add-column").click()
        expect(carol.locator("[data-testid^='column-title-']", has_text=title)).to_be_visible()
    settled(carol)
    to_plant, planted = column_id(carol, "To plant"), column_id(carol, "Planted")
    for title in ("Tomatoes", "Basil"):
        carol.get_by_test_id(f"new-card-title-{to_plant}").fill(title)
        carol.get_by_test_id(f"add-card-{to_plant}").click()
    settled(carol)
    cards = carol.get_by_test_id(f"column-{to_plant}").locator("[data-testid^='card-title-']")
    expect(cards).to_have_text(["Tomatoes", "Basil"])  # a new card goes to the bottom
    carol.get_by_test_id(f"move-right-{card_id(carol, 'Tomatoes')}").click()
    expect(carol.get_by_test_id(f"column-{planted}")).to_contain_text("Tomatoes")
    shot(carol, "created-board")

    # It is stored and listed: it is there after a reload, and in the list of boards.
    carol.reload()
    expect(carol.get_by_test_id(f"column-{planted}")).to_contain_text("Tomatoes")
    expect(cards).to_have_text(["Basil"])
    carol.get_by_test_id("back-to-boards").click()
    expect(carol.get_by_test_id("board-list")).to_contain_text("Carol's garden")


def test_the_owner_adds_a_member_who_then_sees_the_board(server, pages):
    alice, bob, carol = pages["alice"], pages["bob"], pages["carol"]
    for page, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        login(page, server, name)
    for page in (alice, bob):
        open_board(page, "Launch")
    expect(bob.get_by_test_id("members")).to_have_text("Members: alice (owner), bob")
    expect(bob.get_by_test_id("member-input")).to_have_count(0)  # only the owner adds
    expect(carol.get_by_test_id("no-boards")).to_be_visible()

    alice.get_by_test_id("member-input").fill("nobody")
    alice.get_by_test_id("add-member").click()
    expect(alice.get_by_test_id("error-banner")).to_contain_text(
        "Could not add nobody: There is no user called 'nobody'."
    )
    alice.get_by_test_id("member-input").fill("carol")
    alice.get_by_test_id("add-member").click()
    expect(alice.get_by_test_id("error-banner")).to_be_hidden()
    for page in (alice, bob):  # the members line is live for everyone on the board
        expect(page.get_by_test_id("members")).to_have_text("Members: alice (owner), bob, carol")
    # Carol's list gets the board without a reload; she can open and use it.
    expect(carol.get_by_test_id("board-list")).to_contain_text("Launch")
    open_board(carol, "Launch")
    card = card_id(carol, "Book the venue")
    rename_card(carol, card, "Book the venue, says carol")
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Book the venue, says carol")
    shot(carol, "member-added")


def test_an_edit_made_offline_is_marked_pending_until_the_server_has_it(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Pick a date")
    done = column_id(alice, "Done")
    rename_card(alice, card, "Date picked")  # online: confirmed, so not pending for long
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Date picked")
    settled(alice)

    server.stop()
    expect(alice.get_by_test_id("connection-status")).not_to_have_text("connected")
    rename_card(alice, card, "Date picked offline")
    alice.get_by_test_id(f"new-card-title-{done}").fill("Written offline")
    alice.get_by_test_id(f"add-card-{done}").click()
    edited = alice.get_by_test_id(f"card-{card}")
    created = alice.locator(f"[data-testid^='card-']{PENDING}", has_text="Written offline")
    expect(edited).to_contain_text("Date picked offline")
    alice.wait_for_timeout(UNIT * 200)  # however long it takes, it does not look saved
    for pending in (edited, created):
        expect(pending).to_have_attribute("data-pending", "true")
        expect(pending).to_have_class(re.compile(r"\bpending\b"))
        expect(pending).to_contain_text("saving…")
    shot(alice, "pending-offline")

    server.start()
    expect(alice.get_by_test_id("connection-status")).to_have_text("connected", timeout=UNIT * 6000)
    settled(alice)
    expect(edited).not_to_contain_text("saving…")
    expect(alice.get_by_test_id(f"column-{done}")).to_contain_text("Written offline")
    # The server has both: another user sees them.
    bob = pages["bob"]
    login(bob, server, "bob")
    open_board(bob, "Launch")
    expect(bob.get_by_test_id(f"card-title-{card}")).to_have_text("Date picked offline")
    expect(bob.get_by_test_id(f"column-{done}")).to_contain_text("Written offline")


def test_a_missing_board_or_page_shows_a_plain_not_found_page(server, pages):
    alice, carol = pages["alice"], pages["carol"]
    login(alice, server, "alice")
    login(carol, server, "carol")
    launch = alice.get_by_test_id("board-list").get_by_text("Launch").get_attribute("href")

    alice.goto(server.url + "#/board/999999")
    not_found = alice.get_by_test_id("not-found")
    expect(not_found).to_contain_text("Board not found")
    shot(alice, "board-not-found")
    # A board of which carol is no member reads the same: ids do not tell what exists.
    carol.goto(server.url + str(launch))
    expect(carol.get_by_test_id("not-found")).to_contain_text("Board not found")
    alice.goto(server.url + "#/no/such/page")
    expect(not_found).to_contain_text("Page not found")
    for page in (alice, carol):
        expect(page.get_by_test_id("error-banner")).to_have_count(0)
        expect(page.get_by_test_id("connection-status")).to_have_count(0)
        for developer_word in ("404", "403", "not-found", "forbidden", "status"):
            expect(page.get_by_test_id("not-found")).not_to_contain_text(developer_word)
    not_found.get_by_test_id("back-to-boards").click()
    expect(alice.get_by_test_id("board-list")).to_contain_text("Launch")
