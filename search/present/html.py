"""One self-contained HTML page: styles and the small script are inlined, nothing is fetched.

The script adds what a static page cannot do: hover (or keyboard focus) on a point shows its
numbers and highlights its table row, and a click on a column header sorts the table. When it has
run it marks the page `data-rendered="ok"`; a script error is written into the page itself, so a
headless browser's DOM shows both.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies. Dark mode swaps the blue
# for the palette's sky blue and the vermillion for its orange, which read better on a dark ground.
_CSS = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1b1b1b; --muted: #5f6368; --rule: #d9d9d9;
  --grid: #ececec; --panel: #f6f7f8; --hl: #fff3c4;
  --c0: #0072B2; --c1: #D55E00; --c2: #009E73; --c3: #CC79A7; --c4: #E69F00; --c5: #56B4E9; --c6: #000000;
  --cg: #a3a3a3; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #15171a; --fg: #e6e6e6; --muted: #a0a4a8; --rule: #3a3d42; --grid: #2a2d31; --panel: #1e2024;
    --hl: #4a4120; --c0: #56B4E9; --c1: #E69F00; --c2: #009E73; --c3: #CC79A7; --c4: #D55E00; --c5: #0072B2;
    --c6: #ffffff; --cg: #6b6f75; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 24px; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 1.5em; margin: 0 0 4px; } h2 { font-size: 1.25em; margin: 36px 0 6px; }
h3 { font-size: 1.02em; margin: 18px 0 6px; }
p.lead, .note, figcaption, .empty { color: var(--muted); }
.warning { border-left: 4px solid var(--c1); padding: 6px 10px; background: var(--panel); }
nav a { margin-right: 14px; color: var(--c0); }
section.device { border-top: 1px solid var(--rule); }
figure { margin: 8px 0; }
svg.chart { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--grid); stroke-width: 1; }
svg .frame { fill: none; stroke: var(--rule); }
svg text { fill: var(--fg); font-size: 12px; }
svg text.axis { font-size: 13px; font-weight: 600; }
svg .link { fill: none; stroke-width: 1.6; }
svg .whisker { stroke-width: 1.2; }
svg .mark { stroke: var(--bg); stroke-width: 0.8; cursor: pointer; }
svg .mark:focus, svg .mark.hl { stroke: var(--fg); stroke-width: 2; outline: none; }
.c0 { fill: var(--c0); stroke: var(--c0); } .c1 { fill: var(--c1); stroke: var(--c1); }
.c2 { fill: var(--c2); stroke: var(--c2); } .c3 { fill: var(--c3); stroke: var(--c3); }
.c4 { fill: var(--c4); stroke: var(--c4); } .c5 { fill: var(--c5); stroke: var(--c5); }
.c6 { fill: var(--c6); stroke: var(--c6); } .cg { fill: var(--cg); stroke: var(--cg); }
svg .series .link { fill: none; }
ul.legend { list-style: none; padding: 0; margin: 4px 0; display: flex; flex-wrap: wrap; gap: 4px 18px; }
ul.legend li { display: flex; align-items: center; gap: 4px; font-size: 13px; }
.columns { display: flex; flex-wrap: wrap; gap: 12px 36px; align-items: flex-start; }
.columns > div { flex: 1 1 320px; min-width: 0; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--rule); text-align: right; vertical-align: top; }
th { background: var(--panel); position: sticky; top: 0; white-space: nowrap; }
td.text, th.text { text-align: left; }
table.settings td:first-child { text-align: left; color: var(--muted); }
table.settings td { text-align: left; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th button::after { content: " \\2195"; color: var(--muted); }
th[aria-sort="ascending"] button::after { content: " \\2191"; }
th[aria-sort="descending"] button::after { content: " \\2193"; }
tr.hl td { background: var(--hl); }
.scroll { overflow-x: auto; }
caption { caption-side: bottom; text-align: left; padding-top: 4px; font-size: 12px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
#tooltip { position: absolute; z-index: 10; pointer-events: none; white-space: pre-line; max-width: 360px;
  background: var(--panel); color: var(--fg); border: 1px solid var(--rule); border-radius: 6px;
  padding: 6px 9px; font-size: 13px; box-shadow: 0 2px 8px rgba(0, 0, 0, .25); }
#errors { color: var(--c1); font-weight: 600; white-space: pre-line; }
footer { margin-top: 36px; color: var(--muted); font-size: 13px; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var errors = document.getElementById("errors");
  function fail(message) {
    errors.hidden = false;
    errors.textContent += "script error: " + message + "\\n";
    document.body.setAttribute("data-rendered", "error");
  }
  window.addEventListener("error", function (e) { fail(e.message); });
  try {
    var tip = document.getElementById("tooltip");
    var marks = document.querySelectorAll("svg .mark[data-tip]");
    function related(key) {
      return key ? document.querySelectorAll('[data-key="' + CSS.escape(key) + '"]') : [];
    }
    function show(mark) {
      tip.textContent = mark.getAttribute("data-tip");
      tip.hidden = false;
      var box = mark.getBoundingClientRect();
      var left = box.right + window.scrollX + 10;
      if (left + tip.offsetWidth > document.documentElement.clientWidth + window.scrollX) {
        left = box.left + window.scrollX - tip.offsetWidth - 10;
      }
      tip.style.left = Math.max(0, left) + "px";
      tip.style.top = (box.top + window.scrollY - 8) + "px";
      related(mark.getAttribute("data-key")).forEach(function (el) { el.classList.add("hl"); });
    }
    function hide(mark) {
      tip.hidden = true;
      related(mark.getAttribute("data-key")).forEach(function (el) { el.classList.remove("hl"); });
    }
    marks.forEach(function (mark) {
      mark.addEventListener("mouseenter", function () { show(mark); });
      mark.addEventListener("mouseleave", function () { hide(mark); });
      mark.addEventListener("focus", function () { show(mark); });
      mark.addEventListener("blur", function () { hide(mark); });
    });
    document.querySelectorAll("table.sortable").forEach(function (table) {
      var headers = table.querySelectorAll("thead th");
      headers.forEach(function (th, column) {
        var button = th.querySelector("button");
        if (!button) { return; }
        button.addEventListener("click", function () {
          var ascending = th.getAttribute("aria-sort") !== "ascending";
          headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
          var body = table.tBodies[0];
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = a.cells[column].getAttribute("data-sort"), y = b.cells[column].getAttribute("data-sort");
            var order = (x !== null && y !== null) ? parseFloat(x) - parseFloat(y)
              : a.cells[column].textContent.localeCompare(b.cells[column].textContent);
            return ascending ? order : -order;
          });
          rows.forEach(function (row) { body.appendChild(row); });
        });
      });
      table.querySelectorAll("tbody tr[data-key]").forEach(function (row) {
        var mark = document.querySelector('svg .mark[data-key="' + CSS.escape(row.getAttribute("data-key")) + '"]');
        if (!mark) { return; }
        row.addEventListener("mouseenter", function () { show(mark); });
        row.addEventListener("mouseleave", function () { hide(mark); });
      });
    });
    // report.html#KEY opens with that point's numbers shown (a link to one candidate).
    var wanted = decodeURIComponent(window.location.hash.slice(1));
    if (wanted) {
      var mark = document.querySelector('svg .mark[data-key="' + CSS.escape(wanted) + '"]');
      if (mark) { mark.scrollIntoView({block: "nearest"}); show(mark); }
    }
    document.body.setAttribute("data-marks", String(marks.length));
    if (document.body.getAttribute("data-rendered") !== "error") {
      document.body.setAttribute("data-rendered", "ok");
    }
  } catch (e) {
    fail(e && e.message ? e.message : String(e));
  }
})();
"""


@dataclass(frozen=True)
class Cell:
    """A table cell: what is shown, and the number it sorts by (None sorts by the text)."""

    text: str
    sort: float | None = None
    css: str = ""


def page(title: str, body: str) -> str:
    """A complete HTML document around `body`, with the styles, the tooltip and the script."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
            f'<body data-rendered="no">\n{body}\n'
            f'<div id="tooltip" role="tooltip" hidden></div><div id="errors" hidden></div>\n'
            f"<script>{_SCRIPT}</script>\n</body></html>\n")


def sortable_table(headers: list[str], rows: list[tuple[str, list[Cell]]], *, caption: str = "") -> str:
    """A table whose columns sort on a header click; a row's key links it to its point on the chart."""
    first = rows[0][1] if rows else []
    head = "".join(f'<th scope="col" class="{"text" if i < len(first) and "text" in first[i].css else ""}">'
                   f'<button type="button">{escape(h)}</button></th>' for i, h in enumerate(headers))
    body = []
    for key, cells in rows:
        tds = "".join(f'<td class="{escape(c.css)}"'
                      + (f' data-sort="{c.sort!r}"' if c.sort is not None else "")
                      + f">{escape(c.text)}</td>" for c in cells)
        body.append(f'<tr data-key="{escape(key)}">{tds}</tr>')
    cap = f"<caption class=\"note\">{escape(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table class="sortable">{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def settings_table(values: dict[str, object]) -> str:
    """Name/value pairs, e.g. measurement settings or a device's fingerprint."""
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td class=\"mono\">{escape(_plain(v))}</td></tr>"
                   for k, v in values.items())
    return f'<table class="settings"><tbody>{rows}</tbody></table>'


def _plain(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return str(value)
