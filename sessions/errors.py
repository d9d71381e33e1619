"""The one error the sessions layer raises for the user."""


class SessionError(Exception):
    """A missing, broken, locked or badly named session; the message is one line for the user."""
