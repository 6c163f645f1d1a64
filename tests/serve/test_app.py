"""The web app's routes through the ASGI test client: the page, searching (text, negatives, a stored or uploaded
image, combined), uploads, describe, store info, and their errors (HTML for the page, JSON when asked)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clipstore.serve.app import parse_query

JSON = {"Accept": "application/json"}
STATIC = Path(__file__).resolve().parents[2] / "clipstore" / "serve" / "static"


def _hits(response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(hit["id"], round(hit["score"], 5)) for hit in response.json()["hits"]]


def _ranked(hits) -> list[tuple[str, float]]:
    return [(hit.id, round(hit.score, 5)) for hit in hits]


# --- the page ---------------------------------------------------------------------------------------------------


def test_the_page_loads_htmx_from_the_server_and_nothing_from_elsewhere(client, world):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/htmx.min.js"' in page.text and world.path in page.text
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page.text)  # no CDN, no other host
    assert "script-src 'self'" in page.headers["content-security-policy"]
    htmx = client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.content == (STATIC / "htmx.min.js").read_bytes()
    assert htmx.content.startswith(b"var htmx=")
    notice = (STATIC / "htmx.LICENSE.txt").read_text()
    assert "htmx 4.0.1" in notice and "Zero-Clause BSD" in notice
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_the_page_can_open_with_a_search_shown(client, world):
    page = client.get("/", params={"q": "a red circle", "k": 4})
    assert page.status_code == 200
    shown = re.findall(r'data-id="([0-9a-f]{64})"', page.text)
    assert shown == [hit.id for hit in world.search_text("a red circle", k=4)]


# --- searching --------------------------------------------------------------------------------------------------


def test_a_text_search_answers_what_the_python_api_answers(client, world):
    response = client.get("/search", params={"q": "a big blue square", "k": 7}, headers=JSON)
    assert _hits(response) == _ranked(world.search_text("a big blue square", k=7))
    assert response.json()["query"]["text"] == "a big blue square"

    html = client.get("/search", params={"q": "a big blue square", "k": 7})
    expected = world.search_text("a big blue square", k=7)
    assert re.findall(r'class="hit" href="/image/([0-9a-f]{64})/file"', html.text) == [hit.id for hit in expected]
    scores = [float(score) for score in re.findall(r'<span class="score"[^>]*>([0-9.]+)</span>', html.text)]
    assert scores == [round(hit.score, 3) for hit in expected] and scores == sorted(scores, reverse=True)
    assert "7 images for “a big blue square”; best first" in html.text


def test_k_and_the_path_prefix(client, world):
    folder = str(Path(world.search_text("a triangle", k=1)[0].path).parent) + "/"
    response = client.get("/search", params={"q": "a red shape", "k": 3, "prefix": folder}, headers=JSON)
    assert _hits(response) == _ranked(world.search_text("a red shape", k=3, path_prefix=folder))
    assert len(response.json()["hits"]) == 3 and all(hit["path"].startswith(folder) for hit in response.json()["hits"])
    nowhere = client.get("/search", params={"q": "a red shape", "prefix": "/no/such/folder/"})
    assert nowhere.status_code == 200 and "No image is stored under /no/such/folder/." in nowhere.text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("beach −people", ("beach", ["people"])),
        ("beach -people -cars", ("beach", ["people", "cars"])),
        ('a dog -"a crowd of people" on grass', ("a dog on grass", ["a crowd of people"])),
        ("a black-and-white photo", ("a black-and-white photo", [])),
        ("-night", ("", ["night"])),
    ],
)
def test_negatives_are_read_from_the_search_text(text, expected):
    assert parse_query(text) == expected


def test_a_negative_in_the_text_and_in_the_not_field(client, world):
    response = client.get("/search", params={"q": "a shape −red", "not": "blue, ", "k": 6}, headers=JSON)
    assert response.json()["query"]["negative"] == ["red", "blue"]
    assert _hits(response) == _ranked(world.search("a shape", negative=["red", "blue"], k=6))
    weighted = client.get("/search", params={"q": "a shape −red", "negative_weight": 1.5, "k": 6}, headers=JSON)
    assert _hits(weighted) == _ranked(world.search("a shape", negative="red", weights={"negative": 1.5}, k=6))
    assert _hits(weighted) != _hits(response)


def test_more_like_a_stored_image(client, world):
    target = world.search_text("a green star", k=1)[0]
    response = client.get("/search", params={"like": target.id, "k": 5}, headers=JSON)
    hits = _hits(response)
    assert hits[0][0] == target.id and hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert hits == _ranked(world.search(image=world.image_embedding(target.id), k=5))
    combined = client.get("/search", params={"like": target.id, "q": "a red circle", "k": 5}, headers=JSON)
    assert _hits(combined) == _ranked(world.search("a red circle", image=world.image_embedding(target.id), k=5))

    chip = client.get("/query-image", params={"like": target.id})
    assert chip.headers["hx-trigger"] == "search"  # the form searches again with the chip's hidden field
    assert f'name="like" value="{target.id}"' in chip.text
    cleared = client.get("/query-image")
    assert cleared.status_code == 200 and "name=" not in cleared.text and cleared.headers["hx-trigger"] == "search"


def test_an_uploaded_image_is_held_and_searched_with(client, world):
    target = world.search_text("a yellow circle", k=1)[0]
    data = Path(target.path).read_bytes()
    upload = client.post("/upload", files={"image": ("query.png", data, "image/png")}, headers=JSON)
    assert upload.status_code == 200, upload.text
    token = upload.json()["token"]
    assert upload.json()["format"] == "PNG" and upload.headers["hx-trigger"] == "search"
    hits = _hits(client.get("/search", params={"upload": token, "k": 4}, headers=JSON))
    assert hits[0][0] == target.id and hits[0][1] == pytest.approx(1.0, abs=1e-3)
    assert hits == _ranked(world.search(image=data, k=4))
    combined = client.get("/search", params={"upload": token, "q": "a square −red", "k": 4}, headers=JSON)
    assert _hits(combined) == _ranked(world.search("a square", image=data, negative="red", k=4))

    chip = client.post("/upload", files={"image": ("query.png", data, "image/png")})
    assert f'name="upload" value="{token}"' in chip.text and 'src="data:image/jpeg;base64,' in chip.text


@pytest.mark.parametrize(
    "name, data, status, message",
    [
        ("notes.jpg", b"Day 1: beach. Day 2: mountains.\n", 422, "Not an image we can read: not an image (looks like text)"),
        ("empty.png", b"", 422, "empty file (0 bytes)"),
        ("cut.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 422, "Not an image we can read"),
    ],
)
def test_an_upload_that_is_not_an_image_is_a_clear_422(client, name, data, status, message):
    response = client.post("/upload", files={"image": (name, data, "image/jpeg")})
    assert response.status_code == status and message in response.text and 'role="alert"' in response.text
    as_json = client.post("/upload", files={"image": (name, data, "image/jpeg")}, headers=JSON)
    assert as_json.status_code == status and message in as_json.json()["error"]


def test_search_mistakes_are_4xx_with_the_reason(client, world):
    some_id = world.search_text("a circle", k=1)[0].id
    cases = [
        ({"q": "a circle", "k": 0}, 400, "k: Input should be greater than or equal to 1"),
        ({"q": "a circle", "k": "many"}, 400, "k: Input should be a valid integer"),
        ({"like": "../../etc/passwd"}, 404, "is not an image id"),
        ({"like": "0" * 64}, 404, "no image with id"),
        ({"upload": "f" * 64}, 410, "upload it again"),
        ({"like": some_id, "upload": "f" * 64}, 400, "one image at a time"),
        ({"q": "a circle", "text_weight": -1}, 400, "The weight of the text must be a finite number >= 0"),
        ({"q": "a circle", "negative_weight": "lots"}, 400, "negative_weight must be a number, not 'lots'"),
    ]
    for params, status, message in cases:
        response = client.get("/search", params=params, headers=JSON)
        assert (response.status_code, response.json()["status"]) == (status, status), params
        assert message in response.json()["error"], (params, response.json())


def test_nothing_to_search_for_is_a_hint_not_an_error(client):
    for params in ({}, {"q": "   "}, {"not": "people"}):
        response = client.get("/search", params=params)
        assert response.status_code == 200 and "Type what you are looking for, or drop an image here." in response.text


def test_an_empty_store_says_so(client_for, empty):
    client = client_for(empty)
    response = client.get("/search", params={"q": "a dog"})
    assert response.status_code == 200 and "This store holds no images yet. Ingest a folder: clipstore ingest FOLDER" in response.text
    info = client.get("/info", headers=JSON).json()
    assert (info["images"], info["prompts"]) == (0, 0)


# --- one image: details and describe ------------------------------------------------------------------------------


def test_an_image_s_details(client, world):
    hit = world.search_text("a purple hexagon", k=1)[0]
    record = world.image(hit.id)
    assert client.get(f"/image/{hit.id}", headers=JSON).json() == record.to_dict()
    html = client.get(f"/image/{hit.id}").text
    for shown in (hit.path, f"{record.width} × {record.height} px", "PNG", record.prompt, "(png-parameters)"):
        assert shown in html
    assert f'src="/image/{hit.id}/preview"' in html and f'hx-get="/image/{hit.id}/describe"' in html
    rotated = world.search(image=str(Path(world.path).parent / "photos" / "rotated.jpg"), k=1)[0]
    assert "none carried" in client.get(f"/image/{rotated.id}").text
    assert client.get(f"/image/{'0' * 64}").status_code == 404


def test_describe_lists_the_ensemble_s_prompts_and_says_there_is_no_head(client, world):
    hit = world.search_text("a red circle", k=1)[0]
    response = client.get(f"/image/{hit.id}/describe", params={"top": 3}, headers=JSON)
    assert response.status_code == 200
    data = response.json()
    expected = world.describe(hit.path, top=3)
    assert [p["text"] for p in data["prompts"]] == [p.text for p in expected.prompts] and len(data["prompts"]) == 3
    assert data["method"] == "model_b" and data["head"] is None
    html = client.get(f"/image/{hit.id}/describe", params={"top": 3}).text
    assert all(p.text in html for p in expected.prompts)
    assert "Model B alone" in html and "No trained Model A in this store" in html


def test_describe_in_a_store_without_prompts_says_what_to_do(client_for, plain):
    client = client_for(plain)
    hit = plain.search_text("a pattern", k=1)[0]
    response = client.get(f"/image/{hit.id}/describe")
    assert response.status_code == 409
    assert "The prompt bank is empty and no Model A is trained" in response.text
    assert "0 prompts: add some with clipstore prompts add FILE" in client.get("/info").text


@pytest.mark.slow  # trains a short head (a few seconds)
def test_describe_with_a_trained_head_names_it(client_for, world_copy):
    report = world_copy.train(epochs=2, freeze_vision=True, views=1, patience=1)
    client = client_for(world_copy)
    hit = world_copy.search_text("a red circle", k=1)[0]
    data = client.get(f"/image/{hit.id}/describe", headers=JSON).json()
    assert data["head"] == report.head_id and data["method"] in ("ensemble", "model_a", "model_b")
    html = client.get(f"/image/{hit.id}/describe").text
    if data["method"] == "ensemble":
        assert f"Ensemble of Model A (head {report.head_id[:12]}" in html
    assert "No trained Model A" not in html
    info = client.get("/info", headers=JSON).json()
    assert [head["id"] for head in info["heads"]] == [report.head_id]


# --- the store --------------------------------------------------------------------------------------------------


def test_store_info(client, world):
    data = client.get("/info", headers=JSON).json()
    expected = world.info().to_dict()
    assert {key: data[key] for key in expected} == expected
    assert data["heads"] == [] and data["allow_ingest"] is False and data["roots"] == []
    html = client.get("/info").text
    for shown in (f">{world.count_images()}<", world.model.spec, f"{world.count_prompts()} prompts", "none trained", "read-only"):
        assert shown in html


def test_unknown_routes_and_methods_are_4xx(client):
    assert client.get("/nothing-here").status_code == 404
    assert client.get("/upload").status_code == 405
    assert client.post("/search").status_code == 405
    assert "Nothing here: /nothing-here" in client.get("/nothing-here").text


def test_names_and_prompts_are_shown_as_text_never_as_markup(client_for, tmp_path):
    import clipstore
    from image_factory import pattern_image, write_image

    name = '"><img src=x onerror=alert(1)>\n<b>x'  # a file name may hold all of this (but no slash)
    write_image(tmp_path / "odd" / f"{name}.png", pattern_image(3))
    (tmp_path / "odd" / f"{name}.txt").write_text("<script>alert(2)</script> & <b>bold</b>")  # its caption
    store = clipstore.connect(tmp_path / "odd.clipstore", model="clipstore-mini")
    report = store.ingest(tmp_path / "odd")
    assert report.added == 1 and report.prompts_found == 1
    client = client_for(store)
    hit = store.search_text("a pattern", k=1)[0]
    pages = [client.get("/search", params={"q": "a pattern"}).text, client.get(f"/image/{hit.id}").text]
    pages.append(client.get(f"/image/{hit.id}/describe").text)
    for page in pages:
        assert "<img src=x" not in page and "<b>" not in page and "<script>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0] and "&lt;script&gt;alert(2)&lt;/script&gt;" in pages[1] + pages[2]
    original = client.get(f"/image/{hit.id}/file")
    assert original.status_code == 200
    disposition = original.headers["content-disposition"]
    assert disposition.startswith('inline; filename="') and disposition.count('"') == 2 and "\n" not in disposition


def test_the_page_opens_even_when_its_search_cannot_run(client):
    page = client.get("/", params={"like": "f" * 64})
    assert page.status_code == 200 and "This store has no image with id" in page.text and 'id="q"' in page.text
