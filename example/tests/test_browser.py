"""The example app in a real browser (Playwright driving Debian's Chromium).

Each test gets its own server (uvicorn, embedded defaults) on its own SQLite
database, seeded with the demo data. Screenshots of the key states go to
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

from playwright.sync_api import expect

from browser_support import UNIT, card_id, login, open_board, rename_card, shot


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


def test_a_refused_write_is_rolled_back_on_screen(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Book the venue")
    rename_card(alice, card, "SHOUTING IS REFUSED")
    expect(alice.get_by_test_id("error-banner")).to_be_visible()
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Book the venue")
    shot(alice, "refused-write")


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
