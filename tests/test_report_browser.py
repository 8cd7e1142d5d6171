"""The report as a person sees it: opened in headless Chromium with no network, hovered, sorted, shot.

The screenshots are kept in tests/artifacts/ (report.png, report-dark.png) for a person to look at.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from hilas.search.present.report import write_report
from hilas.search.results.fronts import read_fronts

from .pages import parse

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed here (on Debian: "
                                                         "apt-get install chromium); the report is not opened")


def chromium(profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with every network request refused, its console written to stderr."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9",
                           "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
                           *args, url], capture_output=True, text=True, timeout=120, check=True)


def console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(finished_runs, tmp_path_factory) -> tuple[Path, str]:
    """The report of a finished run, and the key of a front point on its first device."""
    run = finished_runs[0]
    path = write_report(run, tmp_path_factory.mktemp("report") / "report.html")
    device, front = next(iter(read_fronts(run).items()))
    return path, f"{device}/{next(p for p in front.points if p is not front.baseline).candidate}"


def test_the_report_renders_without_errors_and_is_screenshotted(report, tmp_path):
    path, key = report
    opened = chromium(tmp_path / "profile", f"{path.as_uri()}#{key}", "--dump-dom")
    page = parse(opened.stdout)
    body = page.find_all("body")[0]
    marks = page.find_all("path", "mark")
    assert body.attrs["data-rendered"] == "ok" and body.attrs["data-marks"] == str(len(marks)) and marks
    assert "hidden" in page.by_id("errors").attrs and not page.by_id("errors").text
    assert console(opened.stderr) == []
    tooltip = page.by_id("tooltip")  # the link to one candidate opened its numbers
    assert "hidden" not in tooltip.attrs and f"candidate {key.split('/')[1]}\n" in tooltip.text
    ARTIFACTS.mkdir(exist_ok=True)
    for name, scheme in (("report.png", []), ("report-dark.png", ["--force-dark-mode"])):
        chromium(tmp_path / "profile", f"{path.as_uri()}#{key}", "--hide-scrollbars", "--window-size=1280,1600",
                 f"--screenshot={ARTIFACTS / name}", *scheme)
    light, dark = imread(ARTIFACTS / "report.png"), imread(ARTIFACTS / "report-dark.png")
    assert light.shape[:2] == dark.shape[:2] == (1600, 1280)
    assert light[4, 4, :3].min() > 0.95 and dark[4, 4, :3].max() < 0.15  # the page follows the colour scheme


def test_hovering_a_point_shows_its_numbers_and_headers_sort_the_table(report, tmp_path):
    path, key = report
    probe = f"""<script>
    (function () {{
      var mark = document.querySelector('svg .mark[data-key="{key}"]');
      mark.dispatchEvent(new MouseEvent("mouseenter"));
      var tip = document.getElementById("tooltip");
      document.body.setAttribute("data-test-tip", tip.hidden ? "" : tip.textContent);
      document.body.setAttribute("data-test-row", document.querySelector('tr[data-key="{key}"]').className);
      mark.dispatchEvent(new MouseEvent("mouseleave"));
      document.body.setAttribute("data-test-hidden", String(tip.hidden));
      var table = document.querySelector("table.sortable");
      var button = Array.prototype.find.call(table.querySelectorAll("th button"),
                                             function (b) {{ return b.textContent === "median ms"; }});
      function order() {{
        return Array.prototype.map.call(table.tBodies[0].rows, function (r) {{ return r.dataset.key; }}).join(" ");
      }}
      button.click();
      document.body.setAttribute("data-test-ascending", order());
      button.click();
      document.body.setAttribute("data-test-descending", order());
    }})();
    </script></body>"""
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text().replace("</body>", probe))
    opened = chromium(tmp_path / "profile", probed.as_uri(), "--dump-dom")
    body = parse(opened.stdout).find_all("body")[0]
    assert body.attrs["data-rendered"] == "ok" and console(opened.stderr) == []
    mark = next(m for m in parse(path.read_text()).find_all("path", "mark") if m.attrs["data-key"] == key)
    assert body.attrs["data-test-tip"] == mark.attrs["data-tip"] and body.attrs["data-test-row"] == "hl"
    assert body.attrs["data-test-hidden"] == "true"
    table = parse(path.read_text()).find_all("table", "sortable")[0]
    column = [th.text for th in table.find_all("th")].index("median ms")
    medians = {r.attrs["data-key"]: float(r.find_all("td")[column].attrs["data-sort"]) for r in table.find_all("tr")
               if "data-key" in r.attrs}
    assert body.attrs["data-test-ascending"].split() == sorted(medians, key=medians.get)
    assert body.attrs["data-test-descending"].split() == sorted(medians, key=medians.get, reverse=True)


def test_a_script_error_is_reported_in_the_page_and_the_console(report, tmp_path):
    """The checks above can fail: a broken script is seen by both."""
    path, _ = report
    broken = tmp_path / "broken.html"
    broken.write_text(path.read_text().replace("</body>", "<script>null.x;</script></body>"))
    opened = chromium(tmp_path / "profile", broken.as_uri(), "--dump-dom")
    page = parse(opened.stdout)
    assert page.find_all("body")[0].attrs["data-rendered"] == "error"
    assert "TypeError" in page.by_id("errors").text
    assert any("Uncaught TypeError" in line for line in console(opened.stderr))
