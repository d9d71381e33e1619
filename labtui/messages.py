"""Messages of the console: what the widgets tell the app. Named as things that happened.

Engine events do not travel as messages: labtui.training collects them and the app applies them
on its redraw timer, many at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class RunSelected(Message):
    """The user moved the run queue's cursor to another run."""

    run_id: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunSelected)
