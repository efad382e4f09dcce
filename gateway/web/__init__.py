"""The two web pages (`[web]`): one for the sender whose mail was deferred, one for the
administrator who rescues misjudged servers. Served by the gateway process itself, on its
running event loop, with aiohttp; HTML from Jinja2 templates that escape by default.

    app.py        the aiohttp application: routes, security headers, start/stop on web.listen
    sender.py     GET /: what a temporary refusal is (English, Japanese), one address looked up
    lookup.py     what the gateway knows about one address, in a sender's words (no I/O of its own)
    admin.py      /admin: rescue list, penalty box, recent decisions, dynamic entries, changes
    auth.py       the admin token, login sessions and their CSRF tokens
    ratelimit.py  token buckets per requesting address (lookups, logins)
    recent.py     the ring of recent decision lines the observer feeds
    render.py     the template environment and its filters (times, durations, two languages)

Nothing here decides mail: lookups read through the Decider in dry-run fashion (they
never write the store), and changes go through gateway/entries.py like the CLI's.
"""
