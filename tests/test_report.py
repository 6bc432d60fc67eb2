"""report.html from a real build: every plot and the gallery present, self-contained (no reference outside the
file), random-weight rows called out only when there are some, and rendered by a real headless Chromium to a
non-blank screenshot of the expected size with every image decoded and no request leaving the page.

Chromium runs behind a proxy on a local socket, so nothing it sends leaves the machine. Chromium itself talks to
Google services in the background whatever the flags (component updates, sign-in), so the proxy alone cannot tell
the page's requests apart; the page's own requests are read from the DevTools protocol (over a pipe, no port), and a
control page that does reference an http URL proves both the DevTools check and the proxy see such a request.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_build
from PIL import Image
from test_stats import mixed_build

from jobs import cli
from pipeline.report import plots as report_plots
from schemas import layout

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = (1280, 2400)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ("summary", "duration", "resolution", "codecs", "scenes", "rejects", "qa", "hours", "lengths",
            "reject-table", "curriculum", "gallery")


@pytest.fixture(scope="module")
def mixed(annotated_build, tmp_path_factory):
    return mixed_build(annotated_build, tmp_path_factory)[0]


@pytest.fixture(scope="module")
def html(mixed) -> str:
    return (mixed / layout.REPORT_HTML).read_text(encoding="utf-8")


def data_images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_has_every_plot_and_the_gallery(html, mixed):
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in html, anchor
    images = data_images(html)
    plots, thumbs = html.count('class="plot"'), html.count('class="thumb"')
    assert plots == 8 and thumbs == 4 * 4 and len(images) == plots + thumbs  # 4 sharded videos, 4 frames each
    for png in images:
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
    # gallery: every sharded video with its summary caption, timestamped clip captions and a timestamped QA
    videos = json.loads((mixed / layout.STATS_SUMMARY).read_text())["accepted"]
    assert html.count('class="card"') == videos == 4
    assert html.count("<span class=\"k\">Summary</span>") == 4
    assert len(re.findall(r"\[\d+\.\d s – \d+\.\d s\]", html)) >= 4 * 2
    assert html.count("QA · temporal_grounding (open)") == 4
    # the curriculum table lists every stage and task of the mixtures
    assert all(f"<td>stage{i}</td>" in html for i in range(1, 5))


@pytest.mark.parametrize("durations", [[75.0, 90.0, 180.0], [5.0, 5.04, 6.0, 12.0], [42.0], [1.0, 3600.0]])
def test_duration_histogram_bins_hold_every_video(durations):
    values = np.array(durations)
    counts, _ = np.histogram(values, report_plots.log_bins(values, 30))
    assert counts.sum() == len(durations)


def test_report_is_self_contained(html):
    # no scheme-relative or absolute URL anywhere, no script, no stylesheet or font fetched from elsewhere
    assert not re.search(r"https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.IGNORECASE)
    refs = re.findall(r'(?:src|href|action|poster)\s*=\s*"([^"]*)"', html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs), [r[:40] for r in refs if
                                                                                 not r.startswith("data:")]
    for forbidden in ("<script", "<link", "<iframe", "<object", "@import", "url("):
        assert forbidden not in html.lower(), forbidden


def test_random_weight_rows_are_marked(html):
    assert "RANDOM-WEIGHT MODELS." in html and "do not train on them" in html
    assert "the HiCo tokens of stage2" in html
    # model-made captions carry the badge in the gallery, and so does template QA built from them
    assert html.count('class="badge"') >= 4 * 2
    assert "13 of 13 captions" in html
    assert re.search(r"\b(\d+) of \1 QA pairs", html)  # every QA pair descends from the random model's captions


def test_report_without_model_rows_or_mixtures(annotated_build, tmp_path, capsys):
    """An ingest-only build: no annotations, no tokens, no mixtures, no stats stage — no random-weight warning."""
    out = copy_build(annotated_build, tmp_path / "out")
    for folder in ("annotations", "hico", "work/annotate", "work/hico"):
        shutil.rmtree(out / folder)
    assert cli.main(["report", str(out), "--set", "report.gallery_videos=1"]) == 0
    assert str(out / layout.REPORT_HTML) in capsys.readouterr().out
    page = (out / layout.REPORT_HTML).read_text(encoding="utf-8")
    assert "RANDOM-WEIGHT" not in page and 'class="badge"' not in page
    assert "Mixtures not built: run the <code>mix</code> stage." in page
    assert "The `stats` stage has not run on this build" in page
    assert page.count('class="card"') == 1 and "no captions" in page and "no QA" in page
    assert len(data_images(page)) == 8 + 4


def test_report_of_a_missing_build_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 1
    assert "manifest/videos.parquet is missing" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# A real browser


class TrapProxy:
    """A local socket posing as Chromium's proxy: records what each connection asks for, answers nothing."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1"))
                except OSError:
                    self.requests.append("")

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def proxy():
    trap = TrapProxy()
    yield trap
    trap.close()


def chromium_command(profile: Path, proxy_port: int, *extra: str) -> list[str]:
    profile.mkdir()
    return [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>", *extra]


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class DevTools:
    """Chrome DevTools protocol over --remote-debugging-pipe (fd 3: commands in, fd 4: replies out, NUL-framed)."""

    def __init__(self, command: list[str]):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends move above 9 first, so that putting them on fds 3 and 4 cannot overwrite one another
        to_chrome_r, from_chrome_w = (_above_nine(fd) for fd in (to_chrome_r, from_chrome_w))
        # bash (dash takes single-digit fds only) puts the pipe ends on the fds Chromium expects, then becomes it
        shell = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.proc = subprocess.Popen(["bash", "-c", shell, *command, "--remote-debugging-pipe", "about:blank"],
                                     pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("no DevTools message from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read_message(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def load_page(command: list[str], page: Path) -> tuple[list[str], dict]:
    """(every URL the page requested, image/height facts measured in the page) once it has loaded."""
    tools = DevTools(command)
    try:
        target = next(t for t in tools.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = tools.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        tools.call("Network.enable", session=session)
        tools.call("Page.enable", session=session)
        tools.call("Page.navigate", {"url": page.as_uri()}, session=session)
        tools.wait_event("Page.loadEventFired")
        time.sleep(0.5)  # anything the loaded page would still fetch
        expression = ("JSON.stringify({images: document.images.length, decoded: [...document.images].filter("
                      "i => i.complete && i.naturalWidth > 0).length, height: document.body.scrollHeight})")
        facts = json.loads(tools.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                      session=session)["result"]["value"])
        tools.call("Network.disable", session=session)
        urls = [e["params"]["request"]["url"] for e in tools.events
                if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]
        return urls, facts
    finally:
        tools.close()


def needs_chromium():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: run scripts/install_chromium.sh as root (apt-get install chromium) to "
                    "render the report in a real browser")


def test_report_renders_in_headless_chromium_without_network(mixed, html, tmp_path, proxy):
    needs_chromium()
    report = mixed / layout.REPORT_HTML
    shot = tmp_path / "report.png"
    done = subprocess.run(chromium_command(tmp_path / "profile-shot", proxy.port, f"--screenshot={shot}",
                                           report.as_uri()), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == WINDOW
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 500  # plots, text and video frames, not a blank page
        white = sum(n for n, c in colours if min(c) >= 250)
        assert white / (WINDOW[0] * WINDOW[1]) < 0.97
        top = rgb.crop((0, 0, WINDOW[0], 300))
        warning_red = (0xb3, 0x26, 0x1e)  # the random-weight warning's border and badge
        assert any(n > 100 and max(abs(a - b) for a, b in zip(c, warning_red)) <= 4
                   for n, c in top.getcolors(maxcolors=1 << 20))

    urls, facts = load_page(chromium_command(tmp_path / "profile-page", proxy.port), report)
    assert urls[0] == report.as_uri()
    leaving = [u for u in urls if not u.startswith(("data:", "file:", "about:"))]
    assert leaving == []
    assert facts["images"] == len(data_images(html)) == facts["decoded"]
    assert facts["height"] > WINDOW[1]


def test_the_request_check_sees_a_page_that_reaches_out(tmp_path, proxy):
    """The control: the same browser set-up on a page referencing an http URL reports that request."""
    needs_chromium()
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><img src="http://longvid-leak.invalid/pixel.png">'
                    "</body></html>", encoding="utf-8")
    urls, _ = load_page(chromium_command(tmp_path / "profile", proxy.port), page)
    assert "http://longvid-leak.invalid/pixel.png" in urls
    deadline = time.monotonic() + 10
    while not any("longvid-leak.invalid" in r for r in proxy.requests) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("longvid-leak.invalid" in r for r in proxy.requests), proxy.requests
