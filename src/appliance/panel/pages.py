"""The panel's HTML: the frame of each page, filled in by ``static/panel.js`` from the ``/v2`` API."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

PAGES = (
    ("overview", "Overview", "/admin"),
    ("models", "Models", "/admin/models"),
    ("routes", "Routes", "/admin/routes"),
    ("timeline", "Timeline", "/admin/timeline"),
    ("logs", "Logs", "/admin/logs"),
    ("settings", "Settings and keys", "/admin/settings"),
    ("support", "Support", "/admin/support"),
)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks: the key's name and role ("admin" may act; others see the panel read-only), and the session's
    CSRF token ("" with auth off: there is no session and nothing to forge)."""

    name: str
    role: str
    csrf: str

    @property
    def may_act(self) -> bool:
        return self.role == "admin"


def _frame(title: str, active: str, viewer: Viewer | None, body: str, role: str | None = None) -> str:
    """A page: ``role`` is what the script may offer; by default the viewer's (admin with auth off, no viewer)."""
    current = ' aria-current="page"'
    nav = "".join(f'<a href="{href}"{current if key == active else ""}>{label}</a>' for key, label, href in PAGES)
    who = ""
    if viewer is not None and viewer.name:
        mode = "" if viewer.may_act else " (read only)"
        who = (
            f'<form method="post" action="/admin/logout" class="who"><span>{escape(viewer.name)}: '
            f"{escape(viewer.role)}{mode}</span>"
            f'<input type="hidden" name="csrf" value="{escape(viewer.csrf)}">'
            '<button type="submit">Log out</button></form>'
        )
    if role is None:
        role = viewer.role if viewer is not None else "admin"
    role = escape(role)
    csrf = escape(viewer.csrf) if viewer is not None else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{csrf}">'
        f"<title>{escape(title)} · ML Inference Appliance</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/admin/static/panel.css">'
        '<script src="/admin/static/panel.js" defer></script></head>'
        f'<body data-page="{escape(active)}" data-role="{role}">'
        f'<header><strong>ML Inference Appliance</strong><nav aria-label="Pages">{nav}</nav>{who}</header>'
        f'<main id="main"><h1>{escape(title)}</h1>'
        '<p id="status" role="status" aria-live="polite"></p>'
        f"{body}</main></body></html>\n"
    )


def overview(viewer: Viewer | None) -> str:
    tiles = "".join(
        f'<section class="tile" aria-labelledby="t-{key}"><h2 id="t-{key}">{label}</h2>'
        f'<p class="value" data-field="{key}">…</p></section>'
        for key, label in (
            ("health", "Service"),
            ("models", "Models ready"),
            ("request_rate", "Requests / s"),
            ("p99_ms", "p99 latency (ms)"),
            ("error_rate", "Errors / s"),
            ("gpu_load", "GPU load"),
            ("temperature_c", "Hottest zone (°C)"),
            ("board_power_w", "Board power (W)"),
            ("memory", "Memory used"),
            ("power_mode", "Power mode"),
            ("uptime", "Up for"),
            ("version", "Version"),
            ("slot", "Boot slot"),
        )
    )
    charts = (
        '<section class="charts"><h2>Last hour</h2>'
        '<figure><figcaption>Requests / s</figcaption><svg data-chart="request_rate" role="img" '
        'aria-label="Requests per second, last hour"></svg></figure>'
        '<figure><figcaption>p99 latency (ms)</figcaption><svg data-chart="p99_ms" role="img" '
        'aria-label="p99 latency, last hour"></svg></figure>'
        '<figure><figcaption>GPU load</figcaption><svg data-chart="gpu_load" role="img" '
        'aria-label="GPU load, last hour"></svg></figure></section>'
    )
    units = (
        '<section aria-labelledby="h-units"><h2 id="h-units">Units</h2>'
        '<p id="units-error" class="error" hidden></p>'
        '<table id="units"><caption>The appliance\'s systemd units: state, since when, restarts, memory</caption>'
        '<thead><tr><th scope="col">Unit</th><th scope="col">State</th><th scope="col">Since</th>'
        '<th scope="col">Restarts</th><th scope="col">Memory</th><th scope="col">What</th></tr></thead>'
        "<tbody></tbody></table></section>"
    )
    return _frame("Overview", "overview", viewer, f'<div class="tiles">{tiles}</div>{charts}{units}')


def models(viewer: Viewer | None) -> str:
    table = (
        '<table id="models"><caption>Every model and version in the repository</caption><thead><tr>'
        '<th scope="col">Model</th><th scope="col">Version</th><th scope="col">State</th>'
        '<th scope="col">Why</th><th scope="col">Backend</th><th scope="col">Instances</th>'
        '<th scope="col">Inferences</th><th scope="col">Mean batch</th><th scope="col">Cache hits</th>'
        '<th scope="col">Actions</th></tr></thead><tbody></tbody></table>'
    )
    engines = (
        '<section aria-labelledby="h-engines"><h2 id="h-engines">TensorRT engines</h2>'
        '<p id="engines-device"></p>'
        '<table id="engines"><caption>Each engine\'s manifest, checked against its files and this device</caption>'
        '<thead><tr><th scope="col">Model</th><th scope="col">Version</th><th scope="col">Precision</th>'
        '<th scope="col">Built for</th><th scope="col">Built</th><th scope="col">Served on</th>'
        '<th scope="col">Check</th></tr></thead><tbody></tbody></table></section>'
    )
    return _frame("Models", "models", viewer, table + engines)


def routes(viewer: Viewer | None) -> str:
    body = (
        '<p class="hint">A/B splits, shadows and canaries declared through <code>/v2/routes</code>: each arm\'s '
        "figures, the canary's decisions with the values they were measured on, and, for an admin, the weights "
        "and the canary's actions.</p>"
        '<div id="routes"><p>No route is declared.</p></div>'
    )
    return _frame("Routes", "routes", viewer, body)


def timeline(viewer: Viewer | None) -> str:
    body = (
        '<form class="filters" id="timeline-filter"><label for="tl-model">Model</label>'
        '<select id="tl-model"><option value="">all</option></select></form>'
        "<figure><figcaption>p99 latency (ms) and requests / s, with what happened</figcaption>"
        '<svg id="tl-chart" class="wide" role="img" aria-label="p99 latency and request rate with events"></svg>'
        "</figure>"
        '<table id="events"><caption>Loads, swaps, canary steps and rollbacks, autoscaler decisions, power mode '
        "changes, thermal throttling, the data partition and updates, newest first</caption><thead><tr>"
        '<th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Model</th><th scope="col">What</th>'
        "</tr></thead><tbody></tbody></table>"
    )
    return _frame("Timeline", "timeline", viewer, body)


def logs(viewer: Viewer | None) -> str:
    body = (
        '<form class="filters" id="log-filter">'
        '<label for="log-unit">Log of</label><select id="log-unit"><option value="">the service</option></select>'
        '<label for="log-level">Level</label><select id="log-level">'
        + "".join(f'<option value="{lv}">{lv.lower()}</option>' for lv in ("INFO", "WARNING", "ERROR", "DEBUG"))
        + '</select><label for="log-text">Containing (a model, a word)</label>'
        '<input id="log-text" type="search"></form>'
        '<pre id="log-lines" aria-live="off" tabindex="0"></pre>'
        '<p id="log-error" class="error" hidden></p>'
        "<p class=\"hint\">The service's own log lines, or a unit's journal (appliance.service's has the "
        "service's lines and anything else it wrote, such as a crash).</p>"
    )
    return _frame("Logs", "logs", viewer, body)


def settings(viewer: Viewer | None) -> str:
    body = (
        '<section aria-labelledby="h-keys"><h2 id="h-keys">API keys</h2>'
        '<table id="keys"><caption>Every key: its hash stays on the device, the key itself is shown once, when it '
        'is made</caption><thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Created'
        '</th><th scope="col">Expires</th><th scope="col">State</th><th scope="col">Actions</th></tr></thead>'
        "<tbody></tbody></table>"
        '<form id="key-create" class="filters"><label for="key-name">New key</label>'
        '<input id="key-name" pattern="[A-Za-z0-9_.\\-]{1,64}" required>'
        '<label for="key-role">role</label><select id="key-role"><option>infer</option><option>read</option>'
        '<option>admin</option></select><label for="key-expires">expires</label>'
        '<input id="key-expires" placeholder="90d" size="6"><button type="submit">Create</button></form>'
        '<p id="key-made" class="made" role="alert" hidden></p></section>'
        '<section aria-labelledby="h-audit"><h2 id="h-audit">Audit log</h2>'
        '<table id="audit"><caption>Admin actions and refused attempts, newest first</caption><thead><tr>'
        '<th scope="col">Time</th><th scope="col">Key</th><th scope="col">From</th><th scope="col">Action</th>'
        '<th scope="col">Target</th><th scope="col">Result</th></tr></thead><tbody></tbody></table></section>'
        '<section aria-labelledby="h-settings"><h2 id="h-settings">Effective settings</h2>'
        '<pre id="settings-json" tabindex="0"></pre></section>'
    )
    return _frame("Settings and keys", "settings", viewer, body)


def support(viewer: Viewer | None) -> str:
    body = (
        "<p>One archive to send on: the configuration (secrets removed), recent logs, metrics history, the "
        "timeline, the repository index, each model's configuration, the TensorRT engine manifests and the "
        "device's description.</p>"
        '<p><a class="button" id="bundle" href="/v2/support/bundle" download>Download the support bundle</a></p>'
        '<section aria-labelledby="h-update"><h2 id="h-update">Software update</h2>'
        '<p id="update-state">…</p>'
        '<form id="update-form" class="filters"><label for="update-file">Signed bundle (.swu)</label>'
        '<input id="update-file" type="file" accept=".swu" required><button type="submit">Verify and install</button>'
        "</form>"
        '<table id="update-history"><caption>Updates, newest first</caption><thead><tr><th scope="col">Time</th>'
        '<th scope="col">Outcome</th><th scope="col">Version</th><th scope="col">What</th></tr></thead>'
        "<tbody></tbody></table></section>"
    )
    return _frame("Support", "support", viewer, body)


def login(message: str = "") -> str:
    error = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    body = (
        f"{error}"
        '<form method="post" action="/admin/login" class="login">'
        '<label for="key">API key (admin, or read for a read-only panel)</label>'
        '<input id="key" name="key" type="password" autocomplete="off" required autofocus>'
        '<button type="submit">Log in</button></form>'
    )
    return _frame("Log in", "login", None, body, role="")
