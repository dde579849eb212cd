"""`make check-book` (scripts/check_book.py): the censoring stamp of image grids, the static link and image checks,
the browser pass on a tiny site, and the book's script de-duplication (book/_ext/dedupe_assets.py)."""
import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from erasure_lib.plotting import image_grid, read_stamp, stamp_png

ROOT = Path(__file__).resolve().parents[1]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check_book = _load("check_book", ROOT / "scripts" / "check_book.py")
dedupe = _load("dedupe_assets", ROOT / "book" / "_ext" / "dedupe_assets.py")


def _png(stamp=None, size=(6, 4)):
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return stamp_png(buf.getvalue(), stamp) if stamp is not None else buf.getvalue()


def test_stamp_is_a_standard_png_text_chunk():
    stamp = {"kind": "image_grid", "profile": "sd14", "sensitive": True, "censored": True, "flagged": 2, "cells": 4}
    data = _png(stamp)
    assert read_stamp(data) == stamp and read_stamp(_png()) is None
    image = Image.open(io.BytesIO(data))               # PIL, an independent reader, sees the chunk and the pixels
    image.load()
    assert json.loads(image.text["erasure-book"]) == stamp
    assert np.asarray(image)[0, 0].tolist() == [200, 10, 10]
    with pytest.raises(ValueError, match="PNG"):
        read_stamp(b"GIF89a")


def test_image_grid_records_what_it_censored():
    scenes = np.zeros((2, 8, 8, 3), np.uint8)
    fig = image_grid(scenes, 1, 2, profile="sd14", sensitive=True, detector=lambda x: np.array([True, False]))
    assert fig._erasure_book_stamp == {"kind": "image_grid", "profile": "sd14", "sensitive": True, "censored": True,
                                       "flagged": 1, "cells": 2}
    fig = image_grid(scenes, 1, 2)
    assert fig._erasure_book_stamp["censored"] is False and fig._erasure_book_stamp["profile"] == "toy"


def test_image_problem_rules(tmp_path):
    def problem(stamp, profiles=frozenset()):
        path = tmp_path / "x.png"
        path.write_bytes(_png(stamp))
        return check_book.image_problem(path, set(profiles))

    grid = {"kind": "image_grid", "cells": 4, "flagged": 0}
    assert problem(None) is None                                                   # a plot
    assert problem({**grid, "profile": "toy", "sensitive": True, "censored": False}) is None
    assert problem({**grid, "profile": "sd14", "sensitive": True, "censored": True}) is None
    assert "uncensored" in problem({**grid, "profile": "sd14", "sensitive": True, "censored": False})
    # a grid that forgot its profile, on a page executed with profile = "sd14"
    assert "sd14" in problem({**grid, "profile": "toy", "sensitive": True, "censored": False}, {"sd14"})
    assert problem({**grid, "profile": "toy", "sensitive": False, "censored": False}, {"sd14"}) is None
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert "PNG" in check_book.image_problem(tmp_path / "bad.png", set())


def _site(root: Path, sensitive_uncensored=False):
    (root / "_images").mkdir(parents=True)
    (root / "_images" / "ok.png").write_bytes(_png())
    stamp = {"kind": "image_grid", "profile": "sd14", "sensitive": True, "censored": not sensitive_uncensored,
             "flagged": 1, "cells": 1}
    (root / "_images" / "grid.png").write_bytes(_png(stamp))
    (root / "index.html").write_text('<html><head><meta http-equiv="refresh" content="0; url=a.html"></head></html>')
    (root / "a.html").write_text(
        '<html><body><h1 id="top">A</h1><a href="b.html#sec">ok</a><a href="b.html#nope">bad anchor</a>'
        '<a href="missing.html">bad file</a><a href="https://example.org">external</a><a href="#top">self</a>'
        '<img src="_images/ok.png"><img src="_images/gone.png"><img src="_images/grid.png"></body></html>')
    (root / "b.html").write_text('<html><body><section id="sec"><p>B</p></section>'
                                 '<div class="cell tag_parameters"><pre># the profile (profile = "toy" by default)\n'
                                 '<span class="n">profile</span> = <span class="s2">"sd14"</span>\n'
                                 'steps = 2  # profile = "other" is not assigned here</pre></div></body></html>')


def test_static_check_finds_broken_links_missing_images_and_uncensored_grids(tmp_path):
    _site(tmp_path, sensitive_uncensored=True)
    pages, problems = check_book.static_check(tmp_path)
    assert {p.path.name for p in pages} == {"index.html", "a.html", "b.html"}
    assert next(p for p in pages if p.path.name == "b.html").profiles == {"sd14"}
    text = "\n".join(problems)
    assert "#nope" in text and "missing.html" in text and "gone.png" in text and "uncensored" in text
    assert "b.html#sec" not in text and "example.org" not in text and "#top" not in text
    assert len(problems) == 4
    clean = tmp_path / "clean"
    _site(clean)
    for p in ("a.html",):
        html = (clean / p).read_text().replace('<a href="b.html#nope">bad anchor</a>', "")
        html = html.replace('<a href="missing.html">bad file</a>', "").replace('<img src="_images/gone.png">', "")
        (clean / p).write_text(html)
    assert check_book.static_check(clean)[1] == []


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None or importlib.util.find_spec("playwright") is None,
                    reason="needs Chromium and Playwright (make check-book installs them)")
def test_browser_pass_sees_broken_images_and_script_errors(tmp_path):
    site = tmp_path / "site"
    _site(site)
    (site / "c.html").write_text('<html><body><img src="_images/ok.png"><script>undefinedCall();</script>'
                                 '</body></html>')
    pages, _ = check_book.static_check(site)
    records, problems = check_book.browser_check(site, pages, tmp_path / "shots", CHROMIUM, progress=False)
    text = "\n".join(problems)
    assert "a.html: images that did not load" in text and "gone.png" in text
    assert "c.html: JavaScript errors" in text and "undefinedCall" in text
    assert not any(p.startswith("b.html") for p in problems)
    assert {r["page"] for r in records} == {"a.html", "b.html", "c.html"}          # not the redirect page
    shot = Image.open(tmp_path / "shots" / "b.png")
    assert shot.size[0] == 1280


def test_dedupe_writes_each_script_once():
    class JS(str):
        def __new__(cls, filename, **attributes):
            obj = super().__new__(cls, filename or "")
            obj.filename, obj.attributes = filename, attributes
            return obj

    written = []
    context = {"js_tag": lambda js: written.append(js) or f"<script {js.filename}>"}
    dedupe._dedupe(None, "page", "page.html", context, None)
    scripts = [JS(None, body="const A = 1"), JS("x.js"), JS("", body="const A = 1"), JS("x.js"),
               JS("x.js", **{"async": "async"})]
    out = [context["js_tag"](s) for s in scripts]
    assert [bool(o) for o in out] == [True, True, False, False, True]
    assert len(written) == 3


def test_links_leaving_the_book_queries_and_void_tags(tmp_path):
    site = tmp_path / "html"
    site.mkdir()
    (tmp_path / "README.md").write_text("outside")
    (site / "a.html").write_text('<html><body><h1 id="t">A</h1><a href="a.html?x=1#t">query</a>'
                                 '<a href="../README.md">outside</a>'
                                 '<div class="cell tag_parameters"><pre>seed = 0<br>n = 1</pre></div>'
                                 '<p>later text: profile = "sd14"</p></body></html>')
    pages, problems = check_book.static_check(site)
    assert len(problems) == 1 and "leaves the book" in problems[0]
    assert pages[0].profiles == set()                   # the <br> did not keep the parameters cell open
    stamp = {"kind": "image_grid", "profile": "sd14", "sensitive": True, "censored": False, "flagged": 1, "cells": 1}
    import base64
    (site / "a.html").write_text('<html><body><img src="data:image/png;base64,'
                                 + base64.b64encode(_png(stamp)).decode() + '"></body></html>')
    assert "inline image" in check_book.static_check(site)[1][0]


def test_notebooks_draw_generated_images_only_through_image_grid():
    """The stamp that check-book reads is written by erasure_lib.plotting.image_grid: a notebook that showed images
    another way would escape the censoring check."""
    import re
    forbidden = re.compile(r"\.imshow\(|plt\.imsave|Image\.fromarray|display\(\s*Image\(|\.show_images\(")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                assert not forbidden.search(source), f"{path.name}: {forbidden.search(source).group(0)}"
