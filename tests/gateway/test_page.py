"""The page's routes over real HTTP: the files it loads, what it may not reach, its settings.
(What the page does in a browser is tests/e2e/test_browser.py.)"""

from __future__ import annotations

import re

import aiohttp
import pytest

import streamer
from streamer.config import load_config
from streamer.errors import ConfigError


async def test_the_page_and_every_file_it_loads_are_served_with_their_types(gateway):
    server = await gateway(workers=1, pool="inline")
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/")) as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["Cache-Control"] == "no-cache"
        loaded = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        assert sorted(loaded) == ["/static/app.js", "/static/style.css"]
        # app.js imports the other modules; sources.js loads the AudioWorklet's module, which
        # the browser refuses unless it is served as JavaScript.
        files = {"/static/style.css": "text/css", "/static/app.js": "javascript",
                 "/static/capture-worklet.js": "javascript"}
        async with http.get(server.make_url("/static/app.js")) as r:
            for module in re.findall(r'from "\./([a-z-]+\.js)"', await r.text()):
                files[f"/static/{module}"] = "javascript"
        assert len(files) == 7
        for path, kind in files.items():
            async with http.get(server.make_url(path)) as r:
                assert r.status == 200 and kind in r.content_type, (path, r.content_type)


@pytest.mark.parametrize("path", ["/static/nothing.js", "/static/.hidden",
                                  "/static/..%2fpage.py", "/static/../page.py", "/static/",
                                  "/static/pool/base.py"])
async def test_nothing_outside_the_shipped_files_is_served(gateway, path):
    server = await gateway(workers=1, pool="inline")
    async with aiohttp.ClientSession() as http, \
            http.get(server.make_url(path), allow_redirects=False) as r:
        assert r.status == 404, path
        assert "import" not in await r.text()


async def test_page_config_names_the_model_and_fills_the_trace_link_template(gateway):
    plain = await gateway(workers=1, pool="inline")
    linked = await gateway(workers=1, pool="inline", model__name="features",
                           server__trace_ui_url="https://traces.example/t/{trace_id}?x=1")
    async with aiohttp.ClientSession() as http:
        async with http.get(plain.make_url("/page-config.json")) as r:
            assert await r.json() == {"model": "counter", "version": streamer.__version__,
                                      "trace_ui_url": None}
        async with http.get(linked.make_url("/page-config.json")) as r:
            body = await r.json()
            assert body["model"] == "features"
            assert body["trace_ui_url"] == "https://traces.example/t/{trace_id}?x=1"


@pytest.mark.parametrize("url", ["https://traces.example/t/", "javascript:alert('{trace_id}')",
                                 "traces.example/{trace_id}"])
def test_a_trace_link_template_must_be_http_with_a_place_for_the_id(url):
    with pytest.raises(ConfigError, match="server.trace_ui_url must be an http"):
        load_config(env={}, overrides={"server.trace_ui_url": url})
