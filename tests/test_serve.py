"""The similarity-search web server: the JSON API (good and bad input, uploads, CSV), and
the page end to end in headless Chromium against `ssl-hpc serve` started for real."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import REPO, drawn_png, skip_or_fail

from ssl_hpc.embed import EmbedOptions, embed_survey, load
from ssl_hpc.export.sources import ExportInputError
from ssl_hpc.search.searcher import Searcher, survey_of

CHROMIUM = os.environ.get("SSL_HPC_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def served(small_survey, tmp_path_factory):
    from test_embed import make_checkpoint

    root = tmp_path_factory.mktemp("serve")
    ckpt = make_checkpoint(root / "encoder.pt", seed=0)
    embed_survey(ckpt, small_survey, root / "emb", EmbedOptions(batch_size=128))
    survey = survey_of(load(root / "emb"), None)
    image = survey.images(np.array([7]))[0]  # row 7: its object id is written beside it
    fits.PrimaryHDU(image).writeto(root / "cutout.fits")
    (root / "cutout.id").write_text(str(survey.column("object_id")[7]))
    return root


TOKEN = "a-test-token-of-32-characters-00"


@pytest.fixture(scope="module")
def app(served):
    from ssl_hpc.serve.app import create_app
    from ssl_hpc.serve.state import ServeState

    es = load(served / "emb")
    state = ServeState(Searcher(es, survey_of(es, None)), log=lambda *_: None)
    return create_app(state, token=TOKEN, max_upload_bytes=200_000)


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"token {TOKEN}"}) as c:
        yield c


@pytest.mark.parametrize(
    "options, message",
    [
        (["--token", "short"], "token: at least 16 characters"),
        (["--token", "a" * 20, "--no-token"], "token and no_token: give one or the other"),
    ],
)
def test_serve_token_options_are_checked(served, capsys, options, message):
    from jobs.cli import main

    assert main(["serve", "--embeddings", str(served / "emb"), *options]) == 2
    assert message in capsys.readouterr().err


def test_serve_names_a_port_that_is_taken_and_prints_no_url(served, capsys):
    from jobs.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--embeddings", str(served / "emb"), "--port", str(port)]) == 2
    printed = capsys.readouterr()
    assert f"port {port} on 127.0.0.1: cannot listen there" in printed.err
    assert "serving" not in printed.out and "Traceback" not in printed.err


def test_every_endpoint_refuses_requests_without_the_token(app, served):
    """A shared login node: 127.0.0.1 is reachable by every user, so the token guards the
    page, the API, images, CSV and the docs; ?token= once sets the cookie for the rest."""
    from fastapi.testclient import TestClient

    from ssl_hpc.serve.app import token_cookie

    upload = {"file": ("c.fits", (served / "cutout.fits").read_bytes())}
    gets = [
        "/",
        "/api/info",
        "/api/search?object_id=5",
        "/api/search.csv?object_id=5",
        "/api/image/5.png",
        "/api/random",
        "/api/anomalous",
        "/docs",
        "/openapi.json",
    ]
    with TestClient(app) as stranger:
        for path in gets:
            r = stranger.get(path)
            assert r.status_code == 403 and "needs its token" in r.json()["detail"], path
            assert stranger.get(path, headers={"Authorization": "token wrong"}).status_code == 403
        assert stranger.post("/api/upload", files=upload).status_code == 403
        assert stranger.get("/api/info", params={"token": TOKEN[:-1]}).status_code == 403
        assert not stranger.cookies
    with TestClient(app) as browser:
        first = browser.get("/", params={"token": TOKEN})
        assert first.status_code == 200 and "<html" in first.text.lower()
        set_cookie = first.headers["set-cookie"]
        assert set_cookie.startswith(token_cookie(TOKEN) + "=")
        assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
        for path in gets:  # the page's own requests carry only the cookie
            assert browser.get(path).status_code == 200, path
        assert browser.post("/api/upload", files=upload).status_code == 200
    assert token_cookie(TOKEN) != token_cookie(TOKEN + "x")  # one cookie per server


def test_search_pages_and_csv(client):
    info = client.get("/api/info").json()
    assert info["objects"] == 384 and info["index"] == "exact" and info["has_trust"]
    first = client.get("/api/search", params={"object_id": 5, "k": 4}).json()
    assert first["query"]["object_id"] == 5 and first["pages"] == 96  # 383 others, 4 a page
    last = client.get("/api/search", params={"object_id": 5, "k": 4, "page": 96}).json()
    assert [r["rank"] for r in last["results"]] == [381, 382, 383]  # the partial last page


def test_the_last_page_is_cut_at_the_deepest_rank_served(client, monkeypatch):
    """With results served to rank 10, pages of 4 are 1-4, 5-8 and 9-10: the count rounds
    up and the third page is cut, not refused; a fourth starts past the limit."""
    import ssl_hpc.serve.app as serve_app

    monkeypatch.setattr(serve_app, "MAX_RANK", 10)
    first = client.get("/api/search", params={"object_id": 5, "k": 4}).json()
    assert first["pages"] == 3
    third = client.get("/api/search", params={"object_id": 5, "k": 4, "page": 3}).json()
    assert [r["rank"] for r in third["results"]] == [9, 10]
    beyond = client.get("/api/search", params={"object_id": 5, "k": 4, "page": 4})
    assert beyond.status_code == 400 and "reaches rank 16 > 10" in beyond.json()["detail"]
    assert [r["rank"] for r in first["results"]] == [1, 2, 3, 4]
    sims = [r["similarity"] for r in first["results"]]
    assert sims == sorted(sims, reverse=True)
    assert all(0 <= r["trust"] <= 1 and r["image"].endswith(".png") for r in first["results"])
    second = client.get("/api/search", params={"object_id": 5, "k": 4, "page": 2}).json()
    assert [r["rank"] for r in second["results"]] == [5, 6, 7, 8]
    assert second["results"][0]["similarity"] <= sims[-1]
    csv = client.get("/api/search.csv", params={"object_id": 5, "k": 4})
    assert csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    lines = csv.text.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("rank,object_id,similarity")
    assert lines[1].split(",")[1] == str(first["results"][0]["object_id"])
    png = client.get("/api/image/5.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # by position: the object itself is the query
    q = first["query"]
    by_pos = client.get("/api/search", params={"ra": q["ra"], "dec": q["dec"], "k": 4}).json()
    assert by_pos["query"]["object_id"] == 5 and by_pos["results"] == first["results"]
    anomalous = client.get("/api/anomalous", params={"rank": 1}).json()
    assert anomalous["rank"] == 1 and anomalous["anomaly_score"] > 0
    assert client.get("/api/random").json()["object_id"] >= 0
    paths = client.get("/openapi.json").json()["paths"]  # the documented API
    assert {"/api/search", "/api/search.csv", "/api/upload", "/api/info"} <= set(paths)


def test_scores_from_a_report_directory(served, tmp_path):
    """--report: trust and anomaly scores are read from ssl-hpc report's files, by id."""
    from ssl_hpc.serve.state import ServeState

    es = load(served / "emb")
    searcher = Searcher(es, survey_of(es, None))
    ids = searcher.catalogue.columns["object_id"]
    trust = np.linspace(0, 1, len(ids))
    zeros = np.zeros(len(ids))
    np.savez(
        tmp_path / "trust.npz",
        object_id=ids,
        trust=trust,
        label_distance=zeros,
        density_ratio=zeros,
        labelled=zeros.astype(bool),
    )
    order = np.arange(len(ids))[::-1]  # ranked list, most anomalous first
    lines = ["rank,object_id,score,score_galaxy_knn,score_galaxy_gmm"]
    lines += [f"{r + 1},{ids[i]},{1000 - r},{1000 - r},0" for r, i in enumerate(order)]
    (tmp_path / "anomalies.csv").write_text("\n".join(lines) + "\n")
    state = ServeState(searcher, tmp_path)
    np.testing.assert_array_equal(state.trust, trust)
    assert state.anomalous[0] == len(ids) - 1  # the last row ranked first
    assert state.anomaly[len(ids) - 1] == 1000
    # a report that misses objects (they would get whatever memory held: 1e-310, or
    # garbage that outranked real scores), one of another set, and no report at all
    (tmp_path / "anomalies.csv").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ExportInputError, match="2 objects, the embedding set has 384"):
        ServeState(searcher, tmp_path)
    lines[1] = lines[1].replace(f",{ids[order[0]]},", ",900005,", 1)
    (tmp_path / "anomalies.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ExportInputError, match="object_id 900005 is not in the embedding set"):
        ServeState(searcher, tmp_path)
    with pytest.raises(ExportInputError, match="missing; is .* an ssl-hpc report directory"):
        ServeState(searcher, tmp_path / "nope")


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/api/search?object_id=abc", 422, "object_id: Input should be a valid integer"),
        ("/api/search?object_id=1e9", 422, "object_id"),
        ("/api/search?object_id=-3", 404, "object_id -3 not in the embedding set"),
        ("/api/search?object_id=99999999", 404, "object_id 99999999 not in the embedding set"),
        ("/api/search?object_id=5&k=100000", 422, "k: Input should be less than or equal to 100"),
        ("/api/search?object_id=5&k=100&page=11", 400, "reaches rank 1100 > 1000"),
        ("/api/search?object_id=5&ra=1&dec=2", 400, "not both"),
        ("/api/search?ra=10", 400, "both ra and dec"),
        ("/api/search?ra=400&dec=0", 422, "ra: Input should be less than 360"),
        ("/api/search?ra=10&dec=0", 404, "no object within 3.0 arcsec"),
        ("/api/image/..%2F..%2Fetc%2Fpasswd.png", 404, ""),
        ("/api/image/../../etc/passwd", 404, ""),
        ("/api/image/%2Fetc%2Fpasswd.png", 404, ""),
        ("/api/anomalous?rank=0", 422, "rank"),
    ],
)
def test_bad_requests_get_clear_errors_and_no_traces(client, url, status, message):
    r = client.get(url)
    assert r.status_code == status
    body = r.json()
    assert message in body["detail"]
    assert "Traceback" not in r.text and "/tmp" not in r.text and str(REPO) not in r.text


def test_uploads(client, served):
    data = (served / "cutout.fits").read_bytes()
    oid = int((served / "cutout.id").read_text())
    r = client.post("/api/upload", params={"k": 3}, files={"file": ("cutout.fits", data)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["image"].startswith("data:image/png;base64,")
    assert body["query"]["label"] == "uploaded cutout.fits"
    assert body["results"][0]["object_id"] == oid and body["results"][0]["similarity"] > 0.9999
    # too big: refused before parsing (413), with the limit named
    big = client.post("/api/upload", files={"file": ("big.fits", b"\0" * 400_000)})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    # not FITS, and a path-like name that is never opened
    bad = client.post("/api/upload", files={"file": ("../../etc/passwd", b"hello")})
    assert bad.status_code == 400 and "FITS" in bad.json()["detail"]
    assert "/tmp" not in bad.text and "etc/passwd" not in bad.json()["detail"].replace(
        "passwd:", ""
    )
    empty = client.post("/api/upload", files={"file": ("e.fits", b"")})
    assert empty.status_code == 400 and empty.json()["detail"] == "empty upload"
    three = _fits_bytes(np.zeros((3, 48, 48), np.float32))
    wrong = client.post("/api/upload", files={"file": ("three.fits", three)})
    assert wrong.status_code == 400 and "5 bands" in wrong.json()["detail"]


def _fits_bytes(cube: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    fits.PrimaryHDU(cube).writeto(buf)
    return buf.getvalue()


def test_bounded_load_on_loopback(client):
    """A short loop of mixed requests: every one answered with what was asked for, the
    same as a direct search (timings are the benchmark's)."""
    for i in range(60):
        oid = 1 + i * 6 % 384  # ids run 1..384
        r = client.get("/api/search", params={"object_id": oid, "k": 12})
        assert r.status_code == 200
        results = r.json()["results"]
        assert len(results) == 12 and all(x["object_id"] != oid for x in results)
        sims = [x["similarity"] for x in results]
        assert sims == sorted(sims, reverse=True)
        png = client.get(f"/api/image/{oid}.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n")


def test_uploads_and_slow_requests_stay_bounded(served):
    """A shared login node: uploads beyond the cap get 503 while one is embedding (and
    other requests are still answered), and a request that hangs gets 504."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from ssl_hpc.serve.app import create_app
    from ssl_hpc.serve.state import ServeState

    es = load(served / "emb")
    searcher = Searcher(es, survey_of(es, None))
    state = ServeState(searcher, log=lambda *_: None)
    entered, release = threading.Event(), threading.Event()

    def held(call):  # `call`, once `release` is set (`entered` says it is waiting)
        def wait_then_call(*args, **kwargs):
            entered.set()
            release.wait(60)
            return call(*args, **kwargs)

        return wait_then_call

    searcher.by_fits = held(searcher.by_fits)
    upload = {"file": ("c.fits", (served / "cutout.fits").read_bytes())}
    auth = {"Authorization": f"token {TOKEN}"}
    app = create_app(state, token=TOKEN, max_uploads=1)
    with TestClient(app, headers=auth) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, "/api/upload", files=upload)
        assert entered.wait(60)
        second = c.post("/api/upload", files=upload)
        assert second.status_code == 503 and "at most 1 at once" in second.json()["detail"]
        assert second.headers["Retry-After"] == "1"  # come back in a second
        assert c.get("/api/search", params={"object_id": 5}).status_code == 200  # not blocked
        release.set()
        assert first.result(60).status_code == 200
        assert c.post("/api/upload", files=upload).status_code == 200  # the slot is free again
    release.clear()
    searcher.table = held(searcher.table)
    # TestClient hands back an answer only once the app's handler thread has ended: the hung
    # request is let go after 2 s, and the answer must still be the 504 of 0.5 s
    unhang = threading.Timer(2.0, release.set)
    with TestClient(create_app(state, token=TOKEN, request_timeout_s=0.5), headers=auth) as c:
        unhang.start()
        slow = c.get("/api/search", params={"object_id": 5})
        assert slow.status_code == 504 and "no answer within 0.5 s" in slow.json()["detail"]
    unhang.join()


def test_image_cache_is_bounded_in_bytes():
    from ssl_hpc.utils.byte_cache import ByteLRU

    cache = ByteLRU(100)
    made = []

    def make(key, size):
        return lambda: made.append(key) or bytes(size)

    for key in range(5):
        assert cache.get(key, make(key, 30)) == bytes(30)
    assert len(cache) == 3 and cache.bytes == 90  # the two oldest went
    cache.get(2, make(2, 30))  # a hit: nothing made, 2 becomes the newest
    assert made == [0, 1, 2, 3, 4]
    cache.get(5, make(5, 30))  # evicts 3, the least recently used
    cache.get(3, make(3, 30))
    assert made[-2:] == [5, 3] and cache.bytes <= 100
    assert cache.get(9, make(9, 500)) == bytes(500) and 9 not in cache._entries  # too big


# -- the page in a real browser ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served):
    """`ssl-hpc serve` as a user starts it: the URL it prints carries its random token."""
    port = _free_port()
    exe = Path(sys.executable).with_name("ssl-hpc")
    cmd = [str(exe), "serve", "--embeddings", str(served / "emb"), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    printed = []
    while not (printed and printed[-1].startswith("serving")):  # after the start-up log
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"ssl-hpc serve exited: {''.join(printed)}")
        printed.append(line)
    url = printed[-1].split(" on ")[-1].strip()  # "serving N galaxies on http://...?token=..."
    assert url.startswith(f"http://127.0.0.1:{port}/?token="), printed
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"ssl-hpc serve exited: {proc.stdout.read()}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("ssl-hpc serve did not start in 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_page_in_headless_chromium(server, served, tmp_path):
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    shots = REPO / "runs" / "test-artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)  # the printed URL, token and all; then its cookie
        expect(page.locator("#info")).to_contain_text("384 galaxies")
        # search by id
        page.fill("#q", "5")
        page.click("#go")
        cards = page.locator("#grid .card")
        expect(cards).to_have_count(12)
        expect(page.locator("#query")).to_contain_text("object 5")
        expect(page.locator("#query img")).to_have_js_property("complete", True)
        page.wait_for_function(
            "Array.from(document.querySelectorAll('#grid img')).every(i => i.naturalWidth > 0)"
        )
        page.screenshot(path=str(shots / "serve-search.png"), full_page=True)
        # click through to the first neighbour: it becomes the query
        neighbour = cards.first.get_attribute("data-object-id")
        cards.first.click()
        expect(page.locator("#query")).to_contain_text(f"object {neighbour}")
        expect(page.locator("#q")).to_have_value(neighbour)
        # next page, and the CSV link follows it
        page.click("#next")
        expect(page.locator("#pageinfo")).to_contain_text("page 2")
        expect(page.locator("#grid .card").first).to_contain_text("#13")
        assert "page=2" in page.locator("#csv").get_attribute("href")
        # upload a FITS cutout of a survey object: it finds that object first
        oid = (served / "cutout.id").read_text()
        page.set_input_files("#upload", str(served / "cutout.fits"))
        expect(page.locator("#query")).to_contain_text("uploaded cutout.fits")
        expect(page.locator("#grid .card").first).to_have_attribute("data-object-id", oid)
        # an unknown id: a message, no results lost
        page.fill("#q", "424242")
        page.click("#go")
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error")).to_contain_text("object_id 424242 not in the embedding set")
        page.screenshot(path=str(shots / "serve-error.png"), full_page=True)
        stranger = browser.new_context().new_page()  # another user: no token, no cookie
        assert stranger.goto(server.split("?")[0]).status == 403
        browser.close()
    drawn_png(shots / "serve-search.png")  # the page with its image grid, not a blank tab
    print(f"screenshots: {shots}")
