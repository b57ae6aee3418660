"""The read-only web viewer for reviewers, served under ``/ui/`` by the API's listener.

* ``app``     the ``/ui`` routes: pages, static files, sign-in, and the data the pages read
              (the API's own routes, called with the signed-in reviewer's token)
* ``signin``  authorization code + PKCE state, and the browser sessions (token kept here)
* ``static``  the pages, their script and style, asciinema-player (Apache-2.0, vendored)
"""
