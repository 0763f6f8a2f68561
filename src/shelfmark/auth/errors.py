from __future__ import annotations

from shelfmark.errors import Conflict


class UsernameTaken(Conflict):
    code = "username-taken"
    title = "User name already in use"
