"""The admin panel: pages a field engineer opens in a browser at ``/admin``.

Server-rendered HTML (:mod:`.pages`) with one small script and one stylesheet (``static/``), shipped inside the
package: no CDN, no build step, nothing for the Yocto recipe to compile, a few kilobytes per page. The pages hold
only the frame; the script fills them from the same ``/v2`` admin API that scripts use and refreshes them live,
and every action is a call of that API (with the session's CSRF token). No inline script or style, so the
Content-Security-Policy allows only this origin's files.
"""
