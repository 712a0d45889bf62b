"""The gallery (film strip) API: sorting by confidence, margin and branch disagreement, grouping by
image, predicted class and reviewer, filters (class, confidence range, reviewer, reviewed or not), the
400s for bad parameters, the frontier that skips reviewed nuclei, and the per-user review keys."""

from __future__ import annotations

import pytest

from tests.webapp.review_project import unlabelled_in
from webapp.core.cache import forget_frontiers
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import CurrentLabel, Nucleus
from webapp.review import keys as review_keys
from webapp.review.models import ReviewKeys
from webapp.review.operations import do_decide, do_undo

pytestmark = pytest.mark.django_db

NAMES = ["neoplastic", "connective", "dead"]  # the breast label set's classes, in index order


def gallery(client, rp, expect: int = 200, **params):
    query = "&".join(f"{k}={v}" for k, v in {"label_set": "breast", "page_size": 200, **params}.items())
    response = client.get(f"/api/projects/{rp.project.pk}/review/gallery/?{query}")
    assert response.status_code == expect, response.content
    return response.json()


def unreviewed_predictions(rp, label_set=None):
    label_set = label_set or rp.breast_set
    free = set(unlabelled_in(rp, label_set))
    return [p for (n, ls), p in rp.predictions.items() if ls == label_set.pk and n in free]


def ids(body) -> list[int]:
    return [item["nucleus"] for item in body["items"]]


# Each sort and order as the stored columns rank it (confidence = 1 - least_confidence, margin as shown =
# 1 - margin as stored), ties broken by the prediction id in the same direction.
ORDERINGS = {
    ("confidence", "desc"): lambda p: (p.least_confidence, p.pk),
    ("confidence", "asc"): lambda p: (-p.least_confidence, -p.pk),
    ("margin", "asc"): lambda p: (-p.margin, -p.pk),
    ("margin", "desc"): lambda p: (p.margin, p.pk),
    ("disagreement", "desc"): lambda p: (-p.disagreement, -p.pk),
    ("disagreement", "asc"): lambda p: (p.disagreement, p.pk),
}


@pytest.mark.parametrize("sort,order", list(ORDERINGS))
def test_each_sort_orders_the_unreviewed_predictions(rp, users, api_client_for, sort, order):
    client = api_client_for(users["reviewer"])
    rows = sorted(unreviewed_predictions(rp), key=ORDERINGS[sort, order])
    assert len(rows) >= 20
    body = gallery(client, rp, sort=sort, order=order)
    assert (body["sort"], body["order"], body["status"], body["group"]) == (sort, order, "unreviewed", None)
    assert ids(body) == [p.nucleus_id for p in rows]
    shown = {item["nucleus"]: item for item in body["items"]}
    first = rows[0]
    assert shown[first.nucleus_id]["probability"] == pytest.approx(first.probability)
    assert shown[first.nucleus_id]["margin"] == pytest.approx(1 - first.margin)
    assert shown[first.nucleus_id]["disagreement"] == pytest.approx(first.disagreement)
    assert shown[first.nucleus_id]["class_name"] == NAMES[first.class_index]
    # The order is really what it says: the shown values are monotone.
    values = [item[{"confidence": "probability"}.get(sort, sort)] for item in body["items"]]
    assert values == sorted(values, reverse=order == "desc")
    # Pages of 7 put together are the same strip.
    paged = []
    for page in range(1, 100):
        part = gallery(client, rp, sort=sort, order=order, page_size=7, page=page)
        paged += ids(part)
        if not part["has_more"]:
            break
    assert paged == ids(body)


def test_default_order_is_most_confident_first(rp, users, api_client_for):
    body = gallery(api_client_for(users["reviewer"]), rp)
    assert (body["sort"], body["order"]) == ("confidence", "desc")
    assert ids(body) == [p.nucleus_id for p in sorted(unreviewed_predictions(rp), key=ORDERINGS["confidence", "desc"])]
    margin = gallery(api_client_for(users["reviewer"]), rp, sort="margin")
    assert margin["order"] == "asc"  # closest calls first by default


def test_filters_by_class_and_confidence_range(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    rows = unreviewed_predictions(rp)
    dead = sorted((p for p in rows if p.class_index == 2), key=ORDERINGS["margin", "asc"])
    assert dead and len(dead) < len(rows)
    body = gallery(client, rp, class_name="dead", sort="margin")
    assert body["class_name"] == "dead"
    assert ids(body) == [p.nucleus_id for p in dead]
    # A confidence range between real values (so that no row sits on a bound).
    probabilities = sorted(p.probability for p in rows)
    low = (probabilities[3] + probabilities[4]) / 2
    high = (probabilities[-5] + probabilities[-4]) / 2
    inside = sorted((p for p in rows if low <= p.probability <= high), key=ORDERINGS["disagreement", "desc"])
    assert 0 < len(inside) < len(rows)
    body = gallery(client, rp, sort="disagreement", min_confidence=low, max_confidence=high)
    assert ids(body) == [p.nucleus_id for p in inside]
    assert body["min_confidence"] == pytest.approx(low) and body["max_confidence"] == pytest.approx(high)
    both = gallery(client, rp, class_name="dead", min_confidence=low, max_confidence=high)
    assert set(ids(both)) == {p.nucleus_id for p in inside if p.class_index == 2}


def decide_some(rp, users, count_each: int = 3) -> dict[str, list[int]]:
    """rita and rob each decide a few unreviewed breast nuclei (rob disagrees with the model)."""
    rows = sorted(unreviewed_predictions(rp), key=lambda p: p.pk)
    nuclei = {n.pk: n for n in Nucleus.objects.filter(pk__in=[p.nucleus_id for p in rows])}
    decided = {"rita": [], "rob": []}
    for position, prediction in enumerate(rows[:2 * count_each]):
        who = "reviewer" if position % 2 == 0 else "reviewer2"
        chosen = prediction.class_index if who == "reviewer" else (prediction.class_index + 1) % 3
        do_decide(nuclei[prediction.nucleus_id], rp.breast_set, chosen, user=users[who], expected_label_id=None)
        decided[users[who].username].append(prediction.nucleus_id)
    return decided


def test_reviewed_nuclei_by_reviewer_and_grouped_by_reviewer(rp, users, api_client_for):
    client = api_client_for(users["curator"])
    decided = decide_some(rp, users)
    everyone = decided["rita"] + decided["rob"]
    # Unreviewed no longer shows them; reviewed shows exactly them, with the decision and its author.
    assert not set(everyone) & set(ids(gallery(client, rp)))
    reviewed = gallery(client, rp, status="reviewed")
    assert sorted(ids(reviewed)) == sorted(everyone)
    by_nucleus = {item["nucleus"]: item for item in reviewed["items"]}
    assert {by_nucleus[n]["current"]["author"] for n in decided["rob"]} == {"rob"}
    assert all(by_nucleus[n]["current"]["class_index"] != by_nucleus[n]["class_index"] for n in decided["rob"])
    assert all(by_nucleus[n]["version"] == CurrentLabel.objects.get(nucleus_id=n, label_set=rp.breast_set).label_id
               for n in everyone)
    # One reviewer (status=reviewed implied), in the chosen order.
    rita = gallery(client, rp, reviewer="rita", sort="margin")
    assert rita["status"] == "reviewed" and rita["reviewer"] == "rita"
    expected = sorted((rp.prediction(n, rp.breast_set) for n in decided["rita"]), key=ORDERINGS["margin", "asc"])
    assert ids(rita) == [p.nucleus_id for p in expected]
    # Grouped by reviewer: rita's cards, then rob's, each group in confidence order, with its header.
    grouped = gallery(client, rp, group="reviewer")
    assert grouped["status"] == "reviewed"
    expected = [p.nucleus_id for name in ("rita", "rob") for p in
                sorted((rp.prediction(n, rp.breast_set) for n in decided[name]), key=ORDERINGS["confidence", "desc"])]
    assert ids(grouped) == expected
    assert [item["group"]["label"] for item in grouped["items"]] == ["rita"] * 3 + ["rob"] * 3


def test_grouped_by_class_and_by_image(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    rows = unreviewed_predictions(rp)
    by_class = gallery(client, rp, group="class", sort="disagreement")
    expected = sorted(rows, key=lambda p: (p.class_index, -p.disagreement, -p.pk))
    assert ids(by_class) == [p.nucleus_id for p in expected]
    assert [item["group"]["label"] for item in by_class["items"]] == [NAMES[p.class_index] for p in expected]
    assert len({item["group"]["key"] for item in by_class["items"]}) == len({p.class_index for p in rows})
    # Pages of 5 across the class boundaries put together are the same strip.
    paged, page = [], 1
    while True:
        part = gallery(client, rp, group="class", sort="disagreement", page_size=5, page=page)
        paged += ids(part)
        if not part["has_more"]:
            break
        page += 1
    assert paged == ids(by_class)

    image_of = dict(Nucleus.objects.filter(pk__in=[p.nucleus_id for p in rows]).values_list("pk", "image_id"))
    assert len(set(image_of.values())) >= 2
    by_image = gallery(client, rp, group="image", sort="confidence", order="asc")
    expected = sorted(rows, key=lambda p: (image_of[p.nucleus_id], p.least_confidence * -1, -p.pk))
    assert ids(by_image) == [p.nucleus_id for p in expected]
    labels = [item["group"]["label"] for item in by_image["items"]]
    assert all(label.startswith("colon / ") for label in labels)  # the colon images have no breast labels
    assert len(set(labels)) == len(set(image_of.values()))
    part = gallery(client, rp, group="image", sort="confidence", order="asc", page_size=5, page=2)
    assert ids(part) == ids(by_image)[5:10]


@pytest.mark.parametrize("params,field", [
    ({"sort": "entropy"}, "sort"), ({"order": "up"}, "order"), ({"group": "dataset"}, "group"),
    ({"status": "done"}, "status"), ({"min_confidence": "high"}, "min_confidence"),
    ({"max_confidence": "1.5"}, "max_confidence"), ({"min_confidence": "nan"}, "min_confidence"),
    ({"min_confidence": "0.8", "max_confidence": "0.2"}, "min_confidence"),
    ({"reviewer": "nobody-here"}, "reviewer"), ({"reviewer": "rita", "status": "unreviewed"}, "reviewer"),
    ({"group": "reviewer", "status": "unreviewed"}, "group"), ({"class_name": "mitotic"}, "class_name"),
    ({"page": "two"}, "page"), ({"page": "0"}, "page"), ({"page_size": "0"}, "page_size"),
    ({"page_size": "201"}, "page_size"), ({"page_size": "1e3"}, "page_size"),
])
def test_bad_parameters_are_400s_that_name_the_parameter(rp, users, api_client_for, params, field):
    body = gallery(api_client_for(users["reviewer"]), rp, expect=400, **params)
    assert body["detail"].startswith(f"{field}: "), body
    assert field in body["errors"]


def test_agree_and_disagree_from_the_gallery_go_through_bulk(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    items = gallery(client, rp, sort="margin")["items"][:3]
    agree, disagree, mine_later = items
    other = NAMES[(disagree["class_index"] + 1) % 3]
    decisions = [{"nucleus": agree["nucleus"], "class_name": agree["class_name"], "version": agree["version"]},
                 {"nucleus": disagree["nucleus"], "class_name": other, "version": disagree["version"]}]
    response = client.post(f"/api/projects/{rp.project.pk}/review/bulk/",
                           {"label_set": "breast", "decisions": decisions}, format="json")
    assert [r["status"] for r in response.json()["results"]] == [201, 201]
    # The same batch sent twice (a double click, a retry): the second is refused, as the reviewer's own
    # decisions, not as someone else's.
    twice = client.post(f"/api/projects/{rp.project.pk}/review/bulk/",
                        {"label_set": "breast", "decisions": decisions}, format="json").json()["results"]
    assert [r["status"] for r in twice] == [409, 409]
    assert twice[0]["detail"] == (f"You decided this nucleus already: it is '{agree['class_name']}'. To change it, "
                                  "undo that decision or review with \"Include labelled nuclei\".")
    assert "Someone else" not in twice[1]["detail"]
    current = dict(CurrentLabel.objects.filter(nucleus_id__in=[agree["nucleus"], disagree["nucleus"]],
                                               label_set=rp.breast_set).values_list("nucleus_id", "class_index"))
    assert current == {agree["nucleus"]: agree["class_index"], disagree["nucleus"]: (disagree["class_index"] + 1) % 3}
    # A reviewer changes their own decision from the reviewed strip, with the version it shows.
    mine = {item["nucleus"]: item for item in gallery(client, rp, reviewer="rita")["items"]}
    assert set(mine) == {agree["nucleus"], disagree["nucleus"]}
    again = client.post(f"/api/projects/{rp.project.pk}/review/bulk/", {"label_set": "breast", "decisions": [
        {"nucleus": disagree["nucleus"], "class_name": disagree["class_name"], "version": mine[disagree["nucleus"]]["version"]}]},
        format="json")
    assert again.json()["results"][0]["status"] == 201
    assert CurrentLabel.objects.get(nucleus_id=disagree["nucleus"], label_set=rp.breast_set).class_index == \
        disagree["class_index"]
    assert mine_later["nucleus"] in ids(gallery(client, rp))


def test_an_undone_decision_comes_back_at_once_although_the_frontier_moved_past_it(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    first = gallery(client, rp)["items"][:4]
    nuclei = {n.pk: n for n in Nucleus.objects.filter(pk__in=[i["nucleus"] for i in first])}
    for item in first:  # the most confident ones decided: the frontier moves past them
        do_decide(nuclei[item["nucleus"]], rp.breast_set, item["class_index"], user=users["reviewer"],
                  expected_label_id=None)
    forget_frontiers(rp.breast_set.pk)
    after = ids(gallery(client, rp))
    assert not set(after) & set(nuclei)
    do_undo(nuclei[first[0]["nucleus"]], rp.breast_set, user=users["reviewer"])
    assert ids(gallery(client, rp))[0] == first[0]["nucleus"]


def test_gallery_page_offers_sorts_groups_filters_and_the_users_keys(rp, users, client):
    client.force_login(users["reviewer"])
    html = client.get(f"/projects/{rp.project.pk}/review/gallery/?label_set=breast").content.decode()
    for value in ("confidence:desc", "margin:asc", "disagreement:desc"):
        assert f'<option value="{value}">' in html
    for value in ("image", "class", "reviewer"):
        assert f'<option value="{value}">' in html
    assert '<option value="rita">rita</option>' in html and 'name="min_confidence"' in html
    assert 'id="review-keys"' in html and 'data-action="accept-page"' in html


# ------------------------------------------------------------------------------------- review keys

def test_keys_default_change_audit_and_reset(rp, users, api_client_for):
    rita = users["reviewer"]
    client = api_client_for(rita)
    body = client.get("/api/review/keys/").json()
    assert body["classes"][:10] == list("1234567890") and body["classes"][10:13] == ["q", "w", "e"]
    assert "s" not in body["classes"] and "u" not in body["classes"]  # the actions' letters are skipped
    assert body["actions"] == {"accept": "Enter", "skip": "s", "undo": "u", "help": "?", "zoom": "z"}
    assert "z" not in body["classes"]
    changed = client.put("/api/review/keys/", {"classes": ["J", "k", "l"], "actions": {"skip": "x"}}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["classes"] == ["j", "k", "l"] and changed.json()["actions"]["skip"] == "x"
    assert ReviewKeys.objects.get(user=rita).keys == {"classes": ["j", "k", "l"], "actions": {
        "accept": "Enter", "skip": "x", "undo": "u", "help": "?", "zoom": "z"}, "character_keys": True}
    entry = AuditLogEntry.objects.filter(action="review.keys_changed").latest("id")
    assert entry.actor == rita and entry.details["changed"]["actions.skip"] == ["s", "x"]
    assert entry.details["changed"]["classes.1"] == ["1", "j"]
    assert review_keys.keys_for(users["reviewer2"]) == review_keys.defaults()  # per user
    # Back to the defaults: the row goes, the audit says so.
    reset = client.put("/api/review/keys/", {}, format="json")
    assert reset.json()["classes"] == review_keys.defaults()["classes"]
    assert not ReviewKeys.objects.filter(user=rita).exists()
    assert AuditLogEntry.objects.filter(action="review.keys_changed").latest("id").details["defaults"] is True


@pytest.mark.parametrize("keys,field", [
    ({"classes": ["1", "1"]}, "classes"),
    ({"classes": ["1", "s"]}, "classes"),                       # skip's key
    ({"actions": {"accept": "Tab"}}, "actions.accept"),
    ({"actions": {"undo": "s"}}, "actions.undo"),               # skip's key
    ({"actions": {"jump": "j"}}, "actions.jump"),
    ({"actions": {"skip": "1"}}, "actions.skip"),              # class 1's: the class keys would shift
    ({"actions": {"zoom": "q"}}, "actions.zoom"),              # class 11's
    ({"classes": "123"}, "classes"),
    ({"classes": [str(i % 10) + c for i, c in enumerate("abcdefghijklmnopqrstuvwxyzabcdefghijklm")]}, "classes"),
    ({"classes": [" "]}, "classes"),
    ({"colours": {}}, "colours"),
])
def test_keys_that_cannot_work_are_refused_with_a_reason(rp, users, api_client_for, keys, field):
    client = api_client_for(users["reviewer"])
    response = client.put("/api/review/keys/", keys, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(f"{field}: ")
    assert not ReviewKeys.objects.filter(user=users["reviewer"]).exists()
    assert not AuditLogEntry.objects.filter(action="review.keys_changed").exists()


def test_an_action_on_a_class_key_needs_the_classes_too(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    refused = client.put("/api/review/keys/", {"actions": {"skip": "1"}}, format="json")
    assert refused.json()["detail"] == "actions.skip: '1' is the key of class 1: choose another key, or send classes too"
    assert refused.json()["errors"] == {"actions": {"skip": ["'1' is the key of class 1: choose another key, or send "
                                                             "classes too"]}}  # nested, as the API's other errors
    saved = client.put("/api/review/keys/", {"actions": {"skip": "1"}, "classes": ["2", "3", "4"]}, format="json")
    assert saved.status_code == 200 and saved.json()["classes"] == ["2", "3", "4"]
    assert saved.json()["actions"]["skip"] == "1"


def test_single_character_keys_can_be_turned_off(rp, users, api_client_for, client):
    """WCAG 2.1.4: speech input types letters, which would decide nuclei; off, only Enter and the buttons act."""
    rita = users["reviewer"]
    api = api_client_for(rita)
    assert api.get("/api/review/keys/").json()["character_keys"] is True
    refused = api.put("/api/review/keys/", {"character_keys": "no"}, format="json")
    assert refused.status_code == 400 and refused.json()["detail"].startswith("character_keys: ")
    off = api.put("/api/review/keys/", {"character_keys": False}, format="json").json()
    assert off["character_keys"] is False and off["classes"] == review_keys.defaults()["classes"]
    entry = AuditLogEntry.objects.filter(action="review.keys_changed").latest("id")
    assert entry.details["changed"] == {"character_keys": [True, False]}
    client.force_login(rita)
    html = client.get(f"/projects/{rp.project.pk}/review/?label_set=breast").content.decode()
    assert '"character_keys": false' in html and 'data-role="character-keys-off"' in html
    assert "(key 1)" not in html and "<kbd>s</kbd>" not in html and "<kbd>Enter</kbd>" in html
    assert '<tr data-action-key="skip"><td><span class="muted">none</span></td>' in html
    page = client.get("/account/review-keys/").content.decode()
    assert 'name="character_keys" value="1"' in page and " checked" not in page.split('name="character_keys"')[1][:80]
    # The form's box left unticked keeps them off; ticked turns them on again (the defaults: no row).
    client.post("/account/review-keys/", {"classes": "1234567890qwertyiopadfghjklxcvbnm", "accept": "Enter",
                                          "skip": "s", "undo": "u", "help": "?", "zoom": "z", "character_keys": "1"})
    assert not ReviewKeys.objects.filter(user=rita).exists()


def test_patch_changes_only_the_keys_it_gives(rp, users, api_client_for):
    """PUT {"character_keys": false} reset a reviewer's own keys to the defaults (PUT replaces)."""
    client = api_client_for(users["reviewer"])
    client.put("/api/review/keys/", {"classes": ["j", "k", "l"], "actions": {"skip": "x"}}, format="json")
    off = client.patch("/api/review/keys/", {"character_keys": False}, format="json").json()
    assert (off["classes"], off["actions"]["skip"], off["character_keys"]) == (["j", "k", "l"], "x", False)
    moved = client.patch("/api/review/keys/", {"actions": {"undo": "y"}}, format="json").json()
    assert (moved["actions"]["undo"], moved["actions"]["skip"], moved["classes"]) == ("y", "x", ["j", "k", "l"])
    refused = client.patch("/api/review/keys/", {"actions": {"undo": "j"}}, format="json")
    assert refused.status_code == 400 and refused.json()["errors"] == {
        "classes": ["class 1: 'j' is already the key of undo: each key does one thing"]}, refused.json()
    assert client.patch("/api/review/keys/", {"colours": 1}, format="json").status_code == 400


def test_keys_saved_before_zoom_existed_keep_working(rp, users):
    # Saved when the actions were accept, skip, undo and help, with "z" as a class key: the zoom action
    # added since takes a free key instead of making those keys invalid (and falling back to defaults).
    classes = list("1234567890qwertyiopadfghjklzx")
    ReviewKeys.objects.create(user=users["reviewer"], keys={
        "classes": classes, "actions": {"accept": "Enter", "skip": "s", "undo": "u", "help": "?"}})
    keys = review_keys.keys_for(users["reviewer"])
    assert keys["classes"] == classes
    assert keys["actions"]["zoom"] not in classes + ["Enter", "s", "u", "?"] and keys["actions"]["zoom"] == "c"
    # Given explicitly, the same clash is refused with the reason, as before.
    with pytest.raises(review_keys.InvalidKeys):
        review_keys.validate({"classes": classes, "actions": {"zoom": "z"}})


def test_keys_page_saves_and_the_review_page_and_help_show_them(rp, users, client):
    client.force_login(users["reviewer"])
    page = client.get("/account/review-keys/")
    assert page.status_code == 200 and 'value="1234567890qwertyiopadfghjklxcvbnm"' in page.content.decode()
    bad = client.post("/account/review-keys/", {"classes": "aab", "accept": "Enter", "skip": "s", "undo": "u",
                                                "help": "?", "zoom": "z"})
    assert bad.status_code == 400 and "class 2: &#x27;a&#x27; is already the key of class 1" in bad.content.decode()
    # Announced and tied to its field, which gets the focus (a screen reader heard nothing of it).
    html = bad.content.decode()
    assert '<p class="flash error" role="alert">The keys were not saved: class keys: ' in html
    assert 'aria-describedby="keys-classes-help keys-classes-error" aria-invalid="true" autofocus' in html
    assert 'id="keys-classes-error"' in html
    clash = client.post("/account/review-keys/", {"classes": "123", "accept": "Enter", "skip": "u", "undo": "u",
                                                  "help": "?", "zoom": "z"}).content.decode()
    assert clash.count("autofocus") == 1 and 'aria-invalid="true"' in clash and 'role="alert"' in clash
    review_url = f"/projects/{rp.project.pk}/review/?label_set=breast"
    saved = client.post("/account/review-keys/", {"classes": "jkl", "accept": "a", "skip": "s", "undo": "u",
                                                  "help": "h", "zoom": "z", "character_keys": "1",
                                                  "next": review_url})
    assert saved.status_code == 302 and saved["Location"] == review_url
    assert review_keys.keys_for(users["reviewer"])["classes"] == ["j", "k", "l"]
    html = client.get(review_url).content.decode()
    for name, key in zip(NAMES, "jkl"):
        # The key is the button's aria-keyshortcuts (a screen reader says it; the tooltip reached no one).
        assert f'data-class-name="{name}"' in html and f'aria-keyshortcuts="{key}"' in html
    assert '<tr data-action-key="accept"><td><kbd>a</kbd></td>' in html
    assert 'Keys <kbd>h</kbd>' in html
    # A next that leaves the site is ignored.
    away = client.post("/account/review-keys/", {"reset": "1", "next": "https://example.org/"})
    assert away["Location"] == "/account/review-keys/"
    assert review_keys.keys_for(users["reviewer"]) == review_keys.defaults()


def test_the_reviewer_filter_does_not_tell_which_usernames_exist(rp, users, api_client_for, make_user):
    """An account outside the project and no account at all get the same answer."""
    make_user("someone-elsewhere")
    client = api_client_for(users["reviewer"])
    answers = [gallery(client, rp, expect=400, reviewer=name)["detail"] for name in ("someone-elsewhere", "nobody")]
    assert answers == ["reviewer: no member or reviewer of this project is named 'someone-elsewhere'",
                       "reviewer: no member or reviewer of this project is named 'nobody'"]



def test_a_misspelt_parameter_is_a_400_naming_it(rp, users, api_client_for):
    # ?sort_by=margin answered the default order, as if the sort had been applied.
    body = gallery(api_client_for(users["reviewer"]), rp, expect=400, sort_by="margin")
    assert body["detail"].startswith("unknown query parameter(s) ['sort_by']; allowed: ['class_name', 'counts'")


def test_a_page_past_the_last_is_a_404_as_in_the_other_lists(rp, users, api_client_for):
    # It answered 200 with no cards, where /api/projects/?page=99 and a dataset's images answer 404.
    client = api_client_for(users["reviewer"])
    count = len(unreviewed_predictions(rp))
    last = gallery(client, rp, page_size=5, page=(count + 4) // 5)
    assert last["items"] and not last["has_more"]
    body = gallery(client, rp, expect=404, page_size=5, page=(count + 4) // 5 + 1)
    assert body == {"detail": f"Page {(count + 4) // 5 + 1} is past the last page of these results."}
    assert client.get(f"/api/projects/{rp.project.pk}/review/gallery/?page=2&class_name=no-such").status_code == 400
    # The first page of nothing is an empty page, as DRF's paginators answer it.
    empty = gallery(client, rp, min_confidence="1", max_confidence="1")
    assert empty["items"] == [] and not empty["has_more"]
    assert gallery(client, rp, expect=404, min_confidence="1", max_confidence="1", page=2)["detail"].startswith("Page 2")
